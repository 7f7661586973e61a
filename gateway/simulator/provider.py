"""What every provider fake (gemini, openrouter, fal, replicate, runway) holds."""
from __future__ import annotations

from .assets import Assets
from .callbacks import CallbackSender
from .middleware import Wire
from .settings import SimulatorSettings
from .state import SimulatorState


class ProviderFake:
    """The shared state, the settings and media, how the provider's clients send keys and see errors (`wire`)
    and, for a provider that calls back when a job ends, the sender of its signed callbacks."""

    kind: str
    wire_type: type[Wire] = Wire
    calls_back = True

    def __init__(self, state: SimulatorState, settings: SimulatorSettings, assets: Assets) -> None:
        self.state = state
        self.settings = settings
        self.assets = assets
        self.wire = self.wire_type()
        self.callbacks = CallbackSender(self.kind, settings, state.deliveries) if self.calls_back else None
