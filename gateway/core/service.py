"""The one place a video request goes through: admission, cache, job, and the outcome's accounting."""
from __future__ import annotations

from dataclasses import dataclass

from gateway.backends.records import JobRecord
from gateway.core.auth import Principal
from gateway.core.images import ImageError, ImageLimits, load_image
from gateway.core.jobs import JobHandle, JobManager
from gateway.core.request import VideoRequest
from gateway.errors import APIError, bad_request
from gateway.upstreams.base import ImageInput


@dataclass(slots=True)
class Generation:
    """A job a client waits on. `handle` is None when the result is already final (a cache hit)."""

    record: JobRecord
    handle: JobHandle | None
    cache: str  # miss | hit | joined


class VideoService:
    def __init__(self, jobs: JobManager, image_limits: ImageLimits) -> None:
        self.jobs = jobs
        self.image_limits = image_limits

    async def generate(self, principal: Principal, request: VideoRequest, request_id: str) -> Generation:
        image = await self._image(request.image_url)
        remix_source = await self._remix_source(principal, request.remix_of)
        handle = await self.jobs.submit(
            request, image, team=principal.team.name, key_id=principal.key_id, request_id=request_id,
            remix_source=remix_source,
        )
        return Generation(handle.record, handle, "miss")

    async def _image(self, url: str | None) -> ImageInput | None:
        if url is None:
            return None
        try:
            return await load_image(url, self.image_limits)
        except ImageError as exc:
            raise bad_request(str(exc), param="messages") from None

    async def _remix_source(self, principal: Principal, video_id: str | None) -> JobRecord | None:
        """The earlier video a conversation refers to, if it is this team's and finished."""
        if video_id is None:
            return None
        found = await self.jobs.find(video_id)
        record = found.record if isinstance(found, JobHandle) else found
        if record is None or record.team != principal.team.name or record.deleted:
            return None
        if record.status != "completed":
            raise APIError(409, f"Video {video_id} is still {record.status}; remix it once it has completed.",
                           code="video_not_ready")
        return record
