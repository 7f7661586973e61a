"""The OpenAI Videos API served by the gateway, end to end through the real `openai` SDK against the simulator."""
from __future__ import annotations

import base64

import httpx
import openai
import pytest

from gateway.core.auth import hash_key
from tests.support import ALPHA_KEY, BETA_KEY, LIMITED_KEY, wait_until
from tests.test_chat import assert_playable_mp4, client

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
PNG_DATA_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


def auth(key: str = ALPHA_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def sim_jobs(simulator) -> list:
    """The simulator's jobs, in creation order."""
    return list(simulator.app.state.sim.videos.values())


def upstream_creates(simulator) -> int:
    return simulator.app.state.sim.count(method="POST", path_prefix="/v1/videos")


def stored(store, video_id: str, variant: str = "video") -> bool:
    return store.local_path(video_id, variant).is_file()


def settled(gateway) -> bool:
    """True once the gateway follows no running job."""
    return not gateway.app.state.gateway.live.followed


def test_create_and_poll_then_download_every_variant(gateway):
    sdk = client(gateway)
    video = sdk.videos.create_and_poll(model="sora-2", prompt="a red fox running through fresh snow",
                                       seconds="8", size="1280x720")
    assert video.id.startswith("video_") and video.object == "video"
    assert (video.status, video.progress, video.seconds, video.size) == ("completed", 100, "8", "1280x720")
    assert video.model == "sora-2" and video.prompt == "a red fox running through fresh snow"
    assert video.completed_at and video.expires_at and video.error is None
    assert_playable_mp4(sdk.videos.download_content(video.id).read())
    for variant in ("thumbnail", "spritesheet"):
        assert sdk.videos.download_content(video.id, variant=variant).read().startswith(b"\xff\xd8\xff")
    with pytest.raises(openai.BadRequestError) as err:
        sdk.videos.download_content(video.id, variant="poster")
    assert err.value.param == "variant"


def test_a_thumbnail_is_fetched_on_its_first_request_and_then_served_from_the_store(gateway, simulator):
    sdk = client(gateway)
    store = gateway.app.state.gateway.store
    video = sdk.videos.create_and_poll(model="sora-2", prompt="a lighthouse at dusk")
    upstream_id = sim_jobs(simulator)[-1].id
    downloads = lambda: simulator.app.state.sim.count(method="GET", path_prefix=f"/v1/videos/{upstream_id}/content")  # noqa: E731
    assert stored(store, video.id) and not stored(store, video.id, "thumbnail")
    assert downloads() == 1  # the video alone: a finished job costs no thumbnail download nobody asked for
    first = sdk.videos.download_content(video.id, variant="thumbnail").read()
    assert first.startswith(b"\xff\xd8\xff") and stored(store, video.id, "thumbnail")
    assert sdk.videos.download_content(video.id, variant="thumbnail").read() == first
    assert downloads() == 2  # fetched once, then kept


def test_thumbnails_with_video_stores_the_thumbnail_when_the_job_finishes(start_gateway, simulator):
    gateway = start_gateway(simulator, storage={"thumbnails": "with_video"})
    sdk = client(gateway)
    video = sdk.videos.create_and_poll(model="sora-2", prompt="a lighthouse at dawn")
    store = gateway.app.state.gateway.store
    assert stored(store, video.id) and stored(store, video.id, "thumbnail")
    simulator.app.state.sim.reset()  # the upstream forgets the job: the thumbnail is served from the store
    assert sdk.videos.download_content(video.id, variant="thumbnail").read().startswith(b"\xff\xd8\xff")


def test_retrieve_tells_the_poller_when_to_ask_again(start_simulator, start_gateway):
    gateway = start_gateway(start_simulator(duration_s=2))
    sdk = client(gateway)
    created = sdk.videos.create(model="sora-2", prompt="a slow sunrise")
    assert created.status == "queued" and created.progress == 0
    running = sdk.videos.with_raw_response.retrieve(created.id)
    assert running.parse().status in ("queued", "in_progress")
    assert running.headers["openai-poll-after-ms"] == "250"  # the upstream's 50 ms pace, clamped below
    done = sdk.videos.poll(created.id)
    assert done.status == "completed"
    assert "openai-poll-after-ms" not in sdk.videos.with_raw_response.retrieve(created.id).headers


def test_json_create_with_an_image_url_reference(gateway, simulator):
    body = {"model": "sora-2", "prompt": "animate this", "seconds": "4",
            "input_reference": {"image_url": PNG_DATA_URI}, "temperature": 0.3}
    response = httpx.post(gateway.url + "/v1/videos", json=body, headers=auth())
    assert response.status_code == 200, response.text
    video = response.json()
    assert video["object"] == "video" and video["status"] == "queued" and video["id"].startswith("video_")
    assert video["seconds"] == "4" and video["remixed_from_video_id"] is None
    assert response.headers["x-cache"] == "miss" and response.headers["x-request-id"]
    assert client(gateway).videos.poll(video["id"]).status == "completed"
    [job] = sim_jobs(simulator)
    assert job.reference.source == "file" and job.reference.mime == "image/png" and job.reference.size == len(PNG)


def test_multipart_create_with_an_uploaded_file_and_with_image_url(gateway, simulator):
    sdk = client(gateway)
    uploaded = sdk.videos.create(model="sora-2", prompt="animate the upload",
                                 input_reference=("ref.png", PNG, "image/png"))
    assert uploaded.status == "queued"
    # bracket keys, as the SDKs encode an {image_url} reference in a form
    fields = {"model": "sora-2", "prompt": "animate the link", "seconds": "4",
              "input_reference[image_url]": PNG_DATA_URI}
    multipart = httpx.post(gateway.url + "/v1/videos", headers=auth(),
                           files={name: (None, value) for name, value in fields.items()})
    assert multipart.status_code == 200, multipart.text
    assert multipart.request.headers["content-type"].startswith("multipart/form-data")
    urlencoded = httpx.post(gateway.url + "/v1/videos", headers=auth(), data={**fields, "prompt": "animate the form"})
    assert urlencoded.status_code == 200, urlencoded.text
    for video_id in (uploaded.id, multipart.json()["id"], urlencoded.json()["id"]):
        assert sdk.videos.poll(video_id).status == "completed"
    prompts = {job.prompt: job.reference for job in sim_jobs(simulator)}
    for prompt in ("animate the upload", "animate the link", "animate the form"):
        reference = prompts[prompt]
        assert (reference.source, reference.mime, reference.size) == ("file", "image/png", len(PNG))


def test_create_validates_like_chat(gateway, simulator):
    sdk = client(gateway)
    with pytest.raises(openai.NotFoundError) as err:
        sdk.videos.create(model="sora-9", prompt="x")
    assert err.value.code == "model_not_found" and err.value.param == "model"
    with pytest.raises(openai.PermissionDeniedError) as err:
        client(gateway, key=LIMITED_KEY).videos.create(model="sora-2", prompt="x")
    assert err.value.code == "model_not_allowed"
    with pytest.raises(openai.BadRequestError) as err:
        sdk.videos.create(model="sora-2", prompt="x", seconds="7")
    assert err.value.param == "seconds" and "'4', '8', '12'" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        sdk.videos.create(model="sora-2", prompt="x", size="1792x1024")
    assert err.value.param == "size" and "'1280x720'" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        sdk.videos.create(model="sora-2", prompt="   ")
    assert err.value.param == "prompt"
    with pytest.raises(openai.BadRequestError) as err:
        sdk.videos.create(model="sora-2", prompt="x", input_reference=("notes.txt", b"hello", "text/plain"))
    assert err.value.param == "input_reference" and "JPEG, PNG or WebP" in err.value.message
    for reference, param in [({"file_id": "file_123"}, "input_reference.file_id"),
                             ({"image_url": "http://169.254.169.254/"}, "input_reference.image_url"),
                             ("https://example.com/fox.png", "input_reference")]:
        response = httpx.post(gateway.url + "/v1/videos", headers=auth(),
                              json={"model": "sora-2", "prompt": "x", "input_reference": reference})
        assert response.status_code == 400 and response.json()["error"]["param"] == param
    response = httpx.post(gateway.url + "/v1/videos", headers=auth(), files={"input_reference": ("big.png", PNG)},
                          data={"prompt": "x", "pad": "x" * 2_100_000})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    response = httpx.post(gateway.url + "/v1/videos", headers={**auth(), "content-type": "application/json"},
                          content=b"{not json")
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError):
        client(gateway, key="sk-wrong").videos.create(model="sora-2", prompt="x")
    assert upstream_creates(simulator) == 0


