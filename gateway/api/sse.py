"""A server-sent-events response for long streams: one task per stream watches for the client leaving.

Starlette's StreamingResponse runs an anyio task group per response (a cancel scope and a second task) to
learn that the client left. Here the stream runs in the request's own task, and one small task waits for
the disconnect and cancels the stream if it is still sending; a stream that has ended is never cancelled.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class Last(bytes):
    """The stream's closing events: sent with the end of the response, in one write."""

    __slots__ = ()


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], headers: Mapping[str, str] | None = None) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers, self.raw_headers = self.raw_headers, []  # sent once: not kept for the stream's life
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        del headers
        stream = _Stream(asyncio.current_task())
        watcher = asyncio.create_task(stream.watch(receive))
        try:
            last = b""
            async for event in self.events:
                if isinstance(event, Last):
                    last = event
                    break
                await send({"type": "http.response.body", "body": event, "more_body": True})
            stream.sending = False  # no await since the last event: the watcher cannot have cancelled since
            await send({"type": "http.response.body", "body": bytes(last), "more_body": False})
        except asyncio.CancelledError:
            if not stream.left:
                raise
            stream.task.uncancel()  # the client left: the stream ends, the request ends normally
        finally:
            stream.sending = False
            watcher.cancel()
            await self.events.aclose()


class _Stream:
    __slots__ = ("left", "sending", "task")

    def __init__(self, task: asyncio.Task | None) -> None:
        self.task = task
        self.sending = True
        self.left = False

    async def watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if self.sending and self.task is not None:
            self.left = True
            self.task.cancel()
