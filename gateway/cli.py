"""The `sora-gateway` command."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from pathlib import Path

from gateway.config import ConfigError, load_config
from gateway.simulator.settings import KINDS as SIMULATOR_KINDS

DEMO_KEY = "sk-demo-sora-gateway-0000000000000000"
# The repository's config/demo.toml; in the container image it is copied to /etc/sora-gateway/examples.
DEMO_CONFIGS = (Path(__file__).resolve().parent.parent / "config" / "demo.toml",
                Path("/etc/sora-gateway/examples/demo.toml"))


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sora-gateway", description="OpenAI-compatible gateway for Sora-2 videos")
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("demo", help="run the gateway on the built-in simulated upstream")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("simulator", help="run the simulated upstream alone")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--kind", choices=list(SIMULATOR_KINDS), default="videos",
                   help="the dialect served: Sora's (videos, chat) or a provider's")
    p.add_argument("--family", choices=["a", "b", "c"], default="a")
    p.add_argument("--language", choices=["zh", "en"], default="zh")
    p.add_argument("--duration", type=float, default=8.0, help="seconds a job takes")
    p.add_argument("--slow", type=float, default=2.0,
                   help="seconds the sk-slow-… (every call) and sk-slowcreate-… (creates) keys wait")
    p.add_argument("--quote-key", action="store_true", help="echo the caller's key in every error and failed job")
    p.add_argument("--webhook-secret", default=os.environ.get("SIMULATOR_WEBHOOK_SECRET", ""),
                   help="what provider webhooks are signed with: whsec_… for replicate and gemini, any string for"
                        " openrouter (fal uses its own key, at /.well-known/jwks.json); default"
                        " $SIMULATOR_WEBHOOK_SECRET")
    p.set_defaults(func=cmd_simulator)

    p = sub.add_parser("check-config", help="validate a config and list every problem")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_check_config)

    keys = sub.add_parser("keys", help="create, list or revoke team keys stored in the database")
    keys_sub = keys.add_subparsers(metavar="ACTION")
    p = keys_sub.add_parser("create", help="print a new team key once; only its hash is stored")
    p.add_argument("--config", required=True)
    p.add_argument("--team", required=True)
    p.add_argument("--name", default="unnamed")
    p.add_argument("--expires", help="lifetime such as 30d, 12h or 90m (default: never)")
    p.set_defaults(func=cmd_keys_create)
    p = keys_sub.add_parser("list", help="list keys: id, team, name, created, last used — never the key")
    p.add_argument("--config", required=True)
    p.add_argument("--team")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_keys_list)
    p = keys_sub.add_parser("revoke", help="revoke a key by id; it stops working at once")
    p.add_argument("--config", required=True)
    p.add_argument("key_id")
    p.set_defaults(func=cmd_keys_revoke)

    p = sub.add_parser("usage", help="usage report from the ledger")
    p.add_argument("--config", required=True)
    p.add_argument("--team")
    p.add_argument("--since", help="YYYY-MM-DD, ISO 8601 time or epoch seconds (inclusive)")
    p.add_argument("--until", help="YYYY-MM-DD (that whole day included), ISO 8601 time or epoch seconds")
    p.add_argument("--group-by", choices=["day", "model", "key", "team"],
                   help="default: team without --team, day with it")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_usage)

    p = sub.add_parser("hash-key", help="print the sha256: entry to put in a team's keys for a key")
    p.add_argument("key", nargs="?", help="the key (read from standard input when omitted)")
    p.set_defaults(func=cmd_hash_key)
    return parser


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s)")
        for problem in exc.problems:
            print(f"  {problem}")
        return 1
    from gateway.upstreams.capabilities import model_problems

    if problems := model_problems(config):  # sizes or durations a provider kind would refuse with a 400
        print(f"{args.config}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(f"{args.config}: ok — {len(config.upstreams)} upstream(s), {len(config.models)} model(s),"
          f" {len(config.teams)} team(s)")
    return 0


def cmd_hash_key(args: argparse.Namespace) -> int:
    from gateway.core.auth import hash_key

    key = args.key if args.key is not None else sys.stdin.readline().strip()
    print(hash_key(key))
    return 0


def _with_database(args: argparse.Namespace, action):
    from gateway.backends.database import open_database

    config = load_config(args.config)

    async def run():
        db = await open_database(config.storage)
        try:
            return await action(config, db)
        finally:
            await db.close()

    return asyncio.run(run())


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def cmd_keys_create(args: argparse.Namespace) -> int:
    from gateway.core.errors import GatewayError
    from gateway.core.keys import create_key, parse_duration

    async def action(config, db):
        if config.team(args.team) is None:
            return _fail(f"no team named {args.team!r} in {args.config} (teams: "
                         f"{', '.join(t.name for t in config.teams) or 'none'})")
        try:
            lifetime = parse_duration(args.expires, "--expires") if args.expires else None
        except GatewayError as exc:
            return _fail(exc.message)
        key, record = await create_key(db, args.team, args.name, lifetime)
        print(key)
        print(f"id {record.id}, team {record.team}, name {record.name}"
              + (f", expires in {args.expires}" if args.expires else "")
              + " — store the key now: it is not shown again", file=sys.stderr)
        return 0

    return _with_database(args, action)


def cmd_keys_list(args: argparse.Namespace) -> int:
    import json

    from gateway.core.keys import key_view

    async def action(config, db):
        views = [key_view(r) for r in await db.list_keys(args.team)]
        if args.format == "json":
            print(json.dumps(views, indent=2))
            return 0
        print(f"{'id':<22}  {'team':<14}  {'name':<16}  {'status':<8}  {'created':<16}  last used")
        for v in views:
            print(f"{v['id']:<22}  {v['team']:<14}  {v['name']:<16}  {v['status']:<8}  "
                  f"{_when(v['created_at']):<16}  {_when(v['last_used_at'])}")
        return 0

    return _with_database(args, action)


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    async def action(config, db):
        if not await db.revoke_key(args.key_id):
            return _fail(f"no active key with id {args.key_id!r} (`sora-gateway keys list` shows them)")
        print(f"revoked {args.key_id}")
        return 0

    return _with_database(args, action)


def cmd_usage(args: argparse.Namespace) -> int:
    import json

    from gateway.core.errors import GatewayError
    from gateway.core.ledger import parse_time, to_csv, to_table, usage_report

    async def action(config, db):
        try:
            since = parse_time(args.since, "--since")
            until = parse_time(args.until, "--until", end=True)
        except GatewayError as exc:
            return _fail(exc.message)
        group = args.group_by or ("day" if args.team else "team")
        data, total = await usage_report(db, args.team, since, until, group, per_team=True)
        if args.format == "json":
            print(json.dumps({"object": "usage", "team": args.team, "group_by": group, "data": data,
                              "total": total}, indent=2))
        elif args.format == "csv":
            print(to_csv(data, group, per_team=True), end="")
        else:
            print(to_table(data, total, group, per_team=True))
        return 0

    return _with_database(args, action)


def _when(epoch: int | None) -> str:
    import datetime as dt

    if not epoch:
        return "never"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M")


LISTEN_BACKLOG = 16_384
SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


def backlog_note(path: Path = SOMAXCONN) -> str | None:
    """What to tell an operator when the kernel caps the listen backlog below the gateway's, else None."""
    try:
        cap = int(path.read_text())
    except (OSError, ValueError):
        return None  # not Linux, or not readable: nothing to say
    if cap >= LISTEN_BACKLOG:
        return None
    return (f"the listen backlog is {cap} connections, not {LISTEN_BACKLOG}: net.core.somaxconn caps it, and a"
            f" burst of more connects than that waits seconds for the kernel's retries; raise it with"
            f" sysctl -w net.core.somaxconn={LISTEN_BACKLOG} net.ipv4.tcp_max_syn_backlog={LISTEN_BACKLOG}"
            f" (README, Sizing)")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.observability.logs import configure_logging

    path = Path(args.config).resolve()
    config = load_config(path)  # fail fast, with every problem listed, before starting workers
    configure_logging(config)  # worker processes configure their own, in gateway.asgi
    if (note := backlog_note()) is not None:
        logging.getLogger("gateway").info(note)
    # An idle keep-alive connection is closed after 5 s; a request body that stalls is cut off by the app
    # (gateway.api.common.BODY_IDLE_TIMEOUT_S). Slow request headers are the reverse proxy's to bound.
    # A burst of connects beyond the listen backlog is reset by the kernel, so the backlog is sized for the
    # thousands of streams one process serves (the kernel caps it at net.core.somaxconn).
    options = dict(host=args.host, port=args.port, log_config=None, log_level=logging.getLogger().level,
                   access_log=False, proxy_headers=True, timeout_graceful_shutdown=5, timeout_keep_alive=5,
                   backlog=LISTEN_BACKLOG)
    if args.workers > 1:
        if not config.storage.redis:
            print("error: --workers above 1 needs storage.redis: quotas, single-flight and job leases must be"
                  " shared between the worker processes. Run one worker, or configure Redis (and PostgreSQL).",
                  file=sys.stderr)
            return 2
        os.environ["SORA_GATEWAY_CONFIG"] = str(path)
        uvicorn.run("gateway.asgi:app", workers=args.workers, **options)
        return 0
    from gateway.app import create_app
    from gateway.server import GatewayServer, tune_gc

    app = create_app(config)
    tune_gc()
    GatewayServer(uvicorn.Config(app, **options), app).run()
    return 0