def test_model_defaults_to_sora_2(gateway):
    response = httpx.post(gateway.url + "/v1/videos", json={"prompt": "no model named"}, headers=auth())
    assert response.status_code == 200 and response.json()["model"] == "sora-2"


def test_list_walks_every_page_with_exact_has_more(gateway):
    sdk = client(gateway)
    ids = [sdk.videos.create(model="sora-2", prompt=f"scene {i}").id for i in range(5)]
    newest_first = ids[::-1]
    assert [v.id for v in sdk.videos.list(limit=2)] == newest_first
    assert [v.id for v in sdk.videos.list(limit=2, order="asc")] == ids
    assert [v.id for v in sdk.videos.list()] == newest_first  # default limit 20: one page

    page = sdk.videos.list(limit=2, order="asc")
    seen = []
    while True:
        seen.append((len(page.data), page.has_more))
        assert page.last_id == page.data[-1].id
        if not page.has_next_page():
            break
        page = page.get_next_page()
    assert seen == [(2, True), (2, True), (1, False)]

    exact = sdk.videos.list(limit=5)
    assert len(exact.data) == 5 and exact.has_more is False  # a full last page is not followed by an empty one
    raw = httpx.get(gateway.url + "/v1/videos", params={"limit": 2, "after": ids[2], "order": "asc"},
                    headers=auth()).json()
    assert raw == {**raw, "object": "list", "first_id": ids[3], "last_id": ids[4], "has_more": False}
    assert [v["id"] for v in raw["data"]] == ids[3:]
    assert [v.id for v in client(gateway, key=BETA_KEY).videos.list()] == []


