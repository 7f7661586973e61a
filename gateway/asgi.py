"""ASGI entry point for `uvicorn gateway.asgi:app`: the config path comes from SORA_GATEWAY_CONFIG."""
from __future__ import annotations

import os

from gateway.app import create_app
from gateway.config import load_config

app = create_app(load_config(os.environ.get("SORA_GATEWAY_CONFIG", "config/gateway.toml")))
