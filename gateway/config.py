"""Loading and validating the gateway's TOML config into frozen, typed objects.

Every problem is reported with the dotted path of the key that is wrong, and all problems are
collected before giving up, so `sora-gateway check-config` can list them line by line.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UPSTREAM_KINDS = ("videos", "chat", "gemini", "openrouter", "fal", "replicate", "runway")
# The public API root of each provider kind, used when an upstream leaves out `base_url`.
DEFAULT_BASE_URLS = {
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
    "openrouter": "https://openrouter.ai/api/v1",
    "fal": "https://queue.fal.run",
    "replicate": "https://api.replicate.com/v1",
    "runway": "https://api.dev.runwayml.com/v1",
}
# The kinds whose provider can call back when a job ends, and how it signs the call: a shared secret for all but
# fal, which signs with ED25519 keys it publishes.
WEBHOOK_KINDS = ("gemini", "openrouter", "fal", "replicate")
FAL_JWKS_URL = "https://rest.fal.ai/.well-known/jwks.json"
STREAM_FORMATS = ("markdown", "zh", "reasoning")
CACHE_SCOPES = ("team", "global")
SERVE_MODES = ("proxy", "redirect")
THUMBNAIL_MODES = ("on_demand", "with_video")
VIDEO_STORE_SCHEMES = ("file://", "s3://", "gs://", "az://")
UI_TASK_MODES = ("answer", "generate")
QUOTA_KEYS = (
    "requests_per_minute",
    "concurrent_jobs",
    "videos_per_day",
    "video_seconds_per_month",
    "budget_usd_per_month",
)
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HASH_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
_SIZE_PATTERN = re.compile(r"^\d{2,5}x\d{2,5}$")


class ConfigError(Exception):
    """The config is unusable; `problems` holds one `key: what is wrong` line each."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source} is invalid:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    public_url: str = "http://127.0.0.1:8080"
    signing_secret: str = field(default="", repr=False)
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    max_body_bytes: int = 26_214_400
    max_prompt_chars: int = 32_000
    link_ttl_s: int = 86_400
    ping_interval_s: float = 15.0
    image_max_bytes: int = 20 * 1024 * 1024
    image_timeout_s: float = 10.0
    metrics_public: bool = False  # metrics name teams and key fingerprints: admin key unless opened up
    webhook_timeout_s: float = 10.0  # one delivery attempt
    webhook_retry_s: float = 5.0  # the first retry's delay; each later one doubles it (capped at an hour)
    webhook_retry_for_s: float = 86_400.0  # an event undelivered this long after it happened is given up
    log_level: str = "info"
    log_format: str = "auto"


@dataclass(frozen=True, slots=True)
class StorageConfig:
    database: str = "sqlite:///data/gateway.db"
    redis: str = ""
    redis_prefix: str = "sgw:"
    videos_dir: str = "data/videos"  # the older spelling of `videos = "file://…"`
    videos: str = ""  # file:///PATH, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix
    videos_endpoint: str = ""  # an S3-compatible server (MinIO, R2, …) instead of AWS
    serve: str = "proxy"  # "proxy": the gateway streams content; "redirect": a 302 to a signed URL of the store
    redirect_ttl_s: int = 300  # how long such a signed URL works
    thumbnails: str = "on_demand"  # "on_demand": fetched on its first request; "with_video": stored with the video

    @property
    def local_videos_dir(self) -> str | None:
        """The folder videos are kept in, or None when they are in an object store."""
        if not self.videos:
            return self.videos_dir
        if self.videos.startswith("file://"):
            return self.videos[len("file://"):]
        return None

    @property
    def sqlite_path(self) -> str | None:
        if self.database.startswith("sqlite:///"):
            return self.database[len("sqlite:///"):]
        if self.database == "sqlite://:memory:":
            return ":memory:"
        return None


@dataclass(frozen=True, slots=True)
class CacheConfig:
    enabled: bool = True
    ttl_s: int = 86_400
    scope: str = "team"