@pytest.mark.parametrize(("params", "param"), [
    ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": "ten"}, "limit"),
    ({"order": "sideways"}, "order"), ({"after": "video_" + "0" * 32}, "after"),
])
def test_list_rejects_bad_parameters(gateway, params, param):
    response = httpx.get(gateway.url + "/v1/videos", params=params, headers=auth())
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_remix_of_a_completed_video(gateway, simulator):
    sdk = client(gateway)
    source = sdk.videos.create_and_poll(model="sora-2", prompt="a lighthouse at dawn", seconds="8")
    remix = sdk.videos.remix(source.id, prompt="the same lighthouse in a storm")
    assert remix.id != source.id and remix.remixed_from_video_id == source.id
    assert (remix.status, remix.seconds, remix.prompt) == ("queued", "8", "the same lighthouse in a storm")
    done = sdk.videos.poll(remix.id)
    assert done.status == "completed" and done.remixed_from_video_id == source.id
    assert_playable_mp4(sdk.videos.download_content(remix.id).read())
    first, second = sim_jobs(simulator)
    assert second.remixed_from_video_id == first.id and second.key == first.key

    failed = sdk.videos.create_and_poll(model="sora-2", prompt="[fail] a broken take")
    assert failed.status == "failed" and failed.error.code
    with pytest.raises(openai.BadRequestError) as err:
        sdk.videos.remix(failed.id, prompt="try again")
    assert err.value.code == "video_not_remixable" and "failed" in err.value.message
    with pytest.raises(openai.NotFoundError):
        sdk.videos.remix("video_" + "0" * 32, prompt="nothing")


