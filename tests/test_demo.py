"""The example `sora-gateway demo` prints works when pasted into a shell."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from gateway.cli import DEMO_KEY, _demo_banner
from gateway.core.auth import hash_key


def test_the_printed_python_example_runs_to_the_link_and_the_cost(start_gateway, simulator, tmp_path):
    teams = [{"name": "demo", "keys": [hash_key(DEMO_KEY)]}]
    gateway = start_gateway(simulator, teams=teams)
    banner = _demo_banner("127.0.0.1", gateway.port, tmp_path)
    example = re.search(r"^python - <<'EOF'\n.*?^EOF\n", banner, re.MULTILINE | re.DOTALL).group(0)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", "-c", example], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "✅ Video ready: [▶ Watch](http://127.0.0.1:" in result.stdout
    assert result.stdout.rstrip().endswith("$0.40")
