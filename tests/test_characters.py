"""Characters, through the real openai SDK against the simulator: made lazily on the upstream key a job runs on."""
from __future__ import annotations

import httpx
import openai
import pytest

from gateway.simulator.assets import Assets
from tests.support import BETA_KEY, upstream_table
from tests.test_chat import client
from tests.test_videos_api import sim_jobs

CLIP = Assets.load().variant("video").data


def sim_characters(simulator) -> list:
    return list(simulator.app.state.sim.characters.values())


def with_characters(*ids: str) -> dict:
    return {"extra_body": {"characters": [{"id": i} for i in ids]}}


def make(sdk: openai.OpenAI, name: str = "Mossy"):
    return sdk.videos.create_character(name=name, video=("mossy.mp4", CLIP, "video/mp4"))


def test_create_and_get_a_character_another_team_gets_404(gateway, simulator):
    sdk = client(gateway)
    character = make(sdk)
    assert character.id.startswith("char_") and character.name == "Mossy" and character.created_at > 0
    fetched = sdk.videos.get_character(character.id)
    assert (fetched.id, fetched.name, fetched.created_at) == (character.id, "Mossy", character.created_at)
    with pytest.raises(openai.NotFoundError):
        client(gateway, BETA_KEY).videos.get_character(character.id)
    with pytest.raises(openai.NotFoundError):
        sdk.videos.get_character("char_" + "0" * 32)
    listed = sdk.get("/videos/characters", cast_to=httpx.Response).json()
    assert [c["id"] for c in listed["data"]] == [character.id]
    assert client(gateway, BETA_KEY).get("/videos/characters", cast_to=httpx.Response).json()["data"] == []
    assert sim_characters(simulator) == []  # made upstream only when a job uses it
    with pytest.raises(openai.BadRequestError) as err:
        sdk.videos.create_character(name="Rex", video=("rex.png", b"\x89PNG\r\n\x1a\n....", "image/png"))
    assert err.value.param == "video" and "MP4" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        sdk.videos.create_character(name=" ", video=("rex.mp4", CLIP, "video/mp4"))
    assert err.value.param == "name"
    with pytest.raises(openai.NotFoundError):
        client(gateway, BETA_KEY).delete(f"/videos/characters/{character.id}", cast_to=httpx.Response)
    deleted = sdk.delete(f"/videos/characters/{character.id}", cast_to=httpx.Response).json()
    assert deleted == {"id": character.id, "object": "character.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        sdk.videos.get_character(character.id)


def test_a_generation_uses_the_character_made_on_its_own_key(gateway, simulator):
    sdk = client(gateway)
    character = make(sdk)
    video = sdk.videos.create_and_poll(model="sora-2", prompt="Mossy waves hello", **with_characters(character.id))
    assert video.status == "completed"
    [upstream_character] = sim_characters(simulator)
    [job] = sim_jobs(simulator)
    assert job.characters == (upstream_character.id,) and upstream_character.key == job.key
    assert upstream_character.name == "Mossy" and upstream_character.size == len(CLIP)
    assert upstream_character.id != character.id
    assert upstream_character.id not in str(video.model_dump()) + str(sdk.videos.get_character(character.id))
    again = sdk.videos.create_and_poll(model="sora-2", prompt="Mossy takes a bow", **with_characters(character.id))
    assert again.status == "completed" and len(sim_characters(simulator)) == 1  # the mapping is remembered
    remix = sdk.videos.poll(sdk.videos.remix(video.id, prompt="Mossy waves goodbye",
                                             **with_characters(character.id)).id)
    assert remix.status == "completed" and remix.remixed_from_video_id == video.id
    assert sim_jobs(simulator)[-1].operation == "remix"
    assert sim_jobs(simulator)[-1].characters == (upstream_character.id,)
    plain = sdk.videos.create_and_poll(model="sora-2", prompt="Mossy waves hello")
    assert plain.id != video.id and sim_jobs(simulator)[-1].characters == ()  # the cache key has the characters


def test_at_name_in_a_prompt_uses_the_teams_character_only(gateway, simulator):
    sdk = client(gateway)
    make(sdk, "Mossy")
    video = sdk.videos.create_and_poll(model="sora-2", prompt="@Mossy juggles three apples")
    assert video.status == "completed" and video.prompt == "@Mossy juggles three apples"
    [upstream_character] = sim_characters(simulator)
    assert sim_jobs(simulator)[-1].characters == (upstream_character.id,)
    beta = client(gateway, BETA_KEY).videos.create_and_poll(model="sora-2", prompt="@Mossy juggles three apples")
    assert beta.status == "completed" and sim_jobs(simulator)[-1].characters == ()


def test_another_teams_character_cannot_be_used(gateway, simulator):
    theirs = make(client(gateway, BETA_KEY))
    with pytest.raises(openai.NotFoundError) as err:
        client(gateway).videos.create(model="sora-2", prompt="borrowed", **with_characters(theirs.id))
    assert "characters[0]" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client(gateway).videos.create(model="sora-2", prompt="bad", extra_body={"characters": [{"id": "x"}]})
    assert err.value.param == "characters[0]"
    assert sim_jobs(simulator) == []


def test_chat_completions_take_characters_as_an_extra_field(gateway, simulator):
    sdk = client(gateway)
    character = make(sdk)
    completion = sdk.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "Mossy sings"}],
                                             **with_characters(character.id))
    assert completion.model_extra["video"]["status"] == "completed"
    [upstream_character] = sim_characters(simulator)
    assert sim_jobs(simulator)[-1].characters == (upstream_character.id,)