def test_a_conversation_holding_an_earlier_reply_remixes_that_video(gateway, simulator):
    sdk = client(gateway)
    history = [{"role": "user", "content": "a paper boat on a pond"}]
    first = sdk.chat.completions.create(model="sora-2", messages=history)
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "now at night, with lanterns"}]
    second = sdk.chat.completions.create(model="sora-2", messages=history)
    first_id, second_id = first.model_extra["video"]["id"], second.model_extra["video"]["id"]
    video = sdk.videos.retrieve(second_id)
    assert video.remixed_from_video_id == first_id and video.prompt == "now at night, with lanterns"
    upstream_first, upstream_second = sim_jobs(simulator)
    assert upstream_second.remixed_from_video_id == upstream_first.id


def test_chat_and_videos_api_share_jobs_and_cache(gateway, simulator):
    sdk = client(gateway)
    chat = sdk.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "a kite over dunes"}])
    chat_id = chat.model_extra["video"]["id"]
    video = sdk.videos.retrieve(chat_id)
    assert video.status == "completed" and video.prompt == "a kite over dunes"
    assert chat_id in [v.id for v in sdk.videos.list()]
    assert_playable_mp4(sdk.videos.download_content(chat_id).read())

    made_here = sdk.videos.create_and_poll(model="sora-2", prompt="a heron taking off")
    raw = sdk.chat.completions.with_raw_response.create(
        model="sora-2", messages=[{"role": "user", "content": "a heron taking off"}])
    assert raw.headers["x-cache"] == "hit"
    assert raw.parse().model_extra["video"]["id"] == made_here.id
    follow_up = sdk.chat.completions.create(model="sora-2", messages=[
        {"role": "user", "content": "a heron taking off"},
        {"role": "assistant", "content": f"Here it is: {made_here.id}"},
        {"role": "user", "content": "slower, in fog"}])
    assert sdk.videos.retrieve(follow_up.model_extra["video"]["id"]).remixed_from_video_id == made_here.id
    assert upstream_creates(simulator) == 3  # chat video, videos-API video, remix; the cache hit cost nothing


