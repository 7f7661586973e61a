from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("videos", "chat", "gemini", "openrouter", "fal", "replicate", "runway")
FAMILIES = ("a", "b", "c")
LANGUAGES = ("zh", "en")
FAULTS = ("429", "401", "403", "500", "flakyread", "flaky", "slow", "slowcreate", "hang")


@dataclass(frozen=True)
class SimulatorSettings:
    kind: str = "videos"  # one of KINDS: which dialect's routes are served
    family: str = "a"  # chat family when the key does not choose one
    language: str = "zh"  # chat language when the key does not choose one
    duration_s: float = 3.0  # from creation to completed
    public_url: str = ""  # base of the MP4 links handed out in chat mode; "" = the request's base URL
    faults: str = ""  # fault applied to every key, named like the key prefixes ("" = none)
    retry_after_s: float = 2.0  # retry-after of injected 429s
    slow_s: float = 2.0  # extra delay of the "slow" fault (every call) and "slowcreate" (creates only)
    quote_key: bool = False  # every error message and failed job quotes the key it was sent, as careless relays do
    # what provider fakes sign their webhooks with: whsec_… (replicate, gemini) or an HMAC secret (openrouter);
    # fal signs with a key of its own, published at /.well-known/jwks.json
    webhook_secret: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, KINDS)
        _check_choice("family", self.family, FAMILIES)
        _check_choice("language", self.language, LANGUAGES)
        _check_choice("faults", self.faults, ("",) + FAULTS)
        for name in ("duration_s", "retry_after_s", "slow_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}, not {value!r}")
