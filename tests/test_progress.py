"""Progress: the provider's own where it gives one (fal's queue position and logs, Replicate's logs, Runway's
fraction), the gateway's estimate otherwise, marked as such in the `video` object and the stream's lines. Which of
the two every kind's stream shows is checked by tests/test_provider_kinds.py."""
from __future__ import annotations

import re
import threading

import pytest

from gateway.core.estimate import ESTIMATE_CAP, JobDurations
from gateway.core.feed import JobHandle
from gateway.core.formats import FORMATS
from gateway.core.progress import ProgressLines
from gateway.core.records import JobRecord
from gateway.upstreams.log_progress import newest_percent, percent_in
from gateway.upstreams.relay_families import FAMILY_A, FAMILY_C
from tests.providers import sdk, start
from tests.support import finished_video, wait_until
from tests.test_chat import PROMPT


def veo_gateway(start_simulator, start_gateway):
    """Veo runs for 0.6 s, polled every 0.05 s: long enough for the estimate to move between polls."""
    return start(start_simulator, start_gateway, "gemini", simulator_settings={"duration_s": 0.6},
                 sizes=["720x1280"], seconds_allowed=[4])


def stream(gateway, prompt: str = PROMPT[0]["content"]) -> tuple[list[dict], str]:
    """The `video` objects of a chat stream's chunks, and the text it wrote."""
    chunks = list(sdk(gateway).chat.completions.create(
        model="sora-2", stream=True, messages=[{"role": "user", "content": prompt}]))
    videos = [c.model_extra["video"] for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return videos, text


def running(videos: list[dict]) -> list[dict]:
    return [v for v in videos if v["status"] == "in_progress"]


def assert_done(video: dict) -> None:
    assert (video["status"], video["progress"], video["progress_estimated"], video["queue_position"]) == (
        "completed", 100, False, None)


# -- through the SDK, against the providers' fakes ----------------------------------------------------------


def test_fal_shows_its_queue_position_then_the_progress_its_logs_tell(start_simulator, start_gateway):
    sim, gateway = start(start_simulator, start_gateway, "fal")
    videos, text = stream(gateway)
    positions = [v["queue_position"] for v in videos if v["queue_position"] is not None]
    assert positions and positions == sorted(positions, reverse=True)  # it only moves up the line
    assert all(v["status"] == "queued" for v in videos if v["queue_position"] is not None)
    assert re.search(r"> ⏳ Queued \(position \d+\)", text)
    # the logs come only with ?logs=1: their step counts are the figures, never marked as estimates
    assert running(videos) and not any(v["progress_estimated"] for v in videos)
    assert max(v["progress"] for v in running(videos)) > 0
    assert "Generating: " in text and "about" not in text
    assert_done(videos[-1])


def test_fal_logs_without_a_figure_get_an_estimate(start_simulator, start_gateway):
    sim, gateway = start(start_simulator, start_gateway, "fal")
    videos, text = stream(gateway, "[quietlogs] a lighthouse")
    assert running(videos) and all(v["progress_estimated"] for v in running(videos))
    assert "Generating: about " in text
    assert_done(videos[-1])


def test_a_gemini_estimate_is_marked_rises_and_stays_below_100_until_the_video_is_there(start_simulator,
                                                                                         start_gateway):
    sim, gateway = veo_gateway(start_simulator, start_gateway)
    state, client = sim.app.state.sim, sdk(gateway)
    state.content_gate = gate = threading.Event()  # the operation is done, its video not stored yet
    created = client.videos.create(model="sora-2", prompt="a red fox in the snow")
    wait_until(lambda: state.content_held)
    waiting = client.videos.retrieve(created.id)
    assert waiting.status == "in_progress" and waiting.progress < 100
    assert waiting.model_extra["progress_estimated"] is True and waiting.model_extra["queue_position"] is None
    gate.set()
    done = finished_video(client, created.id)
    assert (done.status, done.progress, done.model_extra["progress_estimated"]) == ("completed", 100, False)

    # the first job says how long this model takes: the next one's estimate climbs through the run
    videos, text = stream(gateway, "a fox at night")
    figures = [v["progress"] for v in running(videos)]
    assert all(v["progress_estimated"] for v in running(videos))
    assert figures == sorted(figures) and len(set(figures)) >= 2 and figures[-1] <= ESTIMATE_CAP
    lines = re.findall(r"> 🎬 Generating: [^\n]*", text)
    assert lines and all(line.startswith("> 🎬 Generating: about ") for line in lines)
    assert_done(videos[-1])


# -- the pieces ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, percent", [
    ("Sampling step 21/50", 42.0),
    ("Generating: 42%", 42.0),
    (" 50%|█████     | 25/50 [00:10<00:10,  2.50it/s]", 50.0),
    ("Loading 3 of 4 shards\n 10%|█         | 5/50 [00:02<00:18]\n 12%|█▏        | 6/50 [00:02<00:17]", 12.0),
    ("frame 30/120", 25.0),
    ("written 2026/12/01, seed 1234", None),
    ("150% zoom", None),
    ("Generating video", None),
])
def test_a_figure_in_a_log_is_read(text, percent):
    assert percent_in(text) == percent