def test_delete_removes_the_files_and_hides_the_video(gateway, simulator):
    sdk = client(gateway)
    store = gateway.app.state.gateway.store
    video = sdk.videos.create_and_poll(model="sora-2", prompt="a glass of water")
    sdk.videos.download_content(video.id, variant="thumbnail").read()  # fetched, and kept, on its first request
    assert stored(store, video.id) and stored(store, video.id, "thumbnail")
    deleted = sdk.videos.delete(video.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (video.id, "video.deleted", True)
    assert not any(stored(store, video.id, variant) for variant in ("video", "thumbnail", "spritesheet"))
    with pytest.raises(openai.NotFoundError):
        sdk.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        sdk.videos.download_content(video.id)
    with pytest.raises(openai.NotFoundError):
        sdk.videos.delete(video.id)
    with pytest.raises(openai.NotFoundError):
        sdk.videos.remix(video.id, prompt="again")
    assert video.id not in [v.id for v in sdk.videos.list()]
    again = sdk.videos.with_raw_response.create(model="sora-2", prompt="a glass of water")
    assert again.headers["x-cache"] == "miss" and again.parse().id != video.id
    assert upstream_creates(simulator) == 2


def test_a_running_video_can_be_deleted_and_its_result_is_discarded(start_simulator, start_gateway):
    gateway = start_gateway(start_simulator(duration_s=1))
    sdk = client(gateway)
    store = gateway.app.state.gateway.store
    running = sdk.videos.create(model="sora-2", prompt="a falling leaf")
    assert sdk.videos.delete(running.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        sdk.videos.retrieve(running.id)
    joined_before = sdk.videos.with_raw_response.create(model="sora-2", prompt="a falling leaf")
    assert joined_before.headers["x-cache"] == "miss"  # the deleted job is no longer joinable
    wait_until(lambda: settled(gateway))
    assert not stored(store, running.id) and not stored(store, running.id, "thumbnail")
    assert running.id not in [v.id for v in sdk.videos.list()]
    assert sdk.videos.retrieve(joined_before.parse().id).status == "completed"


def test_another_team_gets_404_on_every_id(gateway):
    alpha, beta = client(gateway), client(gateway, key=BETA_KEY)
    video = alpha.videos.create_and_poll(model="sora-2", prompt="a private video")
    calls = [
        lambda: beta.videos.retrieve(video.id),
        lambda: beta.videos.download_content(video.id),
        lambda: beta.videos.download_content(video.id, variant="thumbnail"),
        lambda: beta.videos.delete(video.id),
        lambda: beta.videos.remix(video.id, prompt="mine now"),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert err.value.code == "not_found" and video.id in err.value.message
    assert [v.id for v in beta.videos.list()] == []
    response = httpx.get(gateway.url + "/v1/videos", params={"after": video.id}, headers=auth(BETA_KEY))
    assert response.status_code == 400  # another team's id is no cursor either
    assert alpha.videos.retrieve(video.id).status == "completed"


def test_quotas_apply(start_simulator, start_gateway):
    teams = [{"name": "alpha", "keys": [hash_key(ALPHA_KEY)], "quotas": {"concurrent_jobs": 1}},
             {"name": "beta", "keys": [hash_key(BETA_KEY)]}]
    gateway = start_gateway(start_simulator(duration_s=1), teams=teams)
    sdk = client(gateway)
    first = sdk.videos.create(model="sora-2", prompt="the first of two")
    with pytest.raises(openai.RateLimitError) as err:
        sdk.videos.create(model="sora-2", prompt="the second of two")
    assert err.value.status_code == 429 and int(err.value.response.headers["retry-after"]) >= 1
    assert client(gateway, key=BETA_KEY).videos.create(model="sora-2", prompt="another team").status == "queued"
    assert sdk.videos.poll(first.id).status == "completed"
    wait_until(lambda: settled(gateway))
    assert sdk.videos.create(model="sora-2", prompt="the second of two").status == "queued"


def test_cache_applies(gateway, simulator):
    sdk = client(gateway)
    first = sdk.videos.with_raw_response.create(model="sora-2", prompt="a cached comet", seconds="4")
    joined = sdk.videos.with_raw_response.create(model="sora-2", prompt="a cached comet", seconds="4")
    assert first.headers["x-cache"] == "miss" and joined.headers["x-cache"] == "joined"
    assert joined.parse().id == first.parse().id
    assert sdk.videos.poll(first.parse().id).status == "completed"
    wait_until(lambda: settled(gateway))
    hit = sdk.videos.with_raw_response.create(model="sora-2", prompt="a cached comet", seconds="4")
    assert hit.headers["x-cache"] == "hit"
    video = hit.parse()
    assert video.id == first.parse().id and video.status == "completed" and video.progress == 100
    assert upstream_creates(simulator) == 1
    fresh = sdk.videos.with_raw_response.create(model="sora-2", prompt="a cached comet", seconds="4",
                                                extra_headers={"cache-control": "no-cache"})
    assert fresh.headers["x-cache"] == "miss" and upstream_creates(simulator) == 2


def test_on_a_chat_relay_there_is_no_spritesheet_and_no_remix(start_simulator, start_gateway):
    relay = start_simulator(kind="chat", duration_s=0.3)
    gateway = start_gateway(relay, upstreams=[{
        "name": "sim", "kind": "chat", "base_url": relay.url + "/v1", "keys": ["sk-fam-a-en-1"],
        "poll_interval_s": 0.05, "timeout_s": 5, "job_timeout_s": 60, "max_retry_s": 10}])
    sdk = client(gateway)
    video = sdk.videos.create_and_poll(model="sora-2", prompt="a tram in the rain")
    assert video.status == "completed"
    assert_playable_mp4(sdk.videos.download_content(video.id).read())
    with pytest.raises(openai.NotFoundError) as err:
        sdk.videos.download_content(video.id, variant="spritesheet")
    assert err.value.param == "variant"
    with pytest.raises(openai.BadRequestError) as err:
        sdk.videos.remix(video.id, prompt="the same tram at night")
    assert err.value.code == "video_not_remixable"