@dataclass(frozen=True, slots=True)
class ChatConfig:
    ui_tasks: str = "answer"  # answer a chat UI's housekeeping requests, or "generate" a video for them too
    progress_step: int = 10  # a progress line in text formats only when progress passes a multiple of this


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str
    kind: str
    base_url: str
    keys: tuple[str, ...] = field(repr=False)
    max_concurrent_per_key: int = 3
    poll_interval_s: float = 5.0
    timeout_s: float = 30.0
    job_timeout_s: float = 900.0
    max_retry_s: float = 30.0
    max_media_bytes: int = 1024 * 1024 * 1024  # chat relays: the largest video or thumbnail fetched from a link
    # A create whose answer was lost and whose job cannot be looked for upstream: "fail" the job (nothing is
    # sent twice) or "resubmit" it (the video is made, maybe paid twice; the ledger row says `resubmitted`).
    # "" is the kind's default: "resubmit" for videos, chat and replicate, "fail" for the other providers.
    on_ambiguous_create: str = ""
    # provider webhooks, a faster path beside polling: the secret the provider signs its callbacks with (gemini,
    # openrouter, replicate), or for fal `webhooks = true` and the key set its signatures are checked against
    webhook_secret: str = field(default="", repr=False)
    webhooks: bool = False
    webhook_jwks_url: str = ""

    @property
    def has_webhooks(self) -> bool:
        return bool(self.webhook_secret) or (self.kind == "fal" and self.webhooks)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    upstreams: tuple[str, ...]
    upstream_model: str
    size: str = "720x1280"
    seconds: int = 4
    sizes: tuple[str, ...] = ("720x1280", "1280x720")
    seconds_allowed: tuple[int, ...] = (4, 8, 12)
    price_per_second: float = 0.10
    stream_format: str = "markdown"
    upstream_model_image: str = ""  # the provider model for requests with an input image ("" = upstream_model's)
    upstream_params: Mapping[str, Any] = field(default_factory=dict, hash=False)  # merged into the provider input

    def price(self, seconds: int) -> float:
        return round(self.price_per_second * seconds, 6)


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    requests_per_minute: int | None = None
    concurrent_jobs: int | None = None
    videos_per_day: int | None = None
    video_seconds_per_month: int | None = None
    budget_usd_per_month: float | None = None


@dataclass(frozen=True, slots=True)
class TeamConfig:
    name: str
    keys: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    quotas: QuotaConfig = QuotaConfig()
    webhook_url: str = ""  # every finished job of the team is announced here
    webhook_secret: str = field(default="", repr=False)  # whsec_…: signs the team's deliveries

    def may_use(self, model: str) -> bool:
        return not self.models or model in self.models


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    storage: StorageConfig
    cache: CacheConfig
    upstreams: tuple[UpstreamConfig, ...]
    models: Mapping[str, ModelConfig]
    teams: tuple[TeamConfig, ...]
    source: str = "config"
    chat: ChatConfig = ChatConfig()

    def upstream(self, name: str) -> UpstreamConfig:
        return next(u for u in self.upstreams if u.name == name)

    def team(self, name: str) -> TeamConfig | None:
        return next((t for t in self.teams if t.name == name), None)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, substitute `${ENV}` and validate a config file. Raises ConfigError."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"file not found: {path}"], str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], str(path)) from None
    return parse_config(raw, env=os.environ if env is None else env, source=str(path))


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str] | None = None, source: str = "config") -> Config:
    reader = _Reader(env if env is not None else os.environ)
    config = reader.config(raw, source)
    if reader.problems:
        raise ConfigError(reader.problems, source)
    return config


