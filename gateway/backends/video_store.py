"""Choosing the video store from `[storage]`: a local folder (the embedded default) or an object store."""
from __future__ import annotations

from gateway.config import StorageConfig
from gateway.core.store import VideoStore


def open_store(storage: StorageConfig) -> VideoStore:
    folder = storage.local_videos_dir
    if folder is not None:
        from gateway.backends.store_local import LocalVideoStore

        return LocalVideoStore(folder)
    from gateway.backends.store_object import ObjectVideoStore

    return ObjectVideoStore(storage.videos, endpoint=storage.videos_endpoint)
