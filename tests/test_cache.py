"""The response cache and single-flight: the same video is never paid for twice."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.support import ADMIN_KEY, ALPHA_KEY, BETA_KEY, wait_until

MESSAGES = [{"role": "user", "content": "a paper boat on a rainy street"}]


def sdk(gateway, key: str = ALPHA_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def generate(gateway, key: str = ALPHA_KEY, headers: dict | None = None, messages=MESSAGES):
    raw = sdk(gateway, key).chat.completions.with_raw_response.create(
        model="sora-2", messages=messages, extra_headers=headers or {})
    return raw.headers["x-cache"], raw.parse()


def submissions(simulator) -> int:
    return simulator.app.state.sim.count(method="POST", path_prefix="/v1/videos")


def test_a_repeated_request_is_a_hit_with_one_upstream_submission(gateway, simulator):
    first_state, first = generate(gateway)
    # prompts are normalised: spacing differences still hit
    second_state, second = generate(gateway, messages=[{"role": "user", "content": " a paper  boat on a rainy street"}])
    assert (first_state, second_state) == ("miss", "hit")
    assert second.model_extra["video"]["id"] == first.model_extra["video"]["id"]
    assert httpx.get(second.model_extra["video"]["url"]).status_code == 200
    assert submissions(simulator) == 1
    usage = sdk(gateway).get("/usage", cast_to=httpx.Response).json()
    assert usage["total"] == {"requests": 2, "videos": 1, "video_seconds": 4, "cost_usd": 0.4, "resubmitted": 0}


def test_a_hit_streams_the_final_status_at_once(gateway, simulator):
    generate(gateway)
    chunks = list(sdk(gateway).chat.completions.create(model="sora-2", messages=MESSAGES, stream=True))
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, "stop"]
    assert chunks[1].choices[0].delta.content.startswith("✅ Video ready:")
    assert submissions(simulator) == 1


def test_six_concurrent_identical_requests_make_one_upstream_job(gateway, simulator):
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: generate(gateway), range(6)))
    states = sorted(state for state, _ in results)
    assert states.count("miss") == 1 and set(states) <= {"miss", "joined", "hit"}
    assert {c.model_extra["video"]["id"] for _, c in results} != set()
    assert len({c.model_extra["video"]["id"] for _, c in results}) == 1
    assert all(c.model_extra["video"]["status"] == "completed" for _, c in results)
    assert submissions(simulator) == 1


def test_joined_streams_all_get_progress_and_the_video(gateway, simulator):
    def stream(_):
        return list(sdk(gateway).chat.completions.create(model="sora-2", messages=MESSAGES, stream=True))

    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(stream, range(4)))
    assert all(run[-1].choices[0].finish_reason == "stop" for run in runs)
    # one video for all; each link is signed on its own (its expiry is in its path: streams that end in
    # different seconds get different links to the same file)
    videos = [run[-1].model_extra["video"] for run in runs]
    assert len({video["id"] for video in videos}) == 1
    assert all(video["url"].startswith(f"{gateway.url}/v1/videos/{video['id']}/content") for video in videos)
    assert all(httpx.get(video["url"]).status_code == 200 for video in videos)
    assert submissions(simulator) == 1


def test_team_scope_keeps_teams_apart_and_global_scope_shares(start_simulator, start_gateway):
    simulator = start_simulator()
    team_scoped = start_gateway(simulator)
    assert generate(team_scoped)[0] == "miss"
    assert generate(team_scoped, BETA_KEY)[0] == "miss"
    assert submissions(simulator) == 2
    shared = start_gateway(simulator, cache={"scope": "global"})
    assert generate(shared)[0] == "miss"
    state, completion = generate(shared, BETA_KEY)
    assert state == "hit" and completion.model_extra["video"]["url"]
    assert submissions(simulator) == 3


def test_no_cache_starts_a_fresh_job_and_no_store_keeps_the_result_out(gateway, simulator):
    generate(gateway)
    state, fresh = generate(gateway, headers={"Cache-Control": "no-cache"})
    assert state == "miss" and submissions(simulator) == 2
    other = [{"role": "user", "content": "a kite over the dunes"}]
    assert generate(gateway, headers={"Cache-Control": "no-store"}, messages=other)[0] == "miss"
    assert generate(gateway, messages=other)[0] == "miss"
    assert generate(gateway, messages=other)[0] == "hit"
    assert submissions(simulator) == 4


def test_a_disabled_cache_never_hits(start_simulator, start_gateway):
    simulator = start_simulator()
    gateway = start_gateway(simulator, cache={"enabled": False})
    assert [generate(gateway)[0] for _ in range(2)] == ["miss", "miss"]
    assert submissions(simulator) == 2


def test_failed_jobs_are_never_cached(gateway, simulator):
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            generate(gateway, messages=[{"role": "user", "content": "[fail] broken"}])
    assert submissions(simulator) == 2


def test_an_expired_entry_is_swept_and_generated_again(start_simulator, start_gateway):
    simulator = start_simulator()
    gateway = start_gateway(simulator, cache={"ttl_s": 1})
    _, first = generate(gateway)
    video_id = first.model_extra["video"]["id"]

    def swept() -> bool:
        try:
            sdk(gateway).videos.retrieve(video_id)
            return False
        except openai.NotFoundError:
            return True

    wait_until(swept, timeout=10)
    assert httpx.get(first.model_extra["video"]["url"]).status_code == 404
    state, second = generate(gateway)
    assert state == "miss" and second.model_extra["video"]["id"] != video_id
    assert submissions(simulator) == 2


def test_content_responses_carry_etag_length_and_ranges(gateway):
    _, completion = generate(gateway)
    response = httpx.get(completion.model_extra["video"]["url"])
    assert response.headers["etag"] and response.headers["accept-ranges"] == "bytes"
    assert int(response.headers["content-length"]) == len(response.content) > 0
    base, exp, sig = re.fullmatch(r"(.*)/(\d+)\.([\w-]+)\.mp4", completion.model_extra["video"]["url"]).groups()
    thumb = httpx.get(f"{base}?variant=thumbnail&exp={exp}&sig={sig}")
    assert thumb.status_code == 403  # a link is signed for one variant only
    with_key = httpx.get(f"{gateway.url}/v1/videos/{completion.model_extra['video']['id']}/content",
                         params={"variant": "thumbnail"}, headers={"authorization": f"Bearer {ALPHA_KEY}"})
    assert with_key.status_code == 200 and with_key.content[:3] == b"\xff\xd8\xff"
    store = httpx.get(gateway.url + "/admin/store", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert store["bytes"] >= len(response.content) + len(with_key.content)
