"""The app factory: all wiring happens here, once, and is passed down."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp

from gateway.api import (
    admin,
    characters,
    chat,
    dashboard,
    health,
    models,
    upstream_webhooks,
    usage,
    video_edits,
    videos,
)
from gateway.api.endpoints import EndpointRoute as Route  # Starlette's Route, with a leaner endpoint wrapper
from gateway.api.endpoints import HotRoutes
from gateway.api.errors import (
    api_error_handler,
    backend_error_handler,
    backend_errors,
    http_exception_handler,
)
from gateway.api.middleware import EdgeMiddleware
from gateway.api.shapes import video_object
from gateway.backends.coordination import LocalCoordinator
from gateway.backends.database import open_database
from gateway.backends.quota_memory import MemoryQuotaStore
from gateway.backends.video_store import open_store
from gateway.config import Config, ConfigError, UpstreamConfig, load_config
from gateway.core.accounting import Accounting
from gateway.core.auth import Authenticator
from gateway.core.coordination import Coordinator
from gateway.core.database import Database
from gateway.core.errors import GatewayError
from gateway.core.flights import Flights
from gateway.core.images import ImageLimits
from gateway.core.keypool import KeyPool
from gateway.core.lifecycle import Lifecycle, UpstreamSettings, new_video_id
from gateway.core.live import LiveJobs
from gateway.core.periodic import every
from gateway.core.quota import QuotaStore
from gateway.core.retention import Retention
from gateway.core.service import VideoService
from gateway.core.signing import LinkSigner
from gateway.core.upstream import Upstream
from gateway.core.webhooks import Webhooks
from gateway.observability.metrics import NULL_METRICS, Metrics, MetricsSink, TimedDatabase, watch_loop_lag
from gateway.redaction import NO_SECRETS, Redactor, config_secrets
from gateway.upstreams.callbacks import callbacks_for
from gateway.upstreams.fal import FalUpstream
from gateway.upstreams.gemini import GeminiUpstream
from gateway.upstreams.openrouter import OpenRouterUpstream
from gateway.upstreams.replicate import ReplicateUpstream
from gateway.upstreams.runway import RunwayUpstream
from gateway.upstreams.videos import VideosUpstream

log = logging.getLogger("gateway")
KEY_USE_FLUSH_S = 5.0
# The provider dialects, which all take the same settings.
PROVIDER_KINDS: dict[str, Callable[..., Upstream]] = {
    "gemini": GeminiUpstream, "openrouter": OpenRouterUpstream, "fal": FalUpstream, "replicate": ReplicateUpstream,
    "runway": RunwayUpstream}


# Routes that most requests take (polling a video, cache hits), dispatched by the edge layer itself.
HOT_ROUTES = (("/v1/videos/{video_id}", {"GET", "HEAD"}), ("/v1/chat/completions", {"POST"}))


def redis_client_name(config: Config) -> str:
    return "sora-gateway:" + re.sub(r"[^A-Za-z0-9:_.-]", "_", config.storage.redis_prefix)


def build_upstream(config: UpstreamConfig, metrics: MetricsSink = NULL_METRICS,
                   redactor: Redactor = NO_SECRETS, public_url: str = "") -> Upstream:
    """The dialect of one upstream; with `public_url`, one that asks its provider to call back (when the config
    switches that on) at `{public_url}/upstream-webhooks/{name}`."""
    if config.kind == "chat":
        from gateway.upstreams.chat import ChatRelayUpstream

        return ChatRelayUpstream(config.name, config.base_url, timeout_s=config.timeout_s, metrics=metrics,
                                 redact=redactor, max_media_bytes=config.max_media_bytes)
    if config.kind in PROVIDER_KINDS:
        callbacks = callbacks_for(config, public_url, metrics) if public_url else None
        return PROVIDER_KINDS[config.kind](config.name, config.base_url, timeout_s=config.timeout_s,
                                           poll_interval_s=config.poll_interval_s, metrics=metrics,
                                           redact=redactor, max_media_bytes=config.max_media_bytes,
                                           **({"callbacks": callbacks} if callbacks else {}))
    return VideosUpstream(config.name, config.base_url, timeout_s=config.timeout_s,
                          poll_interval_s=config.poll_interval_s, metrics=metrics, redact=redactor)


class Gateway:
    """Every long-lived part of one gateway process, fully built by `open()` before it serves."""

    config: Config
    db: Database
    auth: Authenticator
    live: LiveJobs
    lifecycle: Lifecycle
    videos: VideoService
    retention: Retention

    def __init__(self, config: Config, db: Database, metrics: Metrics) -> None:
        self.config = config
        self.started = int(time.time())
        self._background: list[asyncio.Task] = []
        self._retired: list[Upstream] = []
        self.draining = asyncio.Event()
        self.metrics = metrics
        self.db = TimedDatabase(db, self.metrics)
        # Every secret of the config, for all text that comes from an upstream; kept current on reload.
        self.redactor = Redactor(config_secrets(config))
        self.store = open_store(config.storage)
        self.signer = LinkSigner(config.server.signing_secret, config.server.public_url, config.server.link_ttl_s)
        self.upstreams = {u.name: build_upstream(u, self.metrics, self.redactor, config.server.public_url)
                          for u in config.upstreams}
        self.upstream_settings = UpstreamSettings(config.upstreams)
        self.redis = None
        if config.storage.redis:
            import redis.asyncio as aioredis

            from gateway.backends.coordination_redis import RedisCoordinator
            from gateway.backends.quota_redis import RedisQuotaStore

            # named, so an operator's CLIENT LIST tells the gateway's connections (and its prefix) apart
            self.redis = aioredis.from_url(config.storage.redis, client_name=redis_client_name(config))
            self.coordinator: Coordinator = RedisCoordinator(self.redis, config.storage.redis_prefix)
            self.quotas: QuotaStore = RedisQuotaStore(self.redis, config.storage.redis_prefix)
        else:
            self.coordinator = LocalCoordinator()
            self.quotas = MemoryQuotaStore()
        self.pools = {u.name: self._pool(u) for u in config.upstreams}
        self.auth = Authenticator(config, self.db)
        self.live = LiveJobs(self.db, self.coordinator)
        self.accounting = Accounting(self.quotas, self.db, self.metrics)
        self.flights = Flights(self.live, self.coordinator, new_video_id)
        self.webhooks = Webhooks(self.db, lambda: self.config, lambda r: video_object(r, self.signer.expiry()),
                                 self.metrics)
        self.lifecycle = Lifecycle(
            db=self.db, live=self.live, coordinator=self.coordinator, upstreams=self.upstreams, pools=self.pools,
            settings=self.upstream_settings, store=self.store, accounting=self.accounting, flights=self.flights,
            webhooks=self.webhooks, metrics=self.metrics, ping_interval_s=lambda: self.config.server.ping_interval_s,
            thumbnails_with_video=config.storage.thumbnails == "with_video")
        limits = ImageLimits(max_bytes=config.server.image_max_bytes, timeout_s=config.server.image_timeout_s)
        self.videos = VideoService(config, self.db, self.store, self.live, self.lifecycle, self.flights,
                                   self.accounting, self.upstream_settings, limits, self.webhooks, self.metrics)
        self.retention = Retention(self.db, self.store, lambda: self.config.cache.ttl_s, self.videos.forget)
        self.metrics.watch(self.pools, lambda: [job.record.status for job in self.live.followed.values()])

    @classmethod
    async def open(cls, config: Config, metrics: Metrics | None = None) -> Gateway:
        """Connect the database, build every part, and pick up unfinished jobs: then it can serve."""
        gateway = cls(config, await open_database(config.storage), metrics or Metrics())
        await gateway._start()
        return gateway

    def _pool(self, upstream: UpstreamConfig) -> KeyPool:
        return KeyPool.from_secrets(upstream.name, upstream.keys, upstream.max_concurrent_per_key, self.coordinator)

    async def _start(self) -> None:
        if self.coordinator.shared:
            await self.coordinator.start(self.live.on_remote_status, self._key_changed)
            for pool in self.pools.values():
                await pool.sync()
        await self.accounting.seed([team.name for team in self.config.teams])
        await self.lifecycle.open()
        self.videos.adopt_running()
        self._background.append(asyncio.create_task(
            every(lambda: KEY_USE_FLUSH_S, self.flush_key_use, "key last-used flush"), name="key-last-used"))
        self._background.append(asyncio.create_task(
            every(self.retention.interval_s, self.retention.sweep, "store sweep"), name="store-sweep"))
        self._background.append(asyncio.create_task(self.webhooks.run(), name="webhook-sender"))
        self._background.append(asyncio.create_task(watch_loop_lag(self.metrics), name="loop-lag"))
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # only the main thread can
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)

    def upstream_config(self, name: str) -> UpstreamConfig | None:
        return self.upstream_settings(name)

    def begin_shutdown(self) -> None:
        """Stop serving waiters: open streams are told their job continues (with its id) and end, so the
        server can close their connections at once. Jobs are handed back in `stop()`."""
        if self.draining.is_set():
            return
        log.info("shutting down: ending open streams; running jobs continue after a restart or elsewhere")
        self.draining.set()
        for handle in self.live.handles():
            handle.wake()

    async def reload(self, config: Config) -> list[str]:
        """Apply a new, already validated config to the running gateway and return what changed.

        Teams, keys, quotas, models, cache settings and upstream keys apply to the next request; running jobs
        and open streams are untouched. Storage settings need a restart.
        """
        changes: list[str] = []
        old = self.config
        self.redactor.update([*config_secrets(config), *config_secrets(old)])  # old keys may still be quoted
        if config.storage != old.storage:
            changes.append("storage.* differs: it takes effect after a restart")
            config = replace(config, storage=old.storage)
        for upstream in config.upstreams:
            previous = next((u for u in old.upstreams if u.name == upstream.name), None)
            if previous is None or _dialect_settings(previous, old) != _dialect_settings(upstream, config):
                if upstream.name in self.upstreams:
                    # running jobs keep using it (and are polled: callbacks now wake the new one's followers)
                    self._retired.append(self.upstreams[upstream.name])
                self.upstreams[upstream.name] = build_upstream(upstream, self.metrics, self.redactor,
                                                               config.server.public_url)
                changes.append(f"upstream {upstream.name}: {'added' if previous is None else 'settings changed'}")
            pool = self.pools.get(upstream.name)
            if pool is None:
                self.pools[upstream.name] = self._pool(upstream)
                continue
            for change in pool.reconfigure(upstream.keys, upstream.max_concurrent_per_key):
                changes.append(f"upstream key {change}")
                if change.endswith("re-enabled"):
                    await pool.enable(change.split()[0])
        for name in {u.name for u in old.upstreams} - {u.name for u in config.upstreams}:
            changes.append(f"upstream {name} removed (its running jobs finish on it)")
        if (config.teams, config.models, config.server.admin_keys) != (old.teams, old.models, old.server.admin_keys):
            changes.append("teams, models or admin keys changed")
        if config.server != old.server:
            self.signer = LinkSigner(config.server.signing_secret, config.server.public_url,
                                     config.server.link_ttl_s)
        await self.flush_key_use()  # the new authenticator starts with an empty last-used buffer
        self.config = config
        self.auth = Authenticator(config, self.db)
        self.upstream_settings.update(config.upstreams)
        self.videos.config = config
        log.info("config reloaded", extra={"changes": changes})
        return changes

    async def reload_from_file(self) -> list[str]:
        """Re-read the config file this gateway started from. Raises ConfigError, leaving the old one in force."""
        return await self.reload(load_config(self.config.source))

    def _on_sighup(self) -> None:
        async def run() -> None:
            try:
                await self.reload_from_file()
            except ConfigError as exc:
                log.error("config reload rejected; the previous config stays in force",
                          extra={"problems": exc.problems})

        task = asyncio.create_task(run())
        self._background.append(task)
        task.add_done_callback(self._background.remove)

    def _key_changed(self, label: str) -> None:
        """Another instance cooled, disabled or re-enabled a key: adopt its view."""
        pool = self.pools.get(label.rsplit(":", 1)[0])
        if pool is not None:
            task = asyncio.create_task(pool.sync([label]))
            self._background.append(task)
            task.add_done_callback(self._background.remove)

    async def flush_key_use(self) -> None:
        """Write keys' last-used times in one batch, off the request path; kept for the next try on failure."""
        used, self.auth.last_used = self.auth.last_used, {}
        if not used:
            return
        try:
            await self.db.touch_keys(used)
        except BaseException:
            self.auth.last_used = {**used, **self.auth.last_used}
            raise

    async def stop(self) -> None:
        self.begin_shutdown()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.flush_key_use()
        await self.lifecycle.close()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for upstream in [*self.upstreams.values(), *self._retired]:
            await upstream.aclose()
        await self.quotas.close()
        await self.coordinator.close()
        await self.db.close()


