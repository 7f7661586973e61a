"""Where a video request enters the core: the cache, single-flight, and else a new job.

    image → cache key → finished? hit : in flight? join : new job (gateway.core.lifecycle)

A hit or a join costs nothing and counts against the request rate only; a new job goes through the lifecycle,
which reserves, records, submits and accounts for it.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

from cachetools import TTLCache

from gateway.config import Config
from gateway.core.accounting import Accounting
from gateway.core.auth import Principal
from gateway.core.cache import CacheControl, cache_key
from gateway.core.characters import Characters
from gateway.core.database import Database
from gateway.core.errors import bad_request, not_found
from gateway.core.feed import JobHandle
from gateway.core.flights import Flights
from gateway.core.images import ImageError, ImageLimits, load_image
from gateway.core.lifecycle import Lifecycle, UpstreamSettings
from gateway.core.live import LiveJobs
from gateway.core.records import CharacterRecord, JobRecord, public_status
from gateway.core.request import VideoRequest
from gateway.core.store import VideoStore
from gateway.core.upstream import ImageInput, VideoInput
from gateway.core.webhooks import Webhooks
from gateway.observability.metrics import MetricsSink

_CLAIM_MARGIN_S = 60  # a cross-instance flight claim outlives the longest job by this much


@dataclass(slots=True)
class Generation:
    """A job a client waits on. `handle` is None when the result is already final (a cache hit)."""

    record: JobRecord
    handle: JobHandle | None
    cache: str  # miss | hit | joined
    headers: dict[str, str]

    async def accepted(self) -> None:
        """Wait until the upstream has the job; raises why when it never will (each caller its own copy)."""
        if self.handle is not None:
            await self.handle.wait_accepted()


class VideoService:
    def __init__(self, config: Config, db: Database, store: VideoStore, live: LiveJobs, lifecycle: Lifecycle,
                 flights: Flights, accounting: Accounting, settings: UpstreamSettings, image_limits: ImageLimits,
                 webhooks: Webhooks, metrics: MetricsSink) -> None:
        self.config = config
        self.characters = Characters(db)
        self.db = db
        self.store = store
        self.live = live
        self.lifecycle = lifecycle
        self.flights = flights
        self.accounting = accounting
        self.settings = settings
        self.image_limits = image_limits
        self.webhooks = webhooks
        self.metrics = metrics
        self._announcing: set[asyncio.Task] = set()
        # Finished results recently served, so a burst of hits costs no database read or file stat.
        self._hits: TTLCache[str, JobRecord] = TTLCache(maxsize=10_000, ttl=min(5.0, config.cache.ttl_s))

    def adopt_running(self) -> None:
        """Jobs resumed after a restart can be joined by the same request sent again (e.g. an SDK retry)."""
        for job in self.live.followed.values():
            if job.record.cache_key and not job.handle.done:
                self.flights.adopt(job.record.cache_key, job.handle)

    async def forget(self, record: JobRecord) -> None:
        """A video was deleted or expired: never serve it as a hit again, and let no request join its job."""
        self.live.forget(record.id)
        if record.cache_key:
            self._hits.pop(record.cache_key, None)
            await self.flights.release(record)

    async def generate(self, principal: Principal, request: VideoRequest, request_id: str,
                       control: CacheControl = CacheControl(), image: ImageInput | None = None,
                       video: VideoInput | None = None) -> Generation:
        """Serve `request` from the cache, an identical job in flight, or a new job.

        `image` is an input reference the caller already holds (an upload); without it, `request.image_url`
        is loaded here. `video` is an uploaded source of an edit or an extension.
        """
        if image is None:
            image = await self._image(request.image_url)
        team = principal.team.name
        source = await self._source(principal, request)
        cast = await self.characters.for_job(team, request.characters, request.prompt)
        if cast:  # ids and @Name mentions alike, so both kinds of request share a cache key
            request = replace(request, characters=tuple(c.id for c in cast))
        self.lifecycle.upstreams_for(request, source, bool(cast))  # what no upstream can do is refused first
        cache = self.config.cache
        key = cache_key(request, image, team if cache.scope == "team" else None, video) if cache.enabled else None
        job = _NewJob(principal, request, request_id, image, video, source, cast)
        if key is not None and control.lookup:
            found = await self._finished(key)
            if found is not None:
                self.metrics.cache_result("hit")
                headers = await self.accounting.admit_hit(principal, request, request_id, found.id)
                if request.webhook_url:
                    await self.webhooks.enqueue((self.webhooks.for_request(found, team, request.webhook_url),))
                return Generation(found, None, "hit", headers)
        if key is None or not control.lookup or not control.store:
            # no-cache starts a job of its own (still saved for later hits); no-store keeps it out entirely
            return await self._new_job(job, key if key and control.store else None)
        leader: list[Generation] = []

        async def start(job_id: str) -> JobHandle:
            generation = await self._new_job(job, key, job_id)
            leader.append(generation)
            return generation.handle

        ttl = max(self.settings(u).job_timeout_s for u in request.model.upstreams) + _CLAIM_MARGIN_S
        handle, joined = await self.flights.run(key, start, ttl)
        if not joined:
            return leader[0]
        self.metrics.cache_result("joined")
        headers = await self.accounting.admit_hit(principal, request, request_id, handle.record.id)
        if request.webhook_url:
            self._announce_when_done(handle, team, request.webhook_url)
        return Generation(handle.record, handle, "joined", headers)

    def _announce_when_done(self, handle: JobHandle, team: str, url: str) -> None:
        """A join's own webhook: sent when the shared job ends (kept in memory until then, unlike a job's own
        events, which are written with the job's end)."""
        async def announce() -> None:
            async for _ in handle.changes():
                pass
            await self.webhooks.enqueue((self.webhooks.for_request(handle.record, team, url),))

        task = asyncio.create_task(announce(), name=f"webhook-join-{handle.record.id}")
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _new_job(self, job: _NewJob, key: str | None, job_id: str | None = None) -> Generation:
        self.metrics.cache_result("miss")
        handle, headers = await self.lifecycle.start(
            job.principal, job.request, job.image, job.request_id, cache_key=key, source=job.source,
            video=job.video, characters=job.characters, job_id=job_id)
        return Generation(handle.record, handle, "miss", headers)

    async def _finished(self, key: str) -> JobRecord | None:
        """A completed, stored video for this cache key that is still within `cache.ttl_s`."""
        since = time.time() - self.config.cache.ttl_s
        record = self._hits.get(key)
        if record is None or record.completed_at < since:
            record = await self.db.find_cached(key, since)
            if record is None or not await self.store.exists(record.id):
                return None
            self._hits[key] = record
        return record

    async def _image(self, url: str | None) -> ImageInput | None:
        if url is None:
            return None
        try:
            return await load_image(url, self.image_limits)
        except ImageError as exc:
            raise bad_request(str(exc), param="messages") from None

    async def _source(self, principal: Principal, request: VideoRequest) -> JobRecord | None:
        if request.operation == "create":
            return await self._remix_source(principal, request.remix_of)
        if request.source_id is None:
            return None  # an uploaded source
        record = await self.live.find(request.source_id)
        team = principal.team.name
        if record is None or record.deleted or (record.team != team
                                                and not await self.db.served_to(record.id, team)):
            raise not_found(f"Video with id '{request.source_id}' not found.")
        if record.status != "completed":
            advice = "make a new video instead" if record.status == "failed" else "wait until it is 'completed'"
            raise bad_request(f"Video '{record.id}' cannot be the source of an {request.operation}: its status is"
                              f" '{public_status(record.status)}'; {advice}.", param="video", code="video_not_ready")
        return record

    async def _remix_source(self, principal: Principal, video_id: str | None) -> JobRecord | None:
        """The earlier video a conversation refers to, if it is this team's, finished, and remixable."""
        if video_id is None:
            return None
        record = await self.live.find(video_id)
        if record is None or record.team != principal.team.name or record.deleted:
            return None
        upstream = self.settings(record.upstream)
        if record.status != "completed" or upstream is None or upstream.kind != "videos":
            return None
        return record


@dataclass(frozen=True, slots=True)
class _NewJob:
    """Everything a new job of a request starts from."""

    principal: Principal
    request: VideoRequest
    request_id: str
    image: ImageInput | None
    video: VideoInput | None
    source: JobRecord | None
    characters: tuple[CharacterRecord, ...]
