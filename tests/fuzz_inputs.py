"""Generated bad input for every public endpoint, shared by the fuzz test and bench/fuzz.py.

A request is a method, a path (with generated path parameters), query parameters, headers and a body. Bodies
start from the endpoint's real shape and have fields replaced, removed or added with hostile values: Unicode
digits, thousands of digits, NUL and other control characters, deep nesting, huge strings, wrong types.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.support import ADMIN_KEY, ALPHA_KEY, LIMITED_KEY

NASTY_STRINGS = [
    "", " ", "²", "٣", "１２", "9" * 5000, "-1", "0", "4", "1e400", "NaN", "\x00", "a\x00b", "\n", "%0a", "%00",
    "\u202e", "\ud7ff", "é", "../../etc/passwd", "video_" + "0" * 32, "null", "[]", "{}", "x" * 20_000,
    "9999-12-31", "0000-01-01", "2020-02-30", "2020-01-01T25:00", "9999-12-31T23:59:59+14:00", "-99999999999",
    "sk-unknown-0123456789", "Bearer x", "data:image/png;base64," + " " * 3000, "data:,", "data:image/png,%ZZ",
    "https://" + "a" * 300 + ".com/x.png", "http://127.0.0.1/x.png", "http://[::1/", "http://a:99999/x",
    "http://é.example/x.png", "file:///etc/passwd", "https://exa mple.com/", "javascript:alert(1)",
    "720x1280", "1280x720", "sora-2", "markdown", "zh", "reasoning", "day", "model", "key", "team", "csv", "json",
    "video", "thumbnail", "spritesheet", "asc", "desc", "30d", "99999999999999999999d", "9" * 5000 + "d", "0s",
]
# Values that broke parsers before: Unicode digits, more digits than int() takes, NUL, far-off dates.
SHARP = ["²", "9" * 5000, "\x00", "a\x00b", "é", "9999-12-31", "99999999999999999999d", "1" * 30]
_FORBIDDEN = ("[fail]", "[refuse]", "[error]")  # simulator markers: a failed job is a legitimate 502


def clean(text: str) -> str:
    for marker in _FORBIDDEN:
        text = text.replace(marker, "")
    return text


nasty = st.one_of(st.sampled_from(SHARP), st.sampled_from(NASTY_STRINGS))
texts = st.one_of(nasty, st.text(max_size=40).map(clean))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=False),
    st.sampled_from([2**63, -(2**63) - 1, 10**400]), texts,
)
json_values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=3), st.dictionaries(texts, children, max_size=3)), max_leaves=8)


@st.composite
def deep(draw: st.DrawFn) -> Any:
    depth = draw(st.integers(min_value=20, max_value=1100))
    value: Any = draw(scalars)
    for _ in range(depth):
        value = [value] if draw(st.booleans()) else {"a": value}
    return value


anything = st.one_of(json_values, json_values, deep())
hostile = st.one_of(nasty, nasty, anything)
prompt_text = st.one_of(texts, st.just("a red fox in the snow"))


@st.composite
def content(draw: st.DrawFn) -> Any:
    part = st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(prompt_text, anything)}),
        st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.one_of(
            st.fixed_dictionaries({"url": st.one_of(texts, anything)}), anything)}),
        st.dictionaries(texts, anything, max_size=2),
        anything,
    )
    return draw(st.one_of(prompt_text, st.lists(part, max_size=3), anything))


message = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["user", "system", "developer", "assistant"]), anything)},
    optional={"content": content()},
)


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, st.SearchStrategy], required: tuple[str, ...] = ()) -> dict:
    """A sensible body for the endpoint with a few fields replaced by hostile values, dropped, or added."""
    body = {name: draw(good) for name, good in base.items() if name in required or draw(st.booleans())}
    for name in draw(st.lists(st.sampled_from(sorted(base)), max_size=3, unique=True)):
        if draw(st.integers(0, 5)) == 0:
            body.pop(name, None)
        else:
            body[name] = draw(hostile)
    body.update(draw(st.dictionaries(texts, anything, max_size=1)))
    return body


def user_message(text: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries({"role": st.just("user"), "content": text})


chat_body = mutated({
    "model": st.sampled_from(["sora-2", "sora-2", "sora-2", "org/sora-2-pro", "nope"]),
    "messages": st.one_of(st.lists(message, max_size=3).flatmap(
        lambda history: user_message(content()).map(lambda last: [*history, last])), st.lists(message, max_size=4)),
    "stream": st.booleans(), "size": st.sampled_from(["720x1280", "1280x720"]), "seconds": st.sampled_from([4, "8"]),
    "n": st.just(1), "stream_format": st.sampled_from(["markdown", "zh", "reasoning"]),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}), "user": texts,
}, required=("model", "messages"))
video_body = mutated({
    "model": st.sampled_from(["sora-2", "nope"]), "prompt": prompt_text, "size": st.just("720x1280"),
    "seconds": st.sampled_from(["4", 8]), "user": texts,
    "input_reference": st.fixed_dictionaries({}, optional={"image_url": texts, "file_id": texts}),
}, required=("prompt",))
key_body = mutated({"name": texts, "expires": texts})
remix_body = mutated({"prompt": prompt_text}, required=("prompt",))

ids = st.one_of(texts, st.just("video_" + "0" * 32))
query_names = ["since", "until", "group_by", "team", "format", "limit", "after", "order", "variant", "exp", "sig"]
query = st.dictionaries(st.one_of(st.sampled_from(query_names), st.sampled_from(query_names), texts),
                        st.one_of(nasty, texts), max_size=4)
QUERIES = {  # the parameters an endpoint reads, so that hostile values reach the code that parses them
    "/content": st.fixed_dictionaries({}, optional={"exp": st.one_of(st.just("9999999999"), nasty),
                                                    "sig": nasty, "variant": texts}),
    "/v1/usage": st.fixed_dictionaries({}, optional={"since": nasty, "group_by": texts,
                                                     "until": nasty}),
    "/admin/usage": st.fixed_dictionaries({}, optional={"since": nasty, "team": texts,
                                                        "until": nasty, "format": texts}),
    "/v1/videos": st.fixed_dictionaries({}, optional={"after": texts, "limit": texts, "order": texts}),
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # with {name} placeholders
    body: st.SearchStrategy | None = None
    admin: bool = False
    forms: bool = False


ENDPOINTS = [
    Endpoint("GET", "/healthz"), Endpoint("GET", "/readyz"), Endpoint("GET", "/metrics"),
    Endpoint("GET", "/v1/models"), Endpoint("GET", "/v1/models/{id}"),
    Endpoint("POST", "/v1/chat/completions", chat_body),
    Endpoint("POST", "/v1/videos", video_body, forms=True), Endpoint("GET", "/v1/videos"),
    Endpoint("GET", "/v1/videos/{id}"), Endpoint("DELETE", "/v1/videos/{id}"),
    Endpoint("GET", "/v1/videos/{id}/content"), Endpoint("HEAD", "/v1/videos/{id}/content"),
    Endpoint("POST", "/v1/videos/{id}/remix", remix_body, forms=True),
    Endpoint("GET", "/v1/usage"),
    Endpoint("GET", "/admin/upstreams", admin=True), Endpoint("GET", "/admin/teams", admin=True),
    Endpoint("POST", "/admin/teams/{id}/keys", key_body, admin=True), Endpoint("GET", "/admin/keys", admin=True),
    Endpoint("DELETE", "/admin/keys/{id}", admin=True), Endpoint("GET", "/admin/usage", admin=True),
    Endpoint("GET", "/admin/store", admin=True), Endpoint("POST", "/admin/reload", admin=True),
    Endpoint("POST", "/admin/upstreams/{id}/keys/{id}/enable", admin=True),
]


@dataclass
class FuzzRequest:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    files: dict | None = None
    data: dict | None = None

    def describe(self) -> str:
        body = (self.content or b"")[:300]
        return f"{self.method} {self.path[:200]} params={str(self.params)[:200]} headers={self.headers} body={body!r}"


# Headers stay valid HTTP: a control character in a header is refused by the HTTP server (uvicorn) itself with a
# plain-text 400, before the application and its error envelope are reached.


def encode_json(value: Any) -> bytes:
    """JSON as a careless client would send it: big integers kept, no ASCII escaping."""
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def requests(draw: st.DrawFn) -> FuzzRequest:
    endpoint = draw(st.sampled_from(ENDPOINTS))
    path = endpoint.path
    while "{id}" in path:
        path = path.replace("{id}", quote(draw(ids), safe="")[:2000] or "x", 1)
    right = ADMIN_KEY if endpoint.admin else ALPHA_KEY
    key = draw(st.sampled_from([right] * 6 + [ALPHA_KEY, LIMITED_KEY, ADMIN_KEY, None, "sk-wrong", "sk-" + "x" * 5000]))
    headers = {"authorization": f"Bearer {key}"} if key else {}
    if draw(st.booleans()):
        headers["cache-control"] = draw(st.sampled_from(["no-cache", "no-store", "max-age=" + "9" * 5000,
                                                          "max-age=-1, no-cache=x"]))
    targeted = next((q for suffix, q in QUERIES.items() if endpoint.path.endswith(suffix)), None)
    params = draw(st.one_of(query, targeted) if targeted is not None else query)
    request = FuzzRequest(endpoint.method, path, params, headers)
    if endpoint.body is None:
        return request
    shape = draw(st.sampled_from(["json", "json", "json", "raw", "form"] if endpoint.forms else ["json", "raw"]))
    if shape == "json":
        request.content = encode_json(draw(endpoint.body))
        request.headers["content-type"] = "application/json"
    elif shape == "raw":
        request.content = draw(st.one_of(st.binary(max_size=200), st.sampled_from([
            b"", b"{", b"[" * 2000, b'{"a":' * 1500, b"\xff\xfe", b'{"prompt": "\\ud800"}', b"null", b"1" * 5000])))
        request.headers["content-type"] = draw(st.sampled_from(["application/json", "text/plain", ""]))
    else:
        fields = draw(st.dictionaries(st.sampled_from(["prompt", "model", "seconds", "size",
                                                       "input_reference[image_url]", "input_reference[x][y]"]),
                                      texts, max_size=4))
        request.data = fields
        if draw(st.booleans()):
            request.files = {"input_reference": ("x.png", draw(st.binary(max_size=64)), "image/png")}
    return request


def check_envelope(response: Any) -> str | None:
    """What is wrong with an error response, or None when it is OpenAI's envelope."""
    if response.status_code < 400:
        return None
    if response.request.method == "HEAD":
        return None
    try:
        body = response.json()
    except ValueError:
        return f"error response is not JSON: {response.text[:200]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return f"error response is not the OpenAI envelope: {response.text[:200]!r}"
    if not isinstance(error["message"], str) or not error["message"]:
        return "error message is empty"
    return None