def test_rotation_prefers_keys_holding_the_character_and_makes_it_where_a_job_must_run(
        start_simulator, start_gateway):
    simulator = start_simulator()
    gateway = start_gateway(simulator, upstreams=[upstream_table(simulator.url + "/v1",
                                                                 keys=["sk-good-1", "sk-good-2"])])
    sdk = client(gateway)
    character = make(sdk)
    for prompt in ("Mossy at the beach", "Mossy in the snow", "Mossy in the rain"):
        sdk.videos.create_and_poll(model="sora-2", prompt=prompt, **with_characters(character.id))
    [held] = sim_characters(simulator)
    assert {job.key for job in sim_jobs(simulator)} == {held.key}  # no second copy while that key is free
    elsewhere = [job for job in sim_jobs(simulator) if job.key != held.key]
    while not elsewhere:  # plain videos rotate; find one made on the other key
        sdk.videos.create_and_poll(model="sora-2", prompt=f"a plain sea {len(sim_jobs(simulator))}")
        elsewhere = [job for job in sim_jobs(simulator) if job.key != held.key]
    source = next(v for v in sdk.videos.list() if v.prompt == elsewhere[0].prompt)
    edit = sdk.videos.edit(prompt="Mossy swims in it", video=openai.omit,
                           extra_body={"video": {"id": source.id}, "characters": [{"id": character.id}]})
    assert sdk.videos.poll(edit.id).status == "completed"
    made_there = [c for c in sim_characters(simulator) if c.key == elsewhere[0].key]
    assert len(made_there) == 1 and sim_jobs(simulator)[-1].characters == (made_there[0].id,)


def test_a_rate_limited_key_moves_the_character_and_the_job_to_another(start_simulator, start_gateway):
    simulator = start_simulator()
    gateway = start_gateway(simulator, upstreams=[upstream_table(simulator.url + "/v1",
                                                                 keys=["sk-429-1", "sk-good-1"])])
    sdk = client(gateway)
    character = make(sdk)
    video = sdk.videos.create_and_poll(model="sora-2", prompt="Mossy runs", **with_characters(character.id))
    assert video.status == "completed"
    sim = simulator.app.state.sim
    assert sim.count("POST", "/v1/videos/characters", key="sk-429-1") >= 1
    [made] = sim_characters(simulator)
    assert made.key == "sk-good-1" and sim_jobs(simulator)[-1].key == "sk-good-1"


