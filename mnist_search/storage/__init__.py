"""WHERE results live: storage URLs (SQLite default, PostgreSQL), heartbeats and retries, artifacts."""

from mnist_search.storage.urls import (
    DEFAULT_STORAGE,
    STORAGE_ENV,
    default_artifact_dir,
    mask_password,
    open_storage,
    resolve_storage_url,
)

__all__ = ["DEFAULT_STORAGE", "STORAGE_ENV", "default_artifact_dir", "mask_password", "open_storage",
           "resolve_storage_url"]
