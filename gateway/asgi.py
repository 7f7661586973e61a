"""ASGI entry point for `uvicorn gateway.asgi:app`: the config path comes from SORA_GATEWAY_CONFIG.

This is what each server process imports (every worker of `sora-gateway serve --workers N` too), so logging is
configured here, once per process.
"""
from __future__ import annotations

import os

from gateway.app import create_app
from gateway.config import load_config
from gateway.observability.logs import configure_logging
from gateway.server import tune_gc

config = load_config(os.environ.get("SORA_GATEWAY_CONFIG", "config/gateway.toml"))
configure_logging(config)
app = create_app(config)
tune_gc()
