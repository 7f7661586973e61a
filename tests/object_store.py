"""A real S3 endpoint for the tests: moto's S3 server on a loopback port (real HTTP, SigV4-signed requests and
presigned URLs), one per test session, with a bucket of its own for every test.

Loaded from conftest.py as a plugin, so any test module can ask for `s3` or `s3_gateway`.
"""
from __future__ import annotations

import copy
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import ServerThread, base_config, running_gateway

REGION = "us-east-1"


@dataclass
class Bucket:
    endpoint: str
    name: str
    prefix: str
    secret: str

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    def storage(self, **settings: Any) -> dict[str, Any]:
        """The `[storage]` keys that put a gateway's videos in this bucket."""
        return {"videos": self.url, "videos_endpoint": self.endpoint, **settings}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key=self.secret)

    def keys(self) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.name, Prefix=self.prefix + "/")
        return sorted(item["Key"].removeprefix(self.prefix + "/") for item in listing.get("Contents", []))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch, no_secrets_in_logs) -> Bucket:
    """A fresh bucket and prefix; the credentials are in the environment, as AWS's own tools read them."""
    bucket = Bucket(s3_endpoint, "sgw-test-" + secrets.token_hex(4), "videos-" + secrets.token_hex(2),
                    "s3-secret-" + secrets.token_hex(8))
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": bucket.secret,
                        "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    bucket.client().create_bucket(Bucket=bucket.name)
    no_secrets_in_logs.append(bucket.secret)
    return bucket


def object_store_config(tmp_path, upstream_url: str, bucket: Bucket, **storage: Any) -> dict[str, Any]:
    raw = base_config(tmp_path, upstream_url)
    del raw["storage"]["videos_dir"]
    raw["storage"].update(bucket.storage(**storage))
    return raw


@pytest.fixture
def s3_gateway(tmp_path, s3, no_secrets_in_logs) -> Iterator[Callable[..., ServerThread]]:
    """Start an in-process gateway whose videos are in the test's bucket."""
    stack = []

    def start(upstream: ServerThread, **storage: Any) -> ServerThread:
        raw = object_store_config(tmp_path, upstream.url + "/v1", s3, **storage)
        cm = running_gateway(copy.deepcopy(raw))
        server = cm.__enter__()
        server.raw = raw
        stack.append(cm)
        return server

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)
