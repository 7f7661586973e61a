"""The Kubernetes manifest: several replicas that drain within their grace period, probes on the gateway's own
endpoints, a disruption budget, and a config that passes the gateway's own validation with the Secret's keys."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from gateway.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
DRAIN_S = 5  # what the gateway takes to end its streams and hand its jobs over on SIGTERM (README, Durability)


def manifest() -> dict[str, dict]:
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes.yaml").read_text()))
    return {doc["kind"]: doc for doc in documents if doc}


def test_the_deployment_runs_several_replicas_that_drain_within_the_grace_period():
    kinds = manifest()
    deployment = kinds["Deployment"]["spec"]
    assert deployment["replicas"] >= 2
    pod = deployment["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pause + DRAIN_S
    assert kinds["PodDisruptionBudget"]["spec"]["selector"] == deployment["selector"]
    assert kinds["Service"]["spec"]["selector"] == deployment["selector"]["matchLabels"]
    assert {"configMap": {"name": "sora-gateway"}, "name": "config"} in pod["volumes"]
    assert container["envFrom"] == [{"secretRef": {"name": kinds["Secret"]["metadata"]["name"]}}]


def test_the_configmap_config_is_valid_with_the_secrets_keys_and_keeps_videos_in_an_object_store():
    kinds = manifest()
    text = kinds["ConfigMap"]["data"]["gateway.toml"]
    secret_keys = set(kinds["Secret"]["stringData"])
    assert set(re.findall(r"\$\{([A-Z0-9_]+)\}", text)) <= secret_keys
    env = {name: f"value-of-{name.lower()}-0123456789" for name in secret_keys}
    env.update(GATEWAY_PUBLIC_URL="https://videos.example", GATEWAY_DATABASE_URL="postgresql://gw:pw@db/gateway",
               GATEWAY_REDIS_URL="redis://redis:6379/0", RELAY_A_BASE_URL="https://relay.example/v1")
    config = parse_config(tomllib.loads(text), env=env)
    assert config.storage.local_videos_dir is None and config.storage.videos.startswith("s3://")
    assert config.storage.redis and config.storage.database.startswith("postgresql://")
    assert not any(kinds["Secret"]["stringData"][name] for name in secret_keys - {"AWS_REGION"})  # no real secret