class _Reader:
    """Walks the raw TOML tree, converting values and collecting every problem with its key path."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def substitute(self, key: str, value: Any) -> Any:
        if isinstance(value, str):
            def replace(match: re.Match[str]) -> str:
                name = match.group(1)
                if name not in self.env:
                    self.fail(key, f"environment variable {name} is not set")
                    return ""
                return self.env[name]

            return _ENV_PATTERN.sub(replace, value)
        if isinstance(value, list):
            return [self.substitute(f"{key}[{i}]", item) for i, item in enumerate(value)]
        return value

    def get(
        self,
        table: Mapping[str, Any],
        prefix: str,
        name: str,
        kind: type | tuple[type, ...],
        default: Any,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        key = f"{prefix}.{name}" if prefix else name
        if name not in table:
            return default
        value = self.substitute(key, table[name])
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool:
            self.fail(key, f"must be {_kind_name(kind)}, got {value!r}")
            return default
        if not isinstance(value, kind):
            self.fail(key, f"must be {_kind_name(kind)}, got {_show(value)}")
            return default
        if check is not None and (problem := check(value)) is not None:
            self.fail(key, problem)
            return default
        return value

    def string_list(self, table: Mapping[str, Any], prefix: str, name: str,
                    default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(table, prefix, name, list, None)
        if value is None:
            return default
        key = f"{prefix}.{name}"
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{key}[{i}]", f"must be a string, got {_show(item)}")
            else:
                out.append(item)
        return tuple(out)

    def unknown_keys(self, table: Mapping[str, Any], prefix: str, known: tuple[str, ...]) -> None:
        for name in table:
            if name not in known:
                where = f"{prefix}.{name}" if prefix else name
                self.fail(where, f"unknown key (known keys: {', '.join(known)})")

    def table(self, raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            self.fail(name, f"must be a table, got {_show(value)}")
            return {}
        return value

    def config(self, raw: Mapping[str, Any], source: str) -> Config:
        self.unknown_keys(raw, "", ("server", "storage", "cache", "chat", "upstreams", "models", "teams"))
        server = self.server(self.table(raw, "server"))
        storage = self.storage(self.table(raw, "storage"))
        cache = self.cache(self.table(raw, "cache"))
        upstreams = self.upstreams(raw.get("upstreams", []))
        models = self.models(self.table(raw, "models"), {u.name for u in upstreams})
        teams = self.teams(raw.get("teams", []), set(models))
        chat = self.chat(self.table(raw, "chat"))
        return Config(server, storage, cache, upstreams, models, teams, source, chat)

    def server(self, t: Mapping[str, Any]) -> ServerConfig:
        p = "server"
        d = ServerConfig()
        self.unknown_keys(t, p, tuple(ServerConfig.__dataclass_fields__))
        if "signing_secret" not in t:
            self.fail(f"{p}.signing_secret", "is required: it signs video links (use ${GATEWAY_SIGNING_SECRET})")
        admin = tuple(k for k in self.string_list(t, p, "admin_keys") if k)
        for i, k in enumerate(admin):
            if k.startswith("sha256:"):
                if not _HASH_PATTERN.match(k):
                    self.fail(f"{p}.admin_keys[{i}]", "a sha256: entry must be 64 lowercase hex digits")
            elif (problem := _guessable(k, "it opens every /admin endpoint")) is not None:
                self.fail(f"{p}.admin_keys[{i}]", problem)
        return ServerConfig(
            public_url=self.get(t, p, "public_url", str, d.public_url, _http_url).rstrip("/"),
            signing_secret=self.get(t, p, "signing_secret", str, d.signing_secret, _secret),
            admin_keys=admin,
            max_body_bytes=self.get(t, p, "max_body_bytes", int, d.max_body_bytes, _positive),
            max_prompt_chars=self.get(t, p, "max_prompt_chars", int, d.max_prompt_chars, _positive),
            link_ttl_s=self.get(t, p, "link_ttl_s", int, d.link_ttl_s, _positive),
            ping_interval_s=self.get(t, p, "ping_interval_s", float, d.ping_interval_s, _positive),
            image_max_bytes=self.get(t, p, "image_max_bytes", int, d.image_max_bytes, _positive),
            image_timeout_s=self.get(t, p, "image_timeout_s", float, d.image_timeout_s, _positive),
            metrics_public=self.get(t, p, "metrics_public", bool, d.metrics_public),
            webhook_timeout_s=self.get(t, p, "webhook_timeout_s", float, d.webhook_timeout_s, _positive),
            webhook_retry_s=self.get(t, p, "webhook_retry_s", float, d.webhook_retry_s, _positive),
            webhook_retry_for_s=self.get(t, p, "webhook_retry_for_s", float, d.webhook_retry_for_s, _positive),
            log_level=self.get(t, p, "log_level", str, d.log_level, _one_of("debug", "info", "warning", "error")),
            log_format=self.get(t, p, "log_format", str, d.log_format, _one_of("auto", "json", "text")),
        )

    def storage(self, t: Mapping[str, Any]) -> StorageConfig:
        p = "storage"
        d = StorageConfig()
        self.unknown_keys(t, p, tuple(StorageConfig.__dataclass_fields__))
        storage = StorageConfig(
            database=self.get(t, p, "database", str, d.database, _database_url),
            redis=self.get(t, p, "redis", str, d.redis, _redis_url),
            redis_prefix=self.get(t, p, "redis_prefix", str, d.redis_prefix, _non_empty),
            videos_dir=self.get(t, p, "videos_dir", str, d.videos_dir, _non_empty),
            videos=self.get(t, p, "videos", str, d.videos, _video_store_url),
            videos_endpoint=self.get(t, p, "videos_endpoint", str, d.videos_endpoint, _optional_http_url),
            serve=self.get(t, p, "serve", str, d.serve, _one_of(*SERVE_MODES)),
            redirect_ttl_s=self.get(t, p, "redirect_ttl_s", int, d.redirect_ttl_s, _signed_url_ttl),
            thumbnails=self.get(t, p, "thumbnails", str, d.thumbnails, _one_of(*THUMBNAIL_MODES)),
        )
        self.video_store(t, storage)
        return storage

    def video_store(self, t: Mapping[str, Any], storage: StorageConfig) -> None:
        p = "storage"
        if "videos" in t and "videos_dir" in t:
            self.fail(f"{p}.videos_dir", "set either storage.videos or its older spelling storage.videos_dir, not"
                                         " both")
        on_s3 = storage.videos.startswith("s3://")
        if storage.videos_endpoint and not on_s3:
            self.fail(f"{p}.videos_endpoint", "is only for an S3-compatible store: storage.videos must be an"
                                              " s3://bucket/prefix URL")
        if storage.serve == "redirect" and storage.local_videos_dir is not None:
            self.fail(f"{p}.serve", "'redirect' needs an object store in storage.videos (s3://, gs:// or az://):"
                                    " a local folder has no signed URLs, so its files can only be proxied")

    def cache(self, t: Mapping[str, Any]) -> CacheConfig:
        p = "cache"
        d = CacheConfig()
        self.unknown_keys(t, p, tuple(CacheConfig.__dataclass_fields__))
        return CacheConfig(
            enabled=self.get(t, p, "enabled", bool, d.enabled),
            ttl_s=self.get(t, p, "ttl_s", int, d.ttl_s, _positive),
            scope=self.get(t, p, "scope", str, d.scope, _one_of(*CACHE_SCOPES)),
        )

    def chat(self, t: Mapping[str, Any]) -> ChatConfig:
        p = "chat"
        d = ChatConfig()
        self.unknown_keys(t, p, tuple(ChatConfig.__dataclass_fields__))
        return ChatConfig(
            ui_tasks=self.get(t, p, "ui_tasks", str, d.ui_tasks, _one_of(*UI_TASK_MODES)),
            progress_step=self.get(t, p, "progress_step", int, d.progress_step, _percent_step),
        )

    def upstreams(self, raw: Any) -> tuple[UpstreamConfig, ...]:
        if not isinstance(raw, list) or not raw:
            self.fail("upstreams", "at least one [[upstreams]] table is required")
            return ()
        out: list[UpstreamConfig] = []
        seen: set[str] = set()
        for i, t in enumerate(raw):
            p = f"upstreams[{i}]"
            if not isinstance(t, dict):
                self.fail(p, "must be a table")
                continue
            self.unknown_keys(t, p, tuple(UpstreamConfig.__dataclass_fields__))
            name = self.get(t, p, "name", str, "", _non_empty)
            if "name" not in t:
                self.fail(f"{p}.name", "is required")
            if name in seen:
                self.fail(f"{p}.name", f"duplicate upstream name {name!r}")
            seen.add(name)
            kind = self.get(t, p, "kind", str, "videos", _one_of(*UPSTREAM_KINDS))
            if "base_url" not in t and kind not in DEFAULT_BASE_URLS:
                self.fail(f"{p}.base_url", "is required")
            keys = self.string_list(t, p, "keys")
            if not [k for k in keys if k]:
                self.fail(f"{p}.keys", "needs at least one non-empty key")
            d = UpstreamConfig(name="", kind="videos", base_url="", keys=())
            out.append(UpstreamConfig(
                name=name or f"upstream{i}",
                kind=kind,
                base_url=self.get(t, p, "base_url", str, DEFAULT_BASE_URLS.get(kind, ""), _http_url).rstrip("/"),
                keys=tuple(k for k in keys if k),
                max_concurrent_per_key=self.get(t, p, "max_concurrent_per_key", int, d.max_concurrent_per_key,
                                                _positive),
                poll_interval_s=self.get(t, p, "poll_interval_s", float, d.poll_interval_s, _positive),
                timeout_s=self.get(t, p, "timeout_s", float, d.timeout_s, _positive),
                job_timeout_s=self.get(t, p, "job_timeout_s", float, d.job_timeout_s, _positive),
                max_retry_s=self.get(t, p, "max_retry_s", float, d.max_retry_s, _positive),
                max_media_bytes=self.get(t, p, "max_media_bytes", int, d.max_media_bytes, _positive),
                on_ambiguous_create=self.get(t, p, "on_ambiguous_create", str, d.on_ambiguous_create,
                                             _one_of("", "fail", "resubmit")),
                **self.upstream_webhooks(t, p, kind),
            ))
        return tuple(out)

    def upstream_webhooks(self, t: Mapping[str, Any], p: str, kind: str) -> dict[str, Any]:
        """`webhook_secret`, `webhooks` and `webhook_jwks_url`: each only where the provider's callbacks use it."""
        secret = self.get(t, p, "webhook_secret", str, "")
        webhooks = self.get(t, p, "webhooks", bool, False)
        jwks_url = self.get(t, p, "webhook_jwks_url", str, "", _http_url)
        if kind not in WEBHOOK_KINDS:
            for name in ("webhook_secret", "webhooks", "webhook_jwks_url"):
                if name in t:
                    self.fail(f"{p}.{name}", f"kind {kind!r} has no provider webhooks (only "
                              f"{', '.join(WEBHOOK_KINDS)} do); remove it: jobs are polled")
            return {}
        if kind == "fal":
            if "webhook_secret" in t:
                self.fail(f"{p}.webhook_secret", "fal signs its callbacks with its published ED25519 keys, not a"
                          " shared secret: set webhooks = true instead (webhook_jwks_url names the key set)")
            if jwks_url and not webhooks:
                self.fail(f"{p}.webhook_jwks_url", "is only read with webhooks = true, which switches fal's"
                          " callbacks on")
            return {"webhooks": webhooks, "webhook_jwks_url": (jwks_url or FAL_JWKS_URL) if webhooks else ""}
        for name in ("webhooks", "webhook_jwks_url"):
            if name in t:
                self.fail(f"{p}.{name}", f"is for kind 'fal'; kind {kind!r} switches its callbacks on with"
                          " webhook_secret, the secret it signs them with")
        if "webhook_secret" in t and not secret:
            self.fail(f"{p}.webhook_secret", "is empty: set the provider's signing secret (e.g. from"
                      " ${PROVIDER_WEBHOOK_SECRET}) or remove the key")
        elif secret and kind in ("gemini", "replicate") and (problem := _webhook_secret(secret)) is not None:
            self.fail(f"{p}.webhook_secret", problem + f" ({kind} signs its callbacks the Standard Webhooks way)")
        elif secret and kind == "openrouter" and len(secret) < 16:
            self.fail(f"{p}.webhook_secret", "is too short for a signing secret: use the workspace's webhook"
                      " signing secret from OpenRouter's settings")
        return {"webhook_secret": secret}

    def models(self, raw: Mapping[str, Any], upstream_names: set[str]) -> dict[str, ModelConfig]:
        if not raw:
            self.fail("models", 'at least one [models."NAME"] table is required')
        out: dict[str, ModelConfig] = {}
        for alias, t in raw.items():
            p = f'models."{alias}"'
            if not isinstance(t, dict):
                self.fail(p, "must be a table")
                continue
            self.unknown_keys(t, p, tuple(f for f in ModelConfig.__dataclass_fields__ if f != "name"))
            ups = self.string_list(t, p, "upstreams")
            if not ups:
                self.fail(f"{p}.upstreams", "must name at least one upstream")
            for i, u in enumerate(ups):
                if u not in upstream_names:
                    known = ", ".join(sorted(upstream_names)) or "none defined"
                    self.fail(f"{p}.upstreams[{i}]", f"no upstream named {u!r} (known: {known})")
            d = ModelConfig(name=alias, upstreams=(), upstream_model=alias)
            sizes = self.string_list(t, p, "sizes", d.sizes)
            for i, s in enumerate(sizes):
                if not _SIZE_PATTERN.match(s):
                    self.fail(f"{p}.sizes[{i}]", f"must look like 720x1280, got {s!r}")
            seconds_allowed = self.int_list(t, p, "seconds_allowed", d.seconds_allowed)
            size = self.get(t, p, "size", str, sizes[0] if sizes else d.size)
            if sizes and size not in sizes:
                self.fail(f"{p}.size", f"{size!r} is not one of sizes {list(sizes)}")
            seconds = self.get(t, p, "seconds", int, seconds_allowed[0] if seconds_allowed else d.seconds, _positive)
            if seconds_allowed and seconds not in seconds_allowed:
                self.fail(f"{p}.seconds", f"{seconds} is not one of seconds_allowed {list(seconds_allowed)}")
            out[alias] = ModelConfig(
                name=alias,
                upstreams=ups,
                upstream_model=self.get(t, p, "upstream_model", str, alias, _non_empty),
                size=size,
                seconds=seconds,
                sizes=sizes,
                seconds_allowed=seconds_allowed,
                price_per_second=self.get(t, p, "price_per_second", float, d.price_per_second, _not_negative),
                stream_format=self.get(t, p, "stream_format", str, d.stream_format, _one_of(*STREAM_FORMATS)),
                upstream_model_image=self.get(t, p, "upstream_model_image", str, "", _non_empty),
                upstream_params=self.upstream_params(t, p),
            )
        return out

    def upstream_params(self, t: Mapping[str, Any], p: str) -> dict[str, Any]:
        """`upstream_params`: a table sent as part of the provider's input, so it must be plain JSON."""
        value = self.get(t, p, "upstream_params", dict, {})
        for path, item in _leaves(value, f"{p}.upstream_params"):
            if not isinstance(item, (str, int, float, bool)):
                self.fail(path, f"must be a string, number, boolean, array or table, got {_show(item)}")
        return self.substitute_tree(f"{p}.upstream_params", value)

    def substitute_tree(self, key: str, value: Any) -> Any:
        if isinstance(value, dict):
            return {name: self.substitute_tree(f"{key}.{name}", item) for name, item in value.items()}
        return self.substitute(key, value)

    def int_list(self, t: Mapping[str, Any], p: str, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
        value = self.get(t, p, name, list, None)
        if value is None:
            return default
        out = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or item <= 0:
                self.fail(f"{p}.{name}[{i}]", f"must be a positive whole number, got {_show(item)}")
            else:
                out.append(item)
        return tuple(out)

    def teams(self, raw: Any, model_names: set[str]) -> tuple[TeamConfig, ...]:
        if not isinstance(raw, list):
            self.fail("teams", "must be an array of [[teams]] tables")
            return ()
        out: list[TeamConfig] = []
        seen: set[str] = set()
        for i, t in enumerate(raw):
            p = f"teams[{i}]"
            if not isinstance(t, dict):
                self.fail(p, "must be a table")
                continue
            self.unknown_keys(t, p, ("name", "keys", "models", "quotas", "webhook_url", "webhook_secret"))
            name = self.get(t, p, "name", str, "", _non_empty)
            if "name" not in t:
                self.fail(f"{p}.name", "is required")
            if name in seen:
                self.fail(f"{p}.name", f"duplicate team name {name!r}")
            seen.add(name)
            keys = self.string_list(t, p, "keys")
            for j, k in enumerate(keys):
                if not _HASH_PATTERN.match(k):
                    self.fail(
                        f"{p}.keys[{j}]",
                        "must be 'sha256:' followed by 64 lowercase hex digits (the hash of the key, never the key;"
                        " `sora-gateway keys hash` prints it)",
                    )
            models = self.string_list(t, p, "models")
            for j, m in enumerate(models):
                if m not in model_names:
                    self.fail(f"{p}.models[{j}]", f"no model named {m!r} (known: {', '.join(sorted(model_names))})")
            webhook_url = self.get(t, p, "webhook_url", str, "", _optional_http_url)
            webhook_secret = self.get(t, p, "webhook_secret", str, "", _webhook_secret)
            if webhook_url and not webhook_secret:
                self.fail(f"{p}.webhook_secret", "is required with webhook_url: it signs the deliveries"
                          " (whsec_ followed by base64, e.g. from ${TEAM_WEBHOOK_SECRET})")
            out.append(TeamConfig(name=name, keys=keys, models=models, quotas=self.quotas(t.get("quotas", {}), p),
                                  webhook_url=webhook_url, webhook_secret=webhook_secret))
        return tuple(out)

    def quotas(self, t: Any, team_prefix: str) -> QuotaConfig:
        p = f"{team_prefix}.quotas"
        if not isinstance(t, dict):
            self.fail(p, "must be a table")
            return QuotaConfig()
        self.unknown_keys(t, p, QUOTA_KEYS)
        values: dict[str, Any] = {}
        for name in QUOTA_KEYS:
            kind = float if name == "budget_usd_per_month" else int
            values[name] = self.get(t, p, name, kind, None, _not_negative)
        return QuotaConfig(**values)


def _leaves(value: Any, key: str) -> list[tuple[str, Any]]:
    """Every non-container value in a TOML tree, with its dotted key."""
    if isinstance(value, dict):
        return [leaf for name, item in value.items() for leaf in _leaves(item, f"{key}.{name}")]
    if isinstance(value, list):
        return [leaf for i, item in enumerate(value) for leaf in _leaves(item, f"{key}[{i}]")]
    return [(key, value)]


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "an array",
             dict: "a table"}
    return names.get(kind, "a table") if isinstance(kind, type) else " or ".join(names[k] for k in kind)


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


