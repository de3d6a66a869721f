"""WHERE results live: storage URLs (SQLite default, PostgreSQL), heartbeats and retries, artifacts."""

from mnist_search.defaults import DEFAULT_STORAGE, STORAGE_ENV
from mnist_search.storage.names import MAX_STUDY_NAME_LENGTH, check_study_name
from mnist_search.storage.opening import open_storage
from mnist_search.storage.urls import default_artifact_dir, mask_password, resolve_storage_url

__all__ = ["DEFAULT_STORAGE", "MAX_STUDY_NAME_LENGTH", "STORAGE_ENV", "check_study_name", "default_artifact_dir",
           "mask_password", "open_storage", "resolve_storage_url"]
