"""A fake upstream speaking one dialect (Sora's two, or a video provider's), with faults chosen by key prefix.

Sora's routes are under /v1, so an upstream `base_url` is `http://host:port/v1`; a provider fake serves its
provider's own paths (`/v1beta` for gemini). Besides the dialect's routes:
`GET /v1/models`, `GET /files/{id}.mp4|.jpg` (chat links, no key needed), and the control routes
`GET /_sim/calls` and `POST /_sim/reset` for tests and benchmarks running in another process.
"""

from __future__ import annotations

import time

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .assets import Assets
from .chat import ChatAPI
from .errors import APIError, handle_http_exception, json_response
from .fal import FalAPI
from .gemini import GeminiAPI
from .middleware import SimulatorMiddleware, Wire
from .openrouter import OpenRouterAPI
from .replicate import ReplicateAPI
from .runway import RunwayAPI
from .settings import SimulatorSettings
from .state import Call, SimulatorState
from .videos import MODELS, VideosAPI

DIALECTS = {"videos": VideosAPI, "chat": ChatAPI, "gemini": GeminiAPI, "openrouter": OpenRouterAPI, "fal": FalAPI,
            "replicate": ReplicateAPI, "runway": RunwayAPI}

__all__ = ["Call", "SimulatorSettings", "SimulatorState", "create_simulator_app", "run_simulator"]


def create_simulator_app(settings: SimulatorSettings) -> Starlette:
    state = SimulatorState()
    assets = Assets.load()
    dialect = DIALECTS.get(settings.kind, VideosAPI)(state, settings, assets)
    wire: Wire = getattr(dialect, "wire", Wire())  # a provider fake speaks its provider's auth and errors

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return wire.respond(exc)

    routes: list[BaseRoute] = [
        *ControlAPI(state).routes(),  # first: a provider's catch-all path (fal's /{model_id}) must not take them
        *dialect.routes(),
        Route("/v1/models", list_models, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SimulatorMiddleware, state=state, settings=settings, wire=wire)],
        exception_handlers={APIError: api_error, HTTPException: handle_http_exception},
    )
    app.state.sim = state
    app.state.settings = settings
    app.state.dialect = dialect  # e.g. its webhook signer, for a test that forges or replays a callback
    return app


def run_simulator(host: str, port: int, settings: SimulatorSettings) -> None:
    uvicorn.run(create_simulator_app(settings), host=host, port=port, timeout_graceful_shutdown=2)


async def list_models(request: Request) -> Response:
    created = int(time.time())
    data = [{"id": model, "object": "model", "created": created, "owned_by": "system"} for model in MODELS]
    return json_response({"object": "list", "data": data})


class ControlAPI:
    """Lets a test or a benchmark in another process read and clear what the simulator saw."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        return [
            Route("/_sim/calls", self.calls, methods=["GET"]),
            Route("/_sim/reset", self.reset, methods=["POST"]),
        ]

    async def calls(self, request: Request) -> Response:
        return json_response({"calls": [call.to_dict() for call in list(self.state.calls)]})

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        return json_response({"reset": True})