def _positive(v: float) -> str | None:
    return None if v > 0 else f"must be greater than 0, got {v}"


def _not_negative(v: float) -> str | None:
    return None if v >= 0 else f"must not be negative, got {v}"


def _percent_step(v: int) -> str | None:
    return None if 1 <= v <= 100 else f"must be a whole number of percent from 1 to 100, got {v}"


def _secret(v: str) -> str | None:
    if len(v) < 16:
        return "must be at least 16 characters (it signs video links)"
    return _guessable(v, "it signs video links")


_PLACEHOLDERS = re.compile(r"(?i)^(?:change-?me|secret|password|admin|test|example|default|0123456789)+[-_]*$")


def _guessable(v: str, why: str) -> str | None:
    """Too short or too regular to be a secret: use `openssl rand -hex 32` or similar."""
    if len(v) < 16:
        return f"is too short: use at least 16 random characters ({why})"
    if len(set(v)) < 8 or _PLACEHOLDERS.match(v.replace("-", "").replace("_", "")):
        return f"is too easy to guess: use random characters, e.g. from `openssl rand -hex 32` ({why})"
    return None


def _non_empty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _one_of(*allowed: str) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        return None if v in allowed else f"must be one of {', '.join(repr(a) for a in allowed)}, got {v!r}"

    return check


