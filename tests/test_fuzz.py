"""Every public endpoint, driven with generated bad input: never a 5xx, always OpenAI's envelope, never down.

The number of examples is bounded (FUZZ_EXAMPLES, default 1000) and the run is derandomized, so the suite is
repeatable; `bench/fuzz.py` runs the same generator for longer with fresh randomness.
"""
from __future__ import annotations

import os

import httpx
from hypothesis import HealthCheck, given, settings

from tests.fuzz_inputs import FuzzRequest, check_envelope, requests

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))


def send(client: httpx.Client, request: FuzzRequest) -> httpx.Response:
    return client.request(request.method, request.path, params=request.params, headers=request.headers,
                          content=request.content, data=request.data, files=request.files)


def test_generated_bad_input_never_gets_a_server_error(start_simulator, start_gateway):
    simulator = start_simulator(duration_s=0.05)
    gateway = start_gateway(simulator, server={"max_body_bytes": 2_000_000, "max_prompt_chars": 4000})
    seen: dict[int, int] = {}
    with httpx.Client(base_url=gateway.url, timeout=30) as client:

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(requests())
        def one_request(request: FuzzRequest) -> None:
            response = send(client, request)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, f"{response.status_code} for {request.describe()}: {response.text}"
            problem = check_envelope(response)
            assert problem is None, f"{problem} for {request.describe()}"

        one_request()
        assert client.get("/healthz").json() == {"status": "ok"}
    assert sum(seen.values()) >= EXAMPLES
    assert any(status >= 400 for status in seen)
