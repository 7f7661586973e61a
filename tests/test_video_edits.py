"""Edits and extensions of finished videos, through the real openai SDK against the simulator."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.support import ADMIN_KEY, BETA_KEY, wait_until
from tests.test_chat import assert_playable_mp4, client
from tests.test_videos_api import settled, sim_jobs


def by_id(video_id: str) -> dict:
    """`video={"id": …}` as the SDK can send it: its file extraction refuses a dict at `video`, so the reference
    goes in extra_body (the request is the same multipart form, `video[id]=…`)."""
    return {"video": openai.omit, "extra_body": {"video": {"id": video_id}}}


def mp4(gateway, video_id: str) -> bytes:
    return client(gateway).videos.download_content(video_id).read()


def ledger_cost(gateway, job_id: str) -> float:
    rows = gateway.app.state.gateway.db.conn.execute(
        "SELECT cost_usd FROM ledger WHERE job_id = ? AND outcome = 'completed'", (job_id,)).fetchall()
    return sum(r[0] for r in rows)


def test_edit_a_finished_video_by_id_then_poll_download_and_list(gateway, simulator):
    sdk = client(gateway)
    source = sdk.videos.create_and_poll(model="sora-2", prompt="a lighthouse at dawn", seconds="8",
                                        size="1280x720")
    edit = sdk.videos.edit(prompt="make it snow", **by_id(source.id))
    assert edit.id.startswith("video_") and edit.id != source.id and edit.status == "queued"
    done = sdk.videos.poll(edit.id)
    assert (done.status, done.seconds, done.size, done.prompt) == ("completed", "8", "1280x720", "make it snow")
    assert_playable_mp4(mp4(gateway, edit.id))
    assert [v.id for v in sdk.videos.list()][:2] == [edit.id, source.id]
    upstream_source, upstream_edit = sim_jobs(simulator)
    assert upstream_edit.operation == "edit" and upstream_edit.key == upstream_source.key
    assert (upstream_edit.source.source, upstream_edit.source.value) == ("video_id", upstream_source.id)
    assert upstream_source.id not in str(done.model_dump())  # the upstream's ids stay upstream
    wait_until(lambda: settled(gateway))
    assert ledger_cost(gateway, edit.id) == pytest.approx(0.8)


def test_extend_a_finished_video_priced_by_its_own_seconds(gateway, simulator):
    sdk = client(gateway)
    source = sdk.videos.create_and_poll(model="sora-2", prompt="a kite over dunes", seconds="4")
    extension = sdk.videos.extend(prompt="the kite climbs into the clouds", seconds="8", **by_id(source.id))
    done = sdk.videos.poll(extension.id)
    assert done.status == "completed" and done.seconds == "12"  # the stitched length, as OpenAI reports it
    assert_playable_mp4(mp4(gateway, extension.id))
    upstream = sim_jobs(simulator)[-1]
    assert upstream.operation == "extension" and upstream.seconds == "12" and upstream.source.value
    wait_until(lambda: settled(gateway))
    assert ledger_cost(gateway, extension.id) == pytest.approx(0.8)  # 8 s at $0.10, not 12
    usage = httpx.get(gateway.url + "/admin/usage?group_by=model",
                      headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert usage["total"]["video_seconds"] == 12  # 4 s made, then 8 s added
    twenty = sdk.videos.extend(prompt="and lands", seconds="20", **by_id(done.id))
    assert sdk.videos.poll(twenty.id).seconds == "32"
    with pytest.raises(openai.BadRequestError) as err:
        sdk.videos.extend(prompt="longer", seconds="10", **by_id(source.id))
    assert err.value.param == "seconds" and "'16', '20'" in err.value.message


def test_edit_and_extend_an_uploaded_mp4(gateway, simulator):
    sdk = client(gateway)
    clip = mp4(gateway, sdk.videos.create_and_poll(model="sora-2", prompt="a tram in the rain").id)
    edit = sdk.videos.poll(sdk.videos.edit(prompt="paint it red", video=("tram.mp4", clip, "video/mp4")).id)
    assert edit.status == "completed" and edit.model == "sora-2"
    extension = sdk.videos.poll(sdk.videos.extend(prompt="it drives away", seconds="4",
                                                  video=("tram.mp4", clip, "video/mp4")).id)
    assert extension.status == "completed" and extension.seconds == "4"
    edited, extended = sim_jobs(simulator)[-2:]
    assert (edited.operation, edited.source.source, edited.source.size) == ("edit", "file", len(clip))
    assert (extended.operation, extended.source.source) == ("extension", "file")
    with pytest.raises(openai.BadRequestError) as err:
        sdk.videos.edit(prompt="paint it red", video=("tram.png", b"\x89PNG\r\n\x1a\nnot a video", "image/png"))
    assert err.value.param == "video" and "MP4" in err.value.message


def test_another_teams_video_or_an_unknown_id_as_a_source_is_404(gateway, simulator):
    theirs = client(gateway, BETA_KEY).videos.create_and_poll(model="sora-2", prompt="beta's own harbour")
    sdk = client(gateway)
    for video_id in (theirs.id, "video_" + "0" * 32):
        with pytest.raises(openai.NotFoundError):
            sdk.videos.edit(prompt="mine now", **by_id(video_id))
        with pytest.raises(openai.NotFoundError):
            sdk.videos.extend(prompt="mine now", seconds="4", **by_id(video_id))
    assert [j.operation for j in sim_jobs(simulator)] == ["create"]
    with pytest.raises(openai.BadRequestError) as err:
        sdk.videos.edit(prompt="nothing to edit", video=openai.omit, extra_body={"video": {}})
    assert err.value.param == "video"


def test_a_source_that_is_not_finished_is_refused(start_simulator, start_gateway):
    gateway = start_gateway(start_simulator(duration_s=30))
    sdk = client(gateway)
    running = sdk.videos.create(model="sora-2", prompt="a very slow sunrise")
    with pytest.raises(openai.BadRequestError) as err:
        sdk.videos.extend(prompt="longer", seconds="4", **by_id(running.id))
    assert err.value.code == "video_not_ready" and "completed" in err.value.message


def test_edits_and_extensions_share_the_cache(gateway, simulator):
    sdk = client(gateway)
    source = sdk.videos.create_and_poll(model="sora-2", prompt="a paper boat")
    first = sdk.videos.poll(sdk.videos.edit(prompt="at night", **by_id(source.id)).id)
    wait_until(lambda: settled(gateway))
    again = sdk.videos.with_raw_response.edit(prompt="at night", **by_id(source.id))
    assert again.headers["x-cache"] == "hit" and again.parse().id == first.id
    other = sdk.videos.with_raw_response.extend(prompt="at night", seconds="4", **by_id(source.id))
    assert other.headers["x-cache"] == "miss"  # an extension is not the edit of the same words
    assert len(sim_jobs(simulator)) == 3


def test_a_chat_follow_up_extends_the_conversations_video(gateway, simulator):
    sdk = client(gateway)
    history = [{"role": "user", "content": "a heron on a misty lake"}]
    first = sdk.chat.completions.create(model="sora-2", messages=history)
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "it takes off and flies away"}]
    second = sdk.chat.completions.create(model="sora-2", messages=history, extra_body={"extend_seconds": 8})
    assert second.model_extra["video"]["status"] == "completed"
    assert second.usage.model_extra["cost_usd"] == pytest.approx(0.8)
    video = sdk.videos.retrieve(second.model_extra["video"]["id"])
    assert video.seconds == "12" and video.remixed_from_video_id is None
    upstream_first, upstream_second = sim_jobs(simulator)
    assert upstream_second.operation == "extension" and upstream_second.source.value == upstream_first.id
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "a new start"}],
                                    extra_body={"extend_seconds": 8})
    assert err.value.param == "extend_seconds"
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="sora-2", messages=history, extra_body={"extend_seconds": 5})
    assert err.value.param == "extend_seconds" and "'20'" in err.value.message


def test_a_streamed_extension_ends_with_its_link(gateway, simulator):
    sdk = client(gateway)
    history = [{"role": "user", "content": "a sailboat leaving the harbour"}]
    first = sdk.chat.completions.create(model="sora-2", messages=history)
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "it reaches the open sea"}]
    chunks = [c for c in sdk.chat.completions.create(model="sora-2", messages=history, stream=True,
                                                      extra_body={"extend_seconds": 4}) if c.choices]
    video = chunks[-1].model_extra["video"]
    assert video["status"] == "completed" and video["url"] in "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[0].model_extra["video"]["id"] == video["id"] != first.model_extra["video"]["id"]
    assert sdk.videos.retrieve(video["id"]).seconds == "8"
    assert sim_jobs(simulator)[-1].operation == "extension"


def test_a_model_on_a_chat_relay_cannot_edit_or_extend(start_simulator, start_gateway):
    relay = start_simulator(kind="chat", duration_s=0.3)
    gateway = start_gateway(relay, upstreams=[{
        "name": "sim", "kind": "chat", "base_url": relay.url + "/v1", "keys": ["sk-fam-a-en-1"],
        "poll_interval_s": 0.05, "timeout_s": 5, "job_timeout_s": 60, "max_retry_s": 10}])
    sdk = client(gateway)
    video = sdk.videos.create_and_poll(model="sora-2", prompt="a tram in the rain")
    clip = mp4(gateway, video.id)
    for call in (lambda: sdk.videos.edit(prompt="red", **by_id(video.id)),
                 lambda: sdk.videos.extend(prompt="on", seconds="4", **by_id(video.id)),
                 lambda: sdk.videos.edit(prompt="red", video=("tram.mp4", clip, "video/mp4"))):
        with pytest.raises(openai.BadRequestError) as err:
            call()
        assert "'sora-2'" in err.value.message and "chat" in err.value.message
        assert err.value.code == "unsupported_operation"
    assert not httpx.get(gateway.url + "/v1/usage", headers={"authorization": "Bearer " + BETA_KEY}).json()["data"]


def test_with_a_global_cache_a_video_served_to_a_team_can_be_its_source(start_simulator, start_gateway):
    gateway = start_gateway(start_simulator(), cache={"scope": "global"})
    made = client(gateway).videos.create_and_poll(model="sora-2", prompt="a shared sunrise")
    wait_until(lambda: settled(gateway))
    beta = client(gateway, BETA_KEY)
    served = beta.videos.create(model="sora-2", prompt="a shared sunrise")
    assert served.id == made.id and served.status == "completed"
    edit = beta.videos.poll(beta.videos.edit(prompt="a shared sunset", **by_id(made.id)).id)
    assert edit.status == "completed" and beta.videos.retrieve(edit.id).prompt == "a shared sunset"