def cmd_simulator(args: argparse.Namespace) -> int:
    from gateway.simulator.app import SimulatorSettings, run_simulator

    settings = SimulatorSettings(kind=args.kind, family=args.family, language=args.language,
                                 duration_s=args.duration, slow_s=args.slow,
                                 public_url=f"http://{args.host}:{args.port}", quote_key=args.quote_key,
                                 webhook_secret=args.webhook_secret)
    root = {"gemini": "/v1beta", "openrouter": "/api/v1", "fal": ""}.get(args.kind, "/v1")
    print(f"simulated {args.kind} upstream on http://{args.host}:{args.port}{root}", flush=True)
    run_simulator(args.host, args.port, settings)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    asyncio.run(_demo(args.host, args.port))
    return 0


async def _demo(host: str, port: int) -> None:
    import uvicorn

    from gateway.app import create_app
    from gateway.observability.logs import configure_logging
    from gateway.simulator.app import SimulatorSettings, create_simulator_app

    sim_port = _free_port(host)
    data = Path(tempfile.mkdtemp(prefix="sora-gateway-demo-"))
    env = {**os.environ, "DEMO_DATA": str(data), "DEMO_PUBLIC_URL": f"http://{host}:{port}",
           "DEMO_UPSTREAM_URL": f"http://{host}:{sim_port}/v1"}
    config = load_config(next((p for p in DEMO_CONFIGS if p.exists()), DEMO_CONFIGS[0]), env=env)
    configure_logging(config)
    simulator = create_simulator_app(SimulatorSettings(kind="videos", duration_s=8.0,
                                                       public_url=f"http://{host}:{sim_port}"))
    quiet = {"log_config": None, "log_level": "warning", "access_log": False}
    servers = [
        uvicorn.Server(uvicorn.Config(simulator, host=host, port=sim_port, **quiet)),
        uvicorn.Server(uvicorn.Config(create_app(config), host=host, port=port, **quiet)),
    ]
    print(_demo_banner(host, port, data), flush=True)
    await asyncio.gather(*(s.serve() for s in servers))


def _demo_banner(host: str, port: int, data: Path) -> str:
    base = f"http://{host}:{port}/v1"
    return f"""
sora-gateway demo — simulated Sora-2 upstream, nothing leaves this machine
  base_url : {base}
  team key : {DEMO_KEY}
  data     : {data}

Try it (streaming progress, then a link that plays in a browser):

  curl -N {base}/chat/completions \\
    -H "Authorization: Bearer {DEMO_KEY}" -H "Content-Type: application/json" \\
    -d '{{"model": "sora-2", "stream": true, "messages": [{{"role": "user", "content": "a red fox in snow"}}]}}'

python - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{base}", api_key="{DEMO_KEY}")
for chunk in client.chat.completions.create(
        model="sora-2", stream=True, stream_options={{"include_usage": True}},
        messages=[{{"role": "user", "content": "a red fox in snow"}}]):
    if chunk.choices:  # the last chunk carries only the usage
        print(chunk.choices[0].delta.content or "", end="", flush=True)
    else:
        print(f"\\n${{chunk.usage.model_extra['cost_usd']:.2f}}")
EOF

Ctrl-C stops it.
"""


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    raise SystemExit(main())

