"""The app factory: all wiring happens here, once, and is passed down."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from gateway.api import admin, chat, health, models, usage, videos
from gateway.api.access import AccessMiddleware
from gateway.api.errors import api_error_handler, http_exception_handler
from gateway.api.middleware import RequestIdMiddleware
from gateway.backends.quota_memory import MemoryQuotaStore
from gateway.backends.coordination import LocalCoordinator
from gateway.backends.database import open_database
from gateway.backends.store import LocalVideoStore
from gateway.config import Config, UpstreamConfig
from gateway.core.auth import Authenticator
from gateway.core.images import ImageLimits
from gateway.core.jobs import JobManager
from gateway.core.service import VideoService
from gateway.core.signing import LinkSigner
from gateway.errors import APIError
from gateway.observability.metrics import NULL_METRICS, Metrics, MetricsSink, TimedDatabase
from gateway.upstreams.base import Upstream
from gateway.upstreams.keypool import KeyPool
from gateway.upstreams.videos import VideosUpstream

log = logging.getLogger("gateway")


def build_upstream(config: UpstreamConfig, metrics: MetricsSink = NULL_METRICS) -> Upstream:
    if config.kind == "chat":
        from gateway.upstreams.chat import ChatRelayUpstream

        return ChatRelayUpstream(config.name, config.base_url, timeout_s=config.timeout_s, metrics=metrics)
    return VideosUpstream(config.name, config.base_url, timeout_s=config.timeout_s,
                          poll_interval_s=config.poll_interval_s, metrics=metrics)


class Gateway:
    """Every long-lived part of one gateway process. Parts that need the database exist after `start()`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.started = int(time.time())
        self._background: list[asyncio.Task] = []
        self.metrics = Metrics()
        self.store = LocalVideoStore(config.storage.videos_dir)
        self.signer = LinkSigner(config.server.signing_secret, config.server.public_url, config.server.link_ttl_s)
        self.upstreams = {u.name: build_upstream(u, self.metrics) for u in config.upstreams}
        self.redis = None
        if config.storage.redis:
            import redis.asyncio as aioredis

            from gateway.backends.coordination_redis import RedisCoordinator
            from gateway.backends.quota_redis import RedisQuotaStore

            self.redis = aioredis.from_url(config.storage.redis)
            self.coordinator = RedisCoordinator(self.redis, config.storage.redis_prefix)
            self.quotas = RedisQuotaStore(self.redis, config.storage.redis_prefix)
        else:
            self.coordinator = LocalCoordinator()
            self.quotas = MemoryQuotaStore()
        self.pools = {u.name: KeyPool.from_secrets(u.name, u.keys, u.max_concurrent_per_key, self.coordinator)
                      for u in config.upstreams}

    async def start(self) -> None:
        config = self.config
        self.db = TimedDatabase(await open_database(config.storage), self.metrics)
        self.auth = Authenticator(config, self.db)
        self.jobs = JobManager(config, self.db, self.store, self.upstreams, self.pools, self.coordinator,
                               self.metrics)
        self.metrics.watch(self.pools, lambda: [h.record.status for h in self.jobs.active.values()])
        if self.coordinator.shared:
            await self.coordinator.start(self.jobs.on_remote_status, self._key_changed)
            for pool in self.pools.values():
                await pool.sync()
        limits = ImageLimits(max_bytes=config.server.image_max_bytes, timeout_s=config.server.image_timeout_s)
        self.videos = VideoService(config, self.db, self.store, self.jobs, self.quotas, limits, self.metrics)
        await self.videos.start()
        await self.jobs.start()
        self._background.append(asyncio.create_task(self._flush_key_use(), name="key-last-used"))
        self._background.append(asyncio.create_task(self.videos.sweep_forever(), name="store-sweep"))

    def _key_changed(self, label: str) -> None:
        """Another instance cooled, disabled or re-enabled a key: adopt its view."""
        pool = self.pools.get(label.rsplit(":", 1)[0])
        if pool is not None:
            task = asyncio.create_task(pool.sync([label]))
            self._background.append(task)
            task.add_done_callback(self._background.remove)

    async def _flush_key_use(self) -> None:
        """Write keys' last-used times in batches, off the request path."""
        while True:
            await asyncio.sleep(5.0)
            await self.flush_key_use()

    async def flush_key_use(self) -> None:
        used, self.auth.last_used = self.auth.last_used, {}
        if used:
            await self.db.touch_keys(used)

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.flush_key_use()
        await self.jobs.stop()
        for upstream in self.upstreams.values():
            await upstream.aclose()
        await self.quotas.close()
        await self.coordinator.close()
        await self.db.close()


def create_app(config: Config) -> Starlette:
    gateway = Gateway(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
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
        Route("/v1/videos", videos.create_video, methods=["POST"]),
        Route("/v1/videos", videos.list_videos, methods=["GET"]),
        Route("/v1/videos/{video_id}", videos.retrieve_video, methods=["GET"]),
        Route("/v1/videos/{video_id}", videos.delete_video, methods=["DELETE"]),
        Route("/v1/videos/{video_id}/content", videos.video_content, methods=["GET", "HEAD"]),
        Route("/v1/videos/{video_id}/remix", videos.remix_video, methods=["POST"]),
        Route("/v1/usage", usage.team_usage),
        Route("/admin/upstreams", admin.list_upstreams),
        Route("/admin/teams", admin.list_teams),
        Route("/admin/teams/{team}/keys", admin.create_team_key, methods=["POST"]),
        Route("/admin/keys", admin.list_keys),
        Route("/admin/keys/{key_id}", admin.revoke_key, methods=["DELETE"]),
        Route("/admin/usage", admin.usage_report),
        Route("/admin/store", admin.store_usage),
        Route("/admin/upstreams/{upstream}/keys/{label}/enable", admin.enable_upstream_key, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={APIError: api_error_handler, HTTPException: http_exception_handler},
    )
    app.state.gateway = gateway
    app.add_middleware(AccessMiddleware, metrics=gateway.metrics)
    app.add_middleware(RequestIdMiddleware)  # added last, so outermost: every other layer sees the request id
    return app