def _dialect_settings(upstream: UpstreamConfig, config: Config) -> tuple:
    """What a dialect is built from: a change in any of it builds a new one."""
    return (upstream.kind, upstream.base_url, upstream.timeout_s, upstream.poll_interval_s, upstream.webhook_secret,
            upstream.webhooks, upstream.webhook_jwks_url, config.server.public_url if upstream.has_webhooks else "")


class GatewayApp(Starlette):
    """Starlette with the edge layer outermost. Starlette puts its ServerErrorMiddleware in front of every app's
    own layers; in front of `EdgeMiddleware`, which answers every error with the gateway's envelope itself, it
    only added a frame and a `send` wrapper to every request, kept as long as the request (a stream's: minutes)."""

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if isinstance(stack, ServerErrorMiddleware) and isinstance(stack.app, EdgeMiddleware):
            return stack.app
        return stack


def create_app(config: Config) -> Starlette:
    """The ASGI app. Its gateway is opened by the lifespan, before the first request, as `app.state.gateway`;
    `app.state.begin_shutdown()` ends open streams (what a server does on SIGTERM)."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway = await Gateway.open(config, metrics)
        app.state.gateway = gateway
        try:
            yield
        finally:
            await gateway.stop()

    routes = [
        Route("/healthz", health.healthz),
        Route("/readyz", health.readyz),
        Route("/metrics", health.metrics),
        Route("/v1/models", models.list_models),
        Route("/v1/models/{model_id:path}", models.retrieve_model),
        Route("/v1/chat/completions", chat.chat_completions, methods=["POST"]),
        Route("/v1/videos/characters", characters.create_character, methods=["POST"]),
        Route("/v1/videos/characters", characters.list_characters, methods=["GET"]),
        Route("/v1/videos/characters/{character_id}", characters.get_character, methods=["GET"]),
        Route("/v1/videos/characters/{character_id}", characters.delete_character, methods=["DELETE"]),
        Route("/v1/videos/edits", video_edits.edit_video, methods=["POST"]),
        Route("/v1/videos/extensions", video_edits.extend_video, methods=["POST"]),
        Route("/v1/videos", videos.create_video, methods=["POST"]),
        Route("/v1/videos", videos.list_videos, methods=["GET"]),
        Route("/v1/videos/{video_id}", videos.retrieve_video, methods=["GET"]),
        Route("/v1/videos/{video_id}", videos.delete_video, methods=["DELETE"]),
        Route("/v1/videos/{video_id}/content", videos.video_content, methods=["GET", "HEAD"]),
        Route("/v1/videos/{video_id}/content/{token}", videos.signed_video_content, methods=["GET", "HEAD"]),
        Route("/v1/videos/{video_id}/remix", videos.remix_video, methods=["POST"]),
        Route("/v1/usage", usage.team_usage),
        Route("/upstream-webhooks/{upstream}", upstream_webhooks.receive, methods=["POST"]),
        Route("/admin/upstreams", admin.list_upstreams),
        Route("/admin/teams", admin.list_teams),
        Route("/admin/teams/{team}/keys", admin.create_team_key, methods=["POST"]),
        Route("/admin/keys", admin.list_keys),
        Route("/admin/keys/{key_id}", admin.revoke_key, methods=["DELETE"]),
        Route("/admin/usage", admin.usage_report),
        Route("/admin/store", admin.store_usage),
        Route("/admin/webhooks", admin.webhook_deliveries),
        Route("/dashboard", dashboard.page),
        Route("/dashboard/api/summary", dashboard.summary_data),
        Route("/dashboard/{asset}", dashboard.asset),
        Route("/admin/reload", admin.reload_config, methods=["POST"]),
        Route("/admin/upstreams/{upstream}/keys/{label}/enable", admin.enable_upstream_key, methods=["POST"]),
    ]
    app = GatewayApp(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={GatewayError: api_error_handler, HTTPException: http_exception_handler,
                            **{error: backend_error_handler for error in backend_errors()}},
    )


    def begin_shutdown() -> None:
        gateway = app.state._state.get("gateway")  # None while the lifespan is still opening it
        if gateway is not None:
            gateway.begin_shutdown()

    app.state.begin_shutdown = begin_shutdown
    app.router.redirect_slashes = False  # its redirect is not an API error and takes its Location from Host
    hot = HotRoutes(app.router, [route for route in routes if (route.path, route.methods) in HOT_ROUTES],
                    app.exception_handlers)
    app.add_middleware(EdgeMiddleware, metrics=metrics, hot=hot)
    return app
