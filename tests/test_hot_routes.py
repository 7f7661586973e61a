"""The hot routes the edge layer dispatches itself: the same route the router picks, the same answers."""
from __future__ import annotations

import httpx
import openai
import pytest
from starlette.routing import Match

from gateway.api.middleware import EdgeMiddleware
from tests.support import ALPHA_KEY, BETA_KEY
from tests.test_chat import client

HOT = [("GET", "/v1/videos/video_0123"), ("HEAD", "/v1/videos/video_0123"), ("GET", "/v1/videos/edits"),
       ("POST", "/v1/chat/completions")]
NOT_HOT = [("GET", "/v1/videos/characters"), ("DELETE", "/v1/videos/video_0123"), ("GET", "/v1/videos/"),
           ("GET", "/v1/videos/video_0123/content"), ("GET", "/v1/videos"), ("GET", "/v1/chat/completions"),
           ("POST", "/v1/chat/completions/"), ("POST", "/v1/videos/video_0123"), ("GET", "/v1/videos/a%2Fb/x")]


def router_choice(router, scope: dict):
    for route in router.routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return route, child["path_params"]
    return None, None


def edge_of(app) -> EdgeMiddleware:
    [middleware] = [m for m in app.user_middleware if m.cls is EdgeMiddleware]
    return middleware.kwargs["hot"]


@pytest.mark.parametrize(("method", "path"), [*HOT, *NOT_HOT])
def test_a_hot_route_is_the_one_the_router_picks(gateway, method, path):
    app = gateway.app
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "query_string": b"", "headers": []}
    probe = dict(scope)
    found = edge_of(app).find(probe)
    route, params = router_choice(app.router, scope)
    if (method, path) in HOT:
        assert found is route and probe["route"] is route and probe["path_params"] == params
        assert probe["starlette.exception_handlers"][0]  # the app's handlers, as its exception layer sets them
    else:
        assert found is None and probe == scope  # left to the router, untouched


def test_errors_on_hot_routes_keep_the_envelope_and_headers(gateway):
    url = gateway.url
    missing = httpx.get(url + "/v1/videos/video_nope", headers={"authorization": f"Bearer {ALPHA_KEY}"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert missing.headers["x-request-id"].startswith("req_")
    unauthenticated = httpx.post(url + "/v1/chat/completions", json={"model": "sora-2", "messages": []})
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]["type"] == "invalid_request_error"
    assert unauthenticated.headers["x-request-id"].startswith("req_")
    bad = httpx.post(url + "/v1/chat/completions", content=b"{", headers={"authorization": f"Bearer {ALPHA_KEY}"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    characters = httpx.get(url + "/v1/videos/characters", headers={"authorization": f"Bearer {ALPHA_KEY}"})
    assert characters.status_code == 200 and characters.json()["object"] == "list"  # not a video id


def test_a_finished_video_polled_again_stays_its_teams_and_goes_with_a_delete(gateway):
    alpha, beta = client(gateway), client(gateway, key=BETA_KEY)
    video = alpha.videos.create_and_poll(model="sora-2", prompt="a kept answer")
    first, second = alpha.videos.retrieve(video.id), alpha.videos.retrieve(video.id)
    assert first.status == "completed" and first.expires_at
    assert first.model_dump(exclude={"expires_at"}) == second.model_dump(exclude={"expires_at"})
    with pytest.raises(openai.NotFoundError):
        beta.videos.retrieve(video.id)
    alpha.videos.delete(video.id)
    with pytest.raises(openai.NotFoundError):
        alpha.videos.retrieve(video.id)
