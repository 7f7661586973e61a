"""Videos in an object store: the S3 store against a real S3 endpoint, and a gateway serving from it through the
`openai` SDK and plain HTTP (Range, ETag, HEAD, delete, redirect to a signed URL)."""
from __future__ import annotations

import asyncio
import os

import httpx
import openai
import pytest

from gateway.api.errors import http_of
from gateway.backends.store_object import PART_BYTES, ObjectVideoStore
from gateway.config import ConfigError, parse_config
from gateway.core.store import StoreUnavailable
from tests.support import ADMIN_KEY, ALPHA_KEY, BETA_KEY, base_config, free_port
from tests.test_chat import assert_playable_mp4, client

VIDEO_ID = "video_" + "ab" * 16


def auth(key: str = ALPHA_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def finished(gateway, prompt: str = "a lighthouse in fog"):
    video = client(gateway).videos.create_and_poll(model="sora-2", prompt=prompt)
    assert video.status == "completed", video
    return video


# -- the store itself, against the S3 endpoint --------------------------------------------------------------


async def test_a_large_write_streams_as_a_multipart_upload_visible_only_once_complete(s3):
    store = ObjectVideoStore(s3.url, endpoint=s3.endpoint)
    part = os.urandom(PART_BYTES)
    halfway, proceed = asyncio.Event(), asyncio.Event()

    async def chunks():
        yield part
        yield part
        halfway.set()
        await proceed.wait()
        yield b"tail"

    writing = asyncio.create_task(store.save(VIDEO_ID, "video", chunks()))
    await halfway.wait()
    assert await store.stat(VIDEO_ID) is None and not await store.exists(VIDEO_ID)
    proceed.set()
    assert await writing == 2 * PART_BYTES + 4
    meta = await store.stat(VIDEO_ID)
    assert meta.size == 2 * PART_BYTES + 4 and meta.etag.endswith('-3"')  # three parts
    stream = await store.read(VIDEO_ID, "video", PART_BYTES - 2, PART_BYTES + 2)
    assert b"".join([bytes(c) async for c in stream]) == part[-2:] + part[:2]
    assert s3.keys() == [f"{VIDEO_ID}.mp4"]

    async def small():
        yield b"\xff\xd8"
        yield b"\xff"

    assert await store.save(VIDEO_ID, "thumbnail", small()) == 3  # smaller than a part: one plain PUT
    assert "-" not in (await store.stat(VIDEO_ID, "thumbnail")).etag
    assert await store.usage_bytes() == meta.size + 3
    await store.delete(VIDEO_ID)
    assert s3.keys() == [] and await store.stat(VIDEO_ID) is None and await store.read(VIDEO_ID, "video", 0, 1) is None


@pytest.mark.parametrize("before_failing", [3, PART_BYTES + 1], ids=["small", "multipart"])
async def test_a_write_that_fails_midway_leaves_nothing_visible(s3, before_failing):
    store = ObjectVideoStore(s3.url, endpoint=s3.endpoint)

    async def broken():
        yield os.urandom(before_failing)
        raise ConnectionResetError("the upstream download broke off")

    with pytest.raises(ConnectionResetError):  # the download's own error, so the fault table can retry it
        await store.save(VIDEO_ID, "video", broken())
    assert await store.stat(VIDEO_ID) is None and s3.keys() == []


async def test_a_store_that_is_not_there_is_not_writable_and_names_no_secret(s3, caplog):
    store = ObjectVideoStore(f"s3://{s3.name}-missing/videos", endpoint=s3.endpoint)
    assert await store.writable() is False
    assert s3.secret not in caplog.text


async def test_a_store_that_does_not_answer_is_reported_unavailable_without_its_address(s3, caplog):
    store = ObjectVideoStore(s3.url, endpoint=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(StoreUnavailable) as err:
        await store.stat(VIDEO_ID)
    assert err.value.code == "store_unavailable" and "127.0.0.1" not in err.value.message
    assert http_of(err.value) == (503, "server_error") and err.value.retry_after
    assert s3.secret not in caplog.text


# -- a gateway on the store ---------------------------------------------------------------------------------


def test_videos_are_stored_in_the_bucket_and_served_with_range_and_etag(simulator, s3_gateway, s3):
    gateway = s3_gateway(simulator)
    video = finished(gateway)
    assert sorted(s3.keys()) == [f"{video.id}.mp4"]  # previews are fetched when first asked for
    data = client(gateway).videos.download_content(video.id).read()
    assert_playable_mp4(data)
    url = f"{gateway.url}/v1/videos/{video.id}/content"
    full = httpx.get(url, headers=auth())
    etag = full.headers["etag"]
    assert full.content == data and full.headers["accept-ranges"] == "bytes" and etag
    assert full.headers["content-type"] == "video/mp4" and int(full.headers["content-length"]) == len(data)
    part = httpx.get(url, headers={**auth(), "range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}" and part.headers["etag"] == etag
    tail = httpx.get(url, headers={**auth(), "range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    assert httpx.get(url, headers={**auth(), "if-none-match": etag}).status_code == 304
    stale = httpx.get(url, headers={**auth(), "range": "bytes=0-9", "if-range": '"another-version"'})
    assert stale.status_code == 200 and stale.content == data
    beyond = httpx.get(url, headers={**auth(), "range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    assert beyond.json()["error"]["code"] == "range_not_satisfiable"
    head = httpx.head(url, headers=auth())
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data)) and not head.content
    thumb = client(gateway).videos.download_content(video.id, variant="thumbnail").read()
    assert thumb.startswith(b"\xff\xd8\xff")


def test_previews_are_fetched_into_the_store_on_demand(simulator, s3_gateway, s3):
    gateway = s3_gateway(simulator)
    video = finished(gateway)
    assert f"{video.id}.sprite.jpg" not in s3.keys() and f"{video.id}.jpg" not in s3.keys()
    sheet = client(gateway).videos.download_content(video.id, variant="spritesheet").read()
    assert sheet.startswith(b"\xff\xd8\xff") and f"{video.id}.sprite.jpg" in s3.keys()
    thumb = client(gateway).videos.download_content(video.id, variant="thumbnail").read()
    assert thumb.startswith(b"\xff\xd8\xff") and f"{video.id}.jpg" in s3.keys()


def test_delete_removes_every_file_from_the_bucket(simulator, s3_gateway, s3):
    gateway = s3_gateway(simulator)
    video = finished(gateway)
    for variant in ("thumbnail", "spritesheet"):
        client(gateway).videos.download_content(video.id, variant=variant).read()
    assert len(s3.keys()) == 3
    client(gateway).videos.delete(video.id)
    assert s3.keys() == []
    with pytest.raises(openai.NotFoundError):
        client(gateway).videos.download_content(video.id)


def test_admin_store_and_readyz_report_the_object_store(simulator, s3_gateway, s3):
    gateway = s3_gateway(simulator)
    finished(gateway)
    store = httpx.get(gateway.url + "/admin/store", headers=auth(ADMIN_KEY)).json()
    assert store["videos"] == s3.url and store["serve"] == "proxy" and "videos_dir" not in store
    assert store["bytes"] == sum(item["Size"] for item in
                                 s3.client().list_objects_v2(Bucket=s3.name)["Contents"])
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["store"] is True
    assert s3.keys() == sorted(s3.keys()) and not any(k.startswith(".probe") for k in s3.keys())


def test_a_missing_bucket_makes_the_instance_unready(simulator, s3_gateway, s3):
    gateway = s3_gateway(simulator)
    s3.client().delete_bucket(Bucket=s3.name)
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["store"] is False
    assert s3.secret not in ready.text


def test_redirect_mode_sends_a_signed_store_url_after_the_gateways_own_checks(simulator, s3_gateway, s3):
    gateway = s3_gateway(simulator, serve="redirect", redirect_ttl_s=120)
    video = finished(gateway)
    url = f"{gateway.url}/v1/videos/{video.id}/content"
    moved = httpx.get(url, headers=auth())
    assert moved.status_code == 302 and moved.headers["cache-control"] == "private, no-store"
    location = moved.headers["location"]
    assert location.startswith(f"{s3.endpoint}/{s3.name}/") and "X-Amz-Signature=" in location
    assert "X-Amz-Expires=120" in location and s3.secret not in location
    direct = httpx.get(location)
    assert direct.status_code == 200 and direct.headers["content-type"] == "video/mp4"
    assert_playable_mp4(direct.content)
    assert httpx.get(location, headers={"range": "bytes=0-9"}).content == direct.content[:10]
    assert client(gateway).videos.download_content(video.id).read() == direct.content  # the SDK follows it
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=auth(BETA_KEY)).status_code == 404
    link = video_link(gateway, video.id)
    tampered = link[:-5] + ("A" if link[-5] != "A" else "B") + ".mp4"
    assert httpx.get(tampered).status_code == 403
    signed = httpx.get(link)
    assert signed.status_code == 302 and httpx.get(signed.headers["location"]).content == direct.content


def video_link(gateway, video_id: str) -> str:
    """The signed link a chat completion would hand out for the video."""
    return gateway.app.state.gateway.signer.url(video_id)


# -- config --------------------------------------------------------------------------------------------------


def storage_problems(tmp_path, **storage) -> list[str]:
    raw = base_config(tmp_path, "http://127.0.0.1:1/v1")
    del raw["storage"]["videos_dir"]
    raw["storage"].update(storage)
    try:
        parse_config(raw, env={})
    except ConfigError as exc:
        return exc.problems
    return []


def test_storage_config_names_the_key_that_is_wrong(tmp_path):
    assert storage_problems(tmp_path, videos="s3://bucket/prefix", videos_endpoint="http://127.0.0.1:9000") == []
    assert storage_problems(tmp_path, videos="file:///data/videos") == []
    assert storage_problems(tmp_path, videos="gs://bucket/videos", serve="redirect") == []
    [problem] = storage_problems(tmp_path, videos="ftp://host/videos")
    assert problem.startswith("storage.videos: must be a file:///PATH, s3://")
    [problem] = storage_problems(tmp_path, videos="s3://")
    assert problem.startswith("storage.videos: names no bucket")
    [problem] = storage_problems(tmp_path, videos="s3://AKIA:secret-value@bucket/x")
    assert problem.startswith("storage.videos: must not carry credentials") and "secret-value" not in problem
    [problem] = storage_problems(tmp_path, videos="gs://bucket/x", videos_endpoint="http://127.0.0.1:9000")
    assert problem.startswith("storage.videos_endpoint: is only for an S3-compatible store")
    [problem] = storage_problems(tmp_path, videos="file:///data/videos", serve="redirect")
    assert problem.startswith("storage.serve: 'redirect' needs an object store")
    [problem] = storage_problems(tmp_path, serve="cdn")
    assert problem.startswith("storage.serve: must be one of 'proxy', 'redirect'")
    [problem] = storage_problems(tmp_path, videos="s3://b/p", redirect_ttl_s=0)
    assert problem.startswith("storage.redirect_ttl_s: must be from 1 to 604800")
    [problem] = storage_problems(tmp_path, thumbnails="always")
    assert problem.startswith("storage.thumbnails: must be one of 'on_demand', 'with_video'")
    [problem] = storage_problems(tmp_path, videos="s3://b/p", videos_dir="data/videos")
    assert problem.startswith("storage.videos_dir: set either storage.videos or its older spelling")


def test_videos_dir_and_a_file_url_are_the_same_local_store(tmp_path):
    raw = base_config(tmp_path, "http://127.0.0.1:1/v1")
    old = parse_config(raw, env={}).storage
    del raw["storage"]["videos_dir"]
    raw["storage"]["videos"] = f"file://{tmp_path}/videos"
    new = parse_config(raw, env={}).storage
    assert old.local_videos_dir == new.local_videos_dir == f"{tmp_path}/videos"


def test_the_store_secret_from_the_environment_is_scrubbed_from_log_records(tmp_path, s3):
    import logging

    from gateway.observability.logs import RedactingFilter, config_secrets

    config = parse_config(base_config(tmp_path, "http://127.0.0.1:1/v1"), env={})
    record = logging.LogRecord("gateway.store", logging.WARNING, __file__, 1, "store said %s", (s3.secret,), None)
    RedactingFilter(config_secrets(config)).filter(record)
    assert s3.secret not in record.getMessage() and "[redacted]" in record.getMessage()
