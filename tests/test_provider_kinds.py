"""What every provider kind does alike, end to end through the `openai` SDK against the kind's fake: one test per
behaviour, run for each kind, with what differs between the providers (what they are sent, where they are polled,
what they answer) in `EXPECT`. What only one provider does is tested in its own module (tests/test_gemini.py, …)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.providers import KINDS, calls, jobs, key_states, sdk, start
from tests.support import finished_video
from tests.test_chat import PROMPT, assert_playable_mp4
from tests.test_videos_api import PNG

SCENE = PROMPT[0]["content"]


@dataclass(frozen=True)
class Expect:
    recorded: Callable[[Any], dict]  # where the fake keeps what a job was asked for, besides its prompt
    chat_input: dict  # what it was asked for by the default chat (a 4 s 720x1280 video of SCENE)
    hd_input: dict  # the part that says a 1920x1080 video of 8 s
    create: tuple[str, int]  # the create's path and the fake's status for it
    status_path: str  # where the gateway reads a job's state ({job} is the fake's job)
    running_status: int  # the HTTP status of a state read while the job runs
    fetches: tuple[tuple[str, int, bool], ...]  # how the video is fetched: (path, status, with the key)
    refusal_says: str
    failure: tuple[str, str]  # a failed job's error: code, and what its message says
    flaky: dict  # how to make the fake fail reads of the job now and then: keys=... or prompt=...
    flaky_status: int  # the status of such a read
    size_refused: tuple[str, str]  # a size the model cannot make, and what the 400 says it can
    image: tuple[str, str] | None = None  # the image-to-video model and where the image goes, by default
    provider_progress: bool = False  # a running job reports the provider's own figure, not an estimate
    unknown_param_says: str | None = None  # an upstream_params field the provider does not know: its error


GEMINI, OPENROUTER, FAL, REPLICATE, RUNWAY = (KINDS[k].model for k in
                                              ("gemini", "openrouter", "fal", "replicate", "runway"))
FLAKY_KEY = {"keys": ("sk-flakyread-a",)}  # every other read answers 502

EXPECT = {
    "gemini": Expect(
        recorded=lambda job: job.parameters,
        # the SDK's shape: numbers stay numbers, the model's upstream_params ride along, the request's mapping wins
        chat_input={"negativePrompt": "blurry", "personGeneration": "allow_adult", "sampleCount": 1,
                    "durationSeconds": 4, "aspectRatio": "9:16", "resolution": "720p"},
        hd_input={"aspectRatio": "16:9", "resolution": "1080p", "durationSeconds": 8},
        create=(f"/v1beta/models/{GEMINI}:predictLongRunning", 200),
        status_path="/v1beta/{job.name}",
        running_status=200,
        # the file link needs the key and answers a redirect, which the gateway follows; the client never sees it
        fetches=(("/v1beta/files/", 302, True), ("/files/veo/", 200, False)),
        refusal_says="You will not be charged",  # an operation done with its samples filtered out
        failure=("internal", "internal error"),
        flaky=FLAKY_KEY, flaky_status=502,
        size_refused=("1024x1792", "1280x720, 720x1280, 1920x1080, 1080x1920"),
        image=(KINDS["gemini"].models["upstream_model_image"], "bytesBase64Encoded"),
    ),
    "openrouter": Expect(
        recorded=lambda job: job.body,
        chat_input={"generate_audio": False, "seed": 7, "model": OPENROUTER, "prompt": SCENE, "duration": 4,
                    "aspect_ratio": "9:16", "resolution": "720p"},
        hd_input={"aspect_ratio": "16:9", "resolution": "1080p", "duration": 8},
        create=("/api/v1/videos", 202),
        status_path="/api/v1/videos/{job.id}",  # the relative polling_url, resolved against the origin
        running_status=200,
        fetches=(("/api/v1/videos/{job.id}/content", 200, True),),  # the content wants the key
        refusal_says="Content policy violation",
        failure=("upstream_error", "Provider returned error"),
        flaky=FLAKY_KEY, flaky_status=502,
        size_refused=("1024x1024", "aspect ratios 16:9, 9:16 at 720p, 1080p"),  # from its published capabilities
        image=(KINDS["openrouter"].models["upstream_model_image"], "first_frame"),
    ),
    "fal": Expect(
        recorded=lambda job: job.input,
        chat_input={"generate_audio": False, "negative_prompt": "blurry", "prompt": SCENE, "duration": "4s",
                    "aspect_ratio": "9:16", "resolution": "720p"},
        hd_input={"duration": "8s", "aspect_ratio": "16:9", "resolution": "1080p"},
        create=(f"/{FAL}", 200),
        # polled at the URLs fal returned, which name only {owner}/{app}; 202 until done, then 200
        status_path="/fal-ai/veo3.1/requests/{job.id}/status",
        running_status=202,
        fetches=(("/files/fal/", 200, False),),
        refusal_says="flagged",
        failure=("internal_server_error", "Internal server error"),
        flaky=FLAKY_KEY, flaky_status=502,
        size_refused=("1024x1792", "aspect ratios 16:9, 9:16 at 720p, 1080p, 4k"),
        image=(FAL + "/image-to-video", "image_url"),
        provider_progress=True,
        unknown_param_says="extra fields not permitted",
    ),
    "replicate": Expect(
        recorded=lambda job: job.input,
        chat_input={"generate_audio": False, "prompt": SCENE, "duration": 4, "aspect_ratio": "9:16",
                    "resolution": "720p"},
        hd_input={"duration": 8, "aspect_ratio": "16:9", "resolution": "1080p"},
        create=(f"/v1/models/{REPLICATE}/predictions", 201),
        status_path="/v1/predictions/{job.id}",
        running_status=200,
        fetches=(("/files/replicate/", 200, False),),
        refusal_says="NSFW",
        failure=("upstream_error", "CUDA"),
        # a flaky key would fail the list read after a failed create too: the fake fails polls by prompt instead
        flaky={"prompt": "[flakypoll] a lighthouse"}, flaky_status=503,
        size_refused=("1024x1792", "aspect ratios 16:9, 9:16 at 720p, 1080p"),
        provider_progress=True,
        unknown_param_says="not allowed",
    ),
    "runway": Expect(
        recorded=lambda job: job.body,
        chat_input={"audio": False, "model": RUNWAY, "promptText": SCENE, "ratio": "720:1280", "duration": 4},
        hd_input={"ratio": "1920:1080", "duration": 8},
        create=("/v1/text_to_video", 200),
        status_path="/v1/tasks/{job.id}",
        running_status=200,
        fetches=(("/files/runway/", 200, False),),
        refusal_says="SAFETY.INPUT.TEXT",
        failure=("upstream_error", "INTERNAL.BAD_OUTPUT"),
        flaky=FLAKY_KEY, flaky_status=502,
        size_refused=("1024x1792", "1280x720, 720x1280, 1080x1920, 1920x1080"),
        provider_progress=True,
        unknown_param_says="Unrecognized key",
    ),
}


def polled(sim, kind: str, job) -> list:
    """The reads of `job`'s state, oldest first."""
    return calls(sim, method="GET", path=EXPECT[kind].status_path.format(job=job))


