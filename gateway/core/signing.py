"""HMAC-signed, expiring video links that work in a browser without headers."""
from __future__ import annotations

import base64
import hashlib
import hmac
import time


class LinkSigner:
    def __init__(self, secret: str, public_url: str, ttl_s: int) -> None:
        self._key = hashlib.sha256(b"sora-gateway-links:" + secret.encode()).digest()
        self.public_url = public_url.rstrip("/")
        self.ttl_s = ttl_s

    def signature(self, video_id: str, variant: str, expires: int) -> str:
        message = f"{video_id}\n{variant}\n{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")

    def expiry(self, now: float | None = None) -> int:
        return int((now or time.time()) + self.ttl_s)

    def url(self, video_id: str, variant: str = "video", expires: int | None = None) -> str:
        exp = expires or self.expiry()
        query = f"exp={exp}&sig={self.signature(video_id, variant, exp)}"
        if variant != "video":
            query = f"variant={variant}&{query}"
        return f"{self.public_url}/v1/videos/{video_id}/content?{query}"

    def verify(self, video_id: str, variant: str, exp: str, sig: str, now: float | None = None) -> str | None:
        """Return None when the link is valid, else the reason it is refused."""
        if not (exp.isascii() and exp.isdigit() and len(exp) <= 12):
            return "the link's exp parameter is malformed"
        if int(exp) < (now or time.time()):
            return "the link has expired; ask for the video again to get a fresh link"
        if not sig.isascii() or not hmac.compare_digest(sig, self.signature(video_id, variant, int(exp))):
            return "the link's signature does not match"
        return None
