"""A fake Sora upstream in both dialects (Videos API and chat-format relays), with fault injection."""

from .app import create_simulator_app, run_simulator
from .settings import SimulatorSettings
from .state import Call, SimulatorState

__all__ = ["Call", "SimulatorSettings", "SimulatorState", "create_simulator_app", "run_simulator"]