def test_a_model_on_a_chat_relay_cannot_use_characters(start_simulator, start_gateway):
    relay = start_simulator(kind="chat", duration_s=0.3)
    gateway = start_gateway(relay, upstreams=[{
        "name": "sim", "kind": "chat", "base_url": relay.url + "/v1", "keys": ["sk-fam-a-en-1"],
        "poll_interval_s": 0.05, "timeout_s": 5, "job_timeout_s": 60, "max_retry_s": 10}])
    sdk = client(gateway)
    character = make(sdk)
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": "Mossy sings"}],
                                    **with_characters(character.id))
    assert "'sora-2'" in err.value.message and "characters" in err.value.message


def test_a_character_made_from_one_of_the_teams_videos(gateway, simulator):
    sdk = client(gateway)
    video = sdk.videos.create_and_poll(model="sora-2", prompt="a corgi sitting still")
    character = sdk.videos.create_character(name="Biscuit", video=openai.omit, extra_body={"video": {"id": video.id}})
    assert character.name == "Biscuit"
    with pytest.raises(openai.NotFoundError):
        client(gateway, BETA_KEY).videos.create_character(name="Stolen", video=openai.omit,
                                                          extra_body={"video": {"id": video.id}})
    done = sdk.videos.create_and_poll(model="sora-2", prompt="@Biscuit chases a ball")
    assert done.status == "completed"
    [made] = sim_characters(simulator)
    assert made.name == "Biscuit" and made.size == len(sdk.videos.download_content(video.id).read())


def test_the_simulator_refuses_a_character_of_another_key(simulator):
    made = httpx.post(simulator.url + "/v1/videos/characters", headers={"authorization": "Bearer sk-good-1"},
                      data={"name": "Mossy"}, files={"video": ("m.mp4", CLIP, "video/mp4")}).json()
    assert made["id"].startswith("char_")
    other = {"authorization": "Bearer sk-good-2"}
    assert httpx.get(f"{simulator.url}/v1/videos/characters/{made['id']}", headers=other).status_code == 404
    refused = httpx.post(simulator.url + "/v1/videos", headers=other,
                         json={"prompt": "Mossy", "characters": [{"id": made["id"]}]})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "characters[0].id"
    own = httpx.post(simulator.url + "/v1/videos", headers={"authorization": "Bearer sk-good-1"},
                     json={"prompt": "Mossy", "characters": [{"id": made["id"]}]})
    assert own.status_code == 200


def test_a_character_from_a_video_url_follows_the_image_url_rules(gateway, simulator):
    sdk = client(gateway)
    for url, words in [("http://127.0.0.1:9/mossy.mp4", "non-public"), ("http://169.254.169.254/latest/", "non-public"),
                       ("ftp://example.com/mossy.mp4", "http(s) URL")]:
        with pytest.raises(openai.BadRequestError) as err:
            sdk.videos.create_character(name="Mossy", video=openai.omit, extra_body={"video_url": url})
        assert err.value.param == "video_url" and words in err.value.message and "image" not in err.value.message
    assert httpx.get(simulator.url + "/_sim/calls").json()["calls"] == []


async def test_public_bytes_are_fetched_under_the_same_checks_as_images() -> None:
    from gateway.core.images import ImageError, ImageLimits, load_public_bytes
    from tests.test_images import FakeResolver, Recorder

    recorder = Recorder(lambda request: httpx.Response(200, content=CLIP))
    fetched = await load_public_bytes("https://cdn.example/mossy.mp4", ImageLimits(), resolver=FakeResolver(),
                                      transport=recorder.transport)
    assert fetched == CLIP and len(recorder.requests) == 1
    inside = FakeResolver({"intranet.example": ["10.0.0.7"]})
    with pytest.raises(ImageError, match="non-public"):
        await load_public_bytes("https://intranet.example/m.mp4", ImageLimits(), resolver=inside,
                                transport=recorder.transport)
    with pytest.raises(ImageError, match="larger than"):
        await load_public_bytes("https://cdn.example/mossy.mp4", ImageLimits(max_bytes=100), resolver=FakeResolver(),
                                transport=recorder.transport)
    assert len(recorder.requests) == 2
