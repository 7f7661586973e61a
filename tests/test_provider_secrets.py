"""Provider kinds never let an upstream key reach a client, even from a provider that quotes it back."""
from __future__ import annotations

import openai
import pytest

from tests.support import ALPHA_KEY

ROOTS = {"gemini": "/v1beta", "openrouter": "/api/v1", "fal": "", "replicate": "/v1", "runway": "/v1"}
MODELS = {"gemini": "veo-3.1-generate-preview", "openrouter": "google/veo-3.1", "fal": "fal-ai/veo3.1/fast",
          "replicate": "google/veo-3.1", "runway": "veo3.1_fast"}


@pytest.mark.parametrize("kind", sorted(ROOTS))
def test_a_provider_that_quotes_the_key_in_its_errors_leaks_nothing(start_simulator, start_gateway, kind):
    sim = start_simulator(kind=kind, duration_s=0.2, quote_key=True)
    keys = ["sk-500-secret-0123456789", "sk-401-secret-9876543210"]
    upstream = {"name": "sim", "kind": kind, "base_url": sim.url + ROOTS[kind], "keys": keys,
                "max_concurrent_per_key": 5, "poll_interval_s": 0.05, "timeout_s": 2, "job_timeout_s": 30,
                "max_retry_s": 1}
    gateway = start_gateway(sim, upstreams=[upstream], models={"sora-2": {
        "upstreams": ["sim"], "upstream_model": MODELS[kind], "sizes": ["1280x720"], "seconds_allowed": [8]}})
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALPHA_KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        client.videos.create(model="sora-2", prompt="a lighthouse")
    text = str(err.value) + err.value.response.text
    assert err.value.status_code == 503 and "secret" not in text
