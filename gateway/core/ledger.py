"""Usage reports from the ledger: one row per request, grouped and totalled."""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from gateway.core.errors import bad_request, shown

GROUPS = ("day", "model", "key", "team")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_EPOCH = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()  # later bounds mean "no bound"


def parse_time(value: str | None, param: str, *, end: bool = False) -> float | None:
    """Epoch seconds, `YYYY-MM-DD` (UTC; as an `until`, the end of that day) or an ISO 8601 time."""
    if value is None or value == "":
        return None
    if _EPOCH.fullmatch(value):
        return min(float(value), _LATEST)
    try:
        if _DATE.match(value):
            day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
            return min(day.timestamp() + (86_400 if end else 0), _LATEST)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return min(moment.timestamp(), _LATEST)
    except (ValueError, OverflowError):
        raise bad_request(f"Invalid value for '{param}': {shown(value)}. Use YYYY-MM-DD, an ISO 8601 time or epoch"
                          " seconds.", param=param) from None


def check_group(value: str | None, allowed: tuple[str, ...] = GROUPS, default: str = "day") -> str:
    group = value or default
    if group not in allowed:
        raise bad_request(f"Invalid value for 'group_by': {shown(group)}. Supported values are: "
                          + ", ".join(f"'{g}'" for g in allowed) + ".", param="group_by")
    return group


def _empty() -> dict:
    return {"requests": 0, "videos": 0, "video_seconds": 0, "cost_usd": 0.0, "resubmitted": 0}


def columns(group: str, per_team: bool = False) -> tuple[str, ...]:
    """The grouping columns of a report: the team first where a report spans teams."""
    return ("team", group) if per_team and group != "team" else (group,)


def summarize_groups(groups: Iterable[tuple], group: str, *, per_team: bool = False) -> tuple[list[dict], dict]:
    """A report and its total from rows the database already grouped: (group values…, requests, videos, video
    seconds, USD, resubmitted), the group values being those of `columns(group, per_team)`. `resubmitted` counts
    the requests whose job was sent again after a create whose answer was lost (each may have been paid twice)."""
    names = columns(group, per_team)
    data, total = [], _empty()
    for row in groups:
        keys, (requests, videos, seconds, usd, resubmitted) = row[:len(names)], row[len(names):]
        values = {"requests": int(requests or 0), "videos": int(videos or 0), "video_seconds": int(seconds or 0),
                  "cost_usd": round(float(usd or 0.0), 6), "resubmitted": int(resubmitted or 0)}
        data.append({**dict(zip(names, keys)), **values})
        for field, value in values.items():
            total[field] += value
    total["cost_usd"] = round(total["cost_usd"], 6)
    return data, total


async def usage_report(db, team: str | None, since: float | None, until: float | None,
                       group: str, *, per_team: bool = False) -> tuple[list[dict], dict]:
    """A usage report summed by the database (a large ledger is never loaded into the gateway)."""
    rows = await db.usage_groups(team, since, until, group, per_team=per_team and group != "team")
    return summarize_groups(rows, group, per_team=per_team)


def to_csv(data: list[dict], group: str, per_team: bool = False) -> str:
    return "".join(csv_lines(data, group, per_team))


def csv_lines(data: list[dict], group: str, per_team: bool = False) -> Iterator[str]:
    names = columns(group, per_team)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*names, "requests", "videos", "video_seconds", "cost_usd", "resubmitted"])
    for row in data:
        writer.writerow([*(row[n] for n in names), row["requests"], row["videos"], row["video_seconds"],
                         f"{row['cost_usd']:.6f}", row["resubmitted"]])
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


def to_table(data: list[dict], total: dict, group: str, per_team: bool = False) -> str:
    names = columns(group, per_team)
    header = [*names, "requests", "videos", "video_seconds", "cost_usd", "resubmitted"]
    lines = [[*(str(r[n]) for n in names), str(r["requests"]), str(r["videos"]), str(r["video_seconds"]),
              f"{r['cost_usd']:.2f}", str(r["resubmitted"])] for r in data]
    lines.append(["TOTAL", *([""] * (len(names) - 1)), str(total["requests"]), str(total["videos"]),
                  str(total["video_seconds"]), f"{total['cost_usd']:.2f}", str(total["resubmitted"])])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i < len(names) else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), *(fmt.format(*line) for line in lines)])
