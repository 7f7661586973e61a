"""What a provider-kind model's `sizes` and `seconds_allowed` ask that its upstream cannot make, found before any
request: each dialect's own `check` (the 400 a request would get) run over every size and duration, by key."""
from __future__ import annotations

from gateway.config import Config, ModelConfig, UpstreamConfig
from gateway.core.upstream import GenerationSpec, ImageInput, UpstreamError
from gateway.upstreams.fal import FalUpstream
from gateway.upstreams.gemini import GeminiUpstream
from gateway.upstreams.openrouter import OpenRouterUpstream
from gateway.upstreams.replicate import ReplicateUpstream
from gateway.upstreams.runway import RunwayUpstream

DIALECTS = {"gemini": GeminiUpstream, "openrouter": OpenRouterUpstream, "fal": FalUpstream,
            "replicate": ReplicateUpstream, "runway": RunwayUpstream}
_SOME_IMAGE = ImageInput(b"", "image/png")  # for a model that makes videos from an image only


def model_problems(config: Config) -> list[str]:
    """One `models."ALIAS".sizes[i]: …` line per size or duration an upstream of the model cannot make."""
    problems: list[str] = []
    for alias, model in config.models.items():
        for name in model.upstreams:
            upstream = config.upstream(name)
            if upstream.kind in DIALECTS:
                problems += _problems(f'models."{alias}"', model, upstream)
    return list(dict.fromkeys(problems))


def _problems(prefix: str, model: ModelConfig, upstream: UpstreamConfig) -> list[str]:
    dialect = DIALECTS[upstream.kind](upstream.name, upstream.base_url, timeout_s=1.0, poll_interval_s=1.0)
    found: list[str] = []
    for i, size in enumerate(model.sizes):
        for j, seconds in enumerate(model.seconds_allowed):
            error = _refusal(dialect, model, size, seconds)
            if error is not None and error.param == "size":
                found.append(f"{prefix}.sizes[{i}]: {error.message}")
            elif error is not None and error.param == "seconds":
                found.append(f"{prefix}.seconds_allowed[{j}]: {error.message}")
    return found


def _refusal(dialect, model: ModelConfig, size: str, seconds: int) -> UpstreamError | None:
    spec = GenerationSpec(upstream_model=model.upstream_model, prompt="check", size=size, seconds=seconds,
                          image_model=model.upstream_model_image or None, params=model.upstream_params)
    for image in (None, _SOME_IMAGE):
        try:
            dialect.check(GenerationSpec(**{**_fields(spec), "image": image}))
        except UpstreamError as exc:
            if exc.param == "input_reference":  # the model wants an image: check what it makes from one
                continue
            return exc
        return None
    return None


def _fields(spec: GenerationSpec) -> dict:
    return {name: getattr(spec, name) for name in GenerationSpec.__dataclass_fields__}