def _http_url(v: str) -> str | None:
    return None if re.match(r"^https?://[^/\s]+", v) else f"must be an http:// or https:// URL, got {v!r}"


def _optional_http_url(v: str) -> str | None:
    return _http_url(v) if v else None


def _webhook_secret(v: str) -> str | None:
    if not v:
        return None
    if not v.startswith("whsec_"):
        return "must start with 'whsec_' followed by base64 (the Standard Webhooks secret format)"
    try:
        raw = base64.b64decode(v[len("whsec_"):] + "==", validate=False)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) < 16:
        return "must hold at least 16 bytes of base64 after 'whsec_' (e.g. whsec_ + 32 random bytes, base64)"
    return None


def _database_url(v: str) -> str | None:
    if v.startswith(("sqlite:///", "postgresql://", "postgres://")) or v == "sqlite://:memory:":
        return None
    return f"must start with sqlite:/// or postgresql://, got {v!r}"


def _video_store_url(v: str) -> str | None:
    if not v.startswith(VIDEO_STORE_SCHEMES):
        shown = "" if "@" in v else f", got {v!r}"  # never echo what may be a credential
        return f"must be a file:///PATH, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or az://CONTAINER/PREFIX URL{shown}"
    scheme, _, rest = v.partition("://")
    if not rest.strip("/"):
        return f"names no {'folder' if scheme == 'file' else 'bucket'}: {v!r}"
    if scheme != "file" and ("@" in rest.split("/")[0] or "?" in rest):
        return "must not carry credentials: the store's credentials come from the environment"
    return None


def _signed_url_ttl(v: int) -> str | None:
    return None if 1 <= v <= 604_800 else f"must be from 1 to 604800 seconds (7 days, the longest S3 signs), got {v}"


def _redis_url(v: str) -> str | None:
    if not v or v.startswith(("redis://", "rediss://", "unix://")):
        return None
    return f"must be empty or a redis:// URL, got {v!r}"
