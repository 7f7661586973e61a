"""What the dashboard page shows of the gateway, as one JSON document: usage per day for the last 30 days by team
and by model, the jobs running now with their progress, and recent failures with their reason. The page only
draws it; an admin sees every team, a team key its own team."""
from __future__ import annotations

import time
from typing import Any

from gateway.core.database import Database
from gateway.core.live import LiveJobs
from gateway.core.records import JobRecord, public_status

DAYS = 30
FAILURES = 20
_DAY_S = 86_400
_MEASURES = ("videos", "video_seconds", "cost_usd")


async def summary(db: Database, live: LiveJobs, team: str | None, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    first_day = int(now // _DAY_S - (DAYS - 1)) * _DAY_S
    days = [time.strftime("%Y-%m-%d", time.gmtime(first_day + i * _DAY_S)) for i in range(DAYS)]
    running = [j for j in await db.active_jobs() if team is None or j.team == team]
    return {
        "object": "dashboard",
        "scope": "admin" if team is None else "team",
        "team": team,
        "generated_at": int(now),
        "days": days,
        "by_team": _series(await db.usage_by_day(team, first_day, "team"), days),
        "by_model": _series(await db.usage_by_day(team, first_day, "model"), days),
        "running": [_running(_live(live, j)) for j in sorted(running, key=lambda j: j.created_at)],
        "failures": [_failure(j) for j in await db.recent_failures(team, FAILURES)],
    }


def _series(rows: list[tuple], days: list[str]) -> dict[str, dict[str, list[float]]]:
    """{team or model: {measure: [one value per day]}}."""
    index = {day: i for i, day in enumerate(days)}
    out: dict[str, dict[str, list[float]]] = {}
    for day, name, videos, seconds, usd in rows:
        if day not in index:
            continue
        series = out.setdefault(str(name), {m: [0] * len(days) for m in _MEASURES})
        i = index[day]
        series["videos"][i] = int(videos or 0)
        series["video_seconds"][i] = int(seconds or 0)
        series["cost_usd"][i] = round(float(usd or 0.0), 6)
    return out


def _live(live: LiveJobs, record: JobRecord) -> JobRecord:
    handle = live.live(record.id)  # the follower's copy is fresher than the database's coarse progress
    return handle.record if handle is not None else record


def _running(j: JobRecord) -> dict[str, Any]:
    return {"id": j.id, "team": j.team, "model": j.model, "status": public_status(j.status),
            "progress": int(j.progress), "created_at": int(j.created_at), "seconds": j.seconds}


def _failure(j: JobRecord) -> dict[str, Any]:
    return {"id": j.id, "team": j.team, "model": j.model, "failed_at": int(j.completed_at or j.created_at),
            "code": j.error_code or "upstream_error", "reason": j.error_message or "", "refused": j.refused}
