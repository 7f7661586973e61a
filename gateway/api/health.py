"""Operational endpoints: liveness, readiness and Prometheus metrics.

All three are cheap enough to be probed every few seconds: no upstream call, nothing scanned, every readiness
check bounded by a short timeout and all of them run at once.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import JSONResponse, require_admin, services

log = logging.getLogger("gateway.health")
CHECK_TIMEOUT_S = 2.0


async def healthz(request: Request) -> Response:
    """The process is up and serving HTTP."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """The gateway can serve requests: 200, or 503 naming each failing check and what is wrong with it.

        {"status": "unavailable", "checks": {"database": false, "store": true, "upstream_keys": true},
         "failing": {"database": "failed (OperationalError)"}}
    """
    checks = await readiness(services(request))
    failing = {name: problem for name, problem in checks.items() if problem is not None}
    body: dict = {
        "status": "unavailable" if failing else "ok",
        "checks": {name: problem is None for name, problem in checks.items()},
    }
    if failing:
        body["failing"] = failing
    return JSONResponse(body, status_code=503 if failing else 200)


async def metrics(request: Request) -> Response:
    gw = services(request)
    if not gw.config.server.metrics_public:
        require_admin(request)
    return Response(gw.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def readiness(gw) -> dict[str, str | None]:
    """Each check's problem, or None when it passes."""
    checks: dict[str, Awaitable[str | None]] = {
        "database": _database(gw),
        "store": _store(gw),
        "upstream_keys": _upstream_keys(gw),
    }
    if gw.coordinator.shared:
        checks["redis"] = _redis(gw.coordinator)
    results = await asyncio.gather(*(_bounded(name, check) for name, check in checks.items()))
    return dict(zip(checks, results, strict=True))


async def _bounded(name: str, check: Awaitable[str | None]) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await check
    except TimeoutError:
        log.warning("readiness check timed out", extra={"check": name, "timeout_s": CHECK_TIMEOUT_S})
        return f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness check failed", extra={"check": name, "error": f"{type(exc).__name__}: {exc}"})
        return f"failed ({type(exc).__name__})"


async def _database(gw) -> str | None:
    return None if await gw.db.ping() else "the database did not answer"


async def _redis(coordinator) -> str | None:
    return None if await coordinator.ping() else "redis did not answer"


async def _store(gw) -> str | None:
    return None if await gw.store.writable() else "the video store is not writable"


async def _upstream_keys(gw) -> str | None:
    """At least one key is usable. Cooling keys count: they come back by themselves, disabled ones do not."""
    for pool in gw.pools.values():
        if any(key["state"] != "disabled" for key in pool.snapshot()):
            return None
    return "every upstream key is disabled"
