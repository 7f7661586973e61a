"""HMAC-signed, expiring video links that work in a browser without headers.

A video link carries its expiry and signature in the path and ends in `.mp4`
(`/v1/videos/{id}/content/{exp}.{sig}.mp4`), because players and chat UIs decide what a link is from its
extension. The older query form (`/content?exp=…&sig=…`) is still accepted for links already handed out,
and is still used for the thumbnail and spritesheet variants.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import time


class LinkSigner:
    def __init__(self, secret: str, public_url: str, ttl_s: int) -> None:
        key = hashlib.sha256(b"sora-gateway-links:" + secret.encode()).digest().ljust(64, b"\0")
        # HMAC-SHA256 (RFC 2104) with its two keyed states made once: a link costs two hash copies, not a key setup
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        self.public_url = public_url.rstrip("/")
        self.ttl_s = ttl_s

    def signature(self, video_id: str, variant: str, expires: int) -> str:
        inner = self._inner.copy()
        inner.update(f"{video_id}\n{variant}\n{expires}".encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return base64.urlsafe_b64encode(outer.digest()[:24]).decode().rstrip("=")

    def expiry(self, now: float | None = None) -> int:
        return int((now or time.time()) + self.ttl_s)

    def url(self, video_id: str, variant: str = "video", expires: int | None = None) -> str:
        exp = expires or self.expiry()
        sig = self.signature(video_id, variant, exp)
        if variant == "video":
            return f"{self.public_url}/v1/videos/{video_id}/content/{exp}.{sig}.mp4"
        return f"{self.public_url}/v1/videos/{video_id}/content?variant={variant}&exp={exp}&sig={sig}"

    def verify(self, video_id: str, variant: str, exp: str, sig: str, now: float | None = None) -> str | None:
        """Return None when the link is valid, else the reason it is refused."""
        if not (exp.isascii() and exp.isdigit() and len(exp) <= 12):
            return "the link's exp parameter is malformed"
        if int(exp) < (now or time.time()):
            return "the link has expired; ask for the video again to get a fresh link"
        if not sig.isascii() or not hmac.compare_digest(sig, self.signature(video_id, variant, int(exp))):
            return "the link's signature does not match"
        return None


def parse_link_token(token: str) -> tuple[str, str] | None:
    """(exp, sig) from the last path segment of a video link, `{exp}.{sig}.mp4`; None when it is not one."""
    exp, _, rest = token.partition(".")
    sig, dot, ext = rest.rpartition(".")
    if not dot or ext != "mp4" or not sig:
        return None
    return exp, sig