def test_the_newest_log_line_with_a_figure_wins():
    assert newest_percent(["step 10/50", "step 20/50", "saving frames"]) == 40.0
    assert newest_percent(["Loading the model"]) is None


def test_an_estimate_follows_recent_jobs_of_the_model_and_never_claims_done():
    durations = JobDurations()
    first = durations.estimate("sim", "veo", 4, 30.0)
    assert 0 < first < ESTIMATE_CAP  # nothing finished yet: a typical time
    durations.finished("sim", "veo", 4, 8.0)
    durations.finished("sim", "veo", 4, 12.0)
    assert durations.expected_s("sim", "veo", 4) == 10.0 and durations.expected_s("sim", "veo", 8) == 20.0
    assert durations.estimate("sim", "veo", 4, 5.0) == 50.0
    assert durations.estimate("sim", "veo", 4, 60.0) == ESTIMATE_CAP
    assert durations.expected_s("sim", "other", 4) != 10.0  # per upstream model


def test_queued_lines_name_the_position_once_where_the_preset_has_room():
    markdown = ProgressLines(FORMATS["markdown"], 10)
    written = [markdown.line("submitting", 0.0), markdown.line("queued", 0.0, queue_position=2),
               markdown.line("queued", 0.0, queue_position=1), markdown.line("in_progress", 12.0, True)]
    assert written == ["> ⏳ Queued\n\n", "> ⏳ Queued (position 2)\n\n", None, "> 🎬 Generating: about 12%\n\n"]
    zh = ProgressLines(FORMATS["zh"], 10)
    assert [zh.line("queued", 0.0, queue_position=2), zh.line("queued", 0.0, queue_position=1)] == [
        FORMATS["zh"].queued, None]


def test_estimates_in_the_zh_and_reasoning_presets_still_parse_as_family_a_and_c():
    zh, reasoning = FORMATS["zh"].estimate(42.0), FORMATS["reasoning"].estimate(42.0)
    assert re.search(r"进度：([\d.]+)%", zh).group(1) == "42.0"  # what Family-A clients match
    assert FAMILY_A.progress.search(zh).group("pct") == "42.0"
    assert "42% (running)" in reasoning and FAMILY_C.progress.search(reasoning).group("pct") == "42"


async def test_a_copy_without_the_new_fields_still_renders_and_an_older_figure_keeps_its_mark():
    record = JobRecord(id="video_a", team="alpha", key_id="k", model="sora-2", upstream_model="sora-2",
                       prompt="p", size="720x1280", seconds=4, created_at=1.0, status="in_progress",
                       progress=40.0, progress_estimated=True)
    handle = JobHandle(record)
    assert handle.adopt({"status": "in_progress", "progress": 50.0}) is True  # an older instance's message
    assert (record.progress, record.progress_estimated) == (50.0, True)
    assert handle.adopt({"status": "in_progress", "progress": 45.0, "progress_estimated": False}) is False
    assert (record.progress, record.progress_estimated) == (50.0, True)