@pytest.mark.parametrize("kind", EXPECT)
def test_chat_without_streaming(start_simulator, start_gateway, kind):
    expect = EXPECT[kind]
    sim, gateway = start(start_simulator, start_gateway, kind)
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT)
    video = completion.model_extra["video"]
    assert video["status"] == "completed"
    assert_playable_mp4(httpx.get(video["url"]).content)
    [job] = jobs(sim)
    assert (job.model, job.prompt) == (KINDS[kind].model, SCENE)
    assert expect.recorded(job) == expect.chat_input
    [create] = calls(sim, method="POST")
    assert (create.path, create.status, create.key) == (*expect.create, "sk-good-1")
    polls = polled(sim, kind, job)
    assert polls and all(c.key == "sk-good-1" for c in polls)
    statuses = [c.status for c in polls]
    assert statuses[0] == expect.running_status and statuses[-1] == 200
    assert set(statuses) <= {expect.running_status, 200}


@pytest.mark.parametrize("kind", EXPECT)
def test_chat_stream_follows_the_job_to_the_video(start_simulator, start_gateway, kind):
    sim, gateway = start(start_simulator, start_gateway, kind)
    chunks = list(sdk(gateway).chat.completions.create(model="sora-2", messages=PROMPT, stream=True))
    videos = [c.model_extra["video"] for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert videos[-1]["status"] == "completed" and chunks[-1].choices[0].finish_reason == "stop"
    assert (videos[-1]["progress"], videos[-1]["progress_estimated"], videos[-1]["queue_position"]) == (
        100, False, None)
    running = [v for v in videos if v["status"] == "in_progress"]
    assert running
    if EXPECT[kind].provider_progress:  # the provider's own figures, never marked as estimates
        assert not any(v["progress_estimated"] for v in videos) and "about" not in text
    else:
        assert all(v["progress_estimated"] for v in running)
    assert_playable_mp4(httpx.get(videos[-1]["url"]).content)


@pytest.mark.parametrize("kind", EXPECT)
def test_videos_api_create_poll_and_download(start_simulator, start_gateway, kind):
    expect = EXPECT[kind]
    sim, gateway = start(start_simulator, start_gateway, kind)
    client = sdk(gateway)
    created = client.videos.create(model="sora-2", prompt="a slow sunrise", size="1920x1080", seconds="8")
    done = client.videos.poll(created.id, poll_interval_ms=50)
    assert (done.status, done.size, done.seconds) == ("completed", "1920x1080", "8")
    [job] = jobs(sim)
    # the video was copied before the job completed: the gateway serves it, whatever the provider deletes later
    for path, status, keyed in expect.fetches:
        fetched = calls(sim, path=path.format(job=job))
        assert [c.status for c in fetched] == [status], path
        assert not keyed or fetched[0].key == "sk-good-1"
    assert_playable_mp4(client.videos.download_content(done.id).read())
    assert {k: expect.recorded(job)[k] for k in expect.hd_input} == expect.hd_input


@pytest.mark.parametrize("kind", [k for k in EXPECT if EXPECT[k].image])
def test_image_to_video_sends_the_image_to_the_image_model(start_simulator, start_gateway, kind):
    model, source = EXPECT[kind].image
    sim, gateway = start(start_simulator, start_gateway, kind)
    client = sdk(gateway)
    created = client.videos.create(model="sora-2", prompt="animate this", size="1280x720",
                                   input_reference=("ref.png", PNG, "image/png"))
    assert client.videos.poll(created.id, poll_interval_ms=50).status == "completed"
    [job] = jobs(sim)
    assert job.model == model
    assert (job.reference.source, job.reference.mime, job.reference.size) == (source, "image/png", len(PNG))


@pytest.mark.parametrize("kind", EXPECT)
def test_a_refused_job_is_a_refusal_on_the_same_key(start_simulator, start_gateway, kind):
    sim, gateway = start(start_simulator, start_gateway, kind, keys=("sk-good-1", "sk-good-2"))
    chunks = list(sdk(gateway).chat.completions.create(
        model="sora-2", stream=True, messages=[{"role": "user", "content": "[refuse] a forbidden scene"}]))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    refused = finished_video(sdk(gateway), chunks[-1].model_extra["video"]["id"])
    assert refused.status == "failed" and refused.error.code == "content_policy_violation"
    assert EXPECT[kind].refusal_says in refused.error.message
    assert len(calls(sim, method="POST")) == 1  # never tried again, on this key or another
    assert key_states(gateway) == {"healthy"}


@pytest.mark.parametrize("kind", EXPECT)
def test_a_failed_job_fails_the_video(start_simulator, start_gateway, kind):
    code, says = EXPECT[kind].failure
    sim, gateway = start(start_simulator, start_gateway, kind)
    created = sdk(gateway).videos.create(model="sora-2", prompt="[fail] a lighthouse")
    failed = finished_video(sdk(gateway), created.id)
    assert failed.status == "failed" and failed.error.code == code and says in failed.error.message


@pytest.mark.parametrize("kind", EXPECT)
def test_a_rate_limited_key_rests_and_the_next_key_serves(start_simulator, start_gateway, kind):
    sim, gateway = start(start_simulator, start_gateway, kind, keys=("sk-429-a", "sk-good-b"))
    for i in range(2):
        completion = sdk(gateway).chat.completions.create(
            model="sora-2", messages=[{"role": "user", "content": f"scene {i}"}])
        assert completion.model_extra["video"]["status"] == "completed"
    assert len(calls(sim, key="sk-429-a")) == 1  # told to wait a minute (Retry-After, Google's RetryInfo)
    assert key_states(gateway) == {"cooling", "healthy"}


@pytest.mark.parametrize("kind", EXPECT)
def test_server_errors_while_polling_are_retried(start_simulator, start_gateway, kind):
    expect = EXPECT[kind]
    sim, gateway = start(start_simulator, start_gateway, kind, keys=expect.flaky.get("keys", ("sk-good-1",)))
    completion = sdk(gateway).chat.completions.create(
        model="sora-2", messages=[{"role": "user", "content": expect.flaky.get("prompt", SCENE)}])
    assert completion.model_extra["video"]["status"] == "completed"
    [job] = jobs(sim)
    assert expect.flaky_status in [c.status for c in polled(sim, kind, job)]


@pytest.mark.parametrize("kind, extra, param, says", [
    case for kind, expect in EXPECT.items() for case in (
        (kind, {"size": expect.size_refused[0]}, "size", expect.size_refused[1]),
        (kind, {"seconds": "12"}, "seconds", "4, 6, 8 seconds"))
])
def test_what_the_model_cannot_make_is_a_400_that_says_what_it_can(start_simulator, start_gateway, kind, extra,
                                                                   param, says):
    sim, gateway = start(start_simulator, start_gateway, kind)
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="a lighthouse", **extra)
    assert err.value.param == param and says in err.value.message
    assert not calls(sim, method="POST")


@pytest.mark.parametrize("kind", [k for k in EXPECT if EXPECT[k].unknown_param_says])
def test_a_field_the_provider_does_not_know_is_a_400_that_names_it(start_simulator, start_gateway, kind):
    sim, gateway = start(start_simulator, start_gateway, kind, upstream_params={"fps": 24})
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).videos.create(model="sora-2", prompt="a lighthouse")
    assert err.value.param == "fps" and EXPECT[kind].unknown_param_says in err.value.message
