"""Trained weights in Optuna's artifact store: search trials and confirmation runs alike.

Each artifact's SHA-256 is recorded beside its id when it is stored, so whoever reads it back
(export) can tell the file is the one training wrote, not a damaged or swapped one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn

from mnist_search.errors import UserError
from mnist_search.models.weights import save_weights


class ArtifactWriteError(UserError):
    """Trained weights could not be stored (a full or unwritable artifact directory)."""


class AtomicFileSystemArtifactStore(FileSystemArtifactStore):
    """Optuna's file store, but an artifact appears whole or not at all: a full disk leaves no
    truncated weights file behind (Optuna's own store writes the final file in place)."""

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        final = self._get_filepath(artifact_id)
        handle, temporary = tempfile.mkstemp(prefix=".incoming-", dir=final.parent)
        try:
            with os.fdopen(handle, "wb") as f:
                shutil.copyfileobj(content_body, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, final)
        except BaseException:
            os.unlink(temporary)
            raise


def store_weights(model: nn.Module, artifact_dir: Path, owner: optuna.Trial | optuna.Study,
                  name: str) -> tuple[str, str]:
    """Upload ``model``'s weights (safetensors) as an artifact of ``owner``: (artifact id, SHA-256).

    A write that fails is an :class:`ArtifactWriteError`: the caller fails the trial and stops.
    """
    try:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.safetensors"
            save_weights(model, path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            artifact_id = upload_artifact(artifact_store=AtomicFileSystemArtifactStore(str(artifact_dir)),
                                          file_path=str(path), study_or_trial=owner)
    except OSError as exc:
        raise ArtifactWriteError(f"cannot store the trained weights in {artifact_dir}: {exc.strerror or exc}; "
                                 "free space or choose another artifact directory") from None
    return artifact_id, digest


def read_weights(artifact_dir: Path, artifact_id: str | None, sha256: str | None, expected: dict[str, tuple],
                 what: str) -> bytes:
    """The bytes of a stored weights artifact, checked: a readable safetensors file whose tensors
    are exactly ``expected`` (name -> shape) and, when one was recorded, whose SHA-256 matches.
    ``what`` names the weights in errors. ``artifact_id`` must be a checked id (a plain file name)."""
    path = artifact_dir / artifact_id if artifact_id else None
    if path is None or not path.is_file():
        raise UserError(f"the weights of {what} are not in {artifact_dir}; pass the artifact directory they are in")
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read the weights of {what} ({path}): {exc.strerror or exc}") from None
    if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256:
        raise UserError(f"the weights of {what} ({path}) are not the file that was stored (checksum differs)")
    try:
        tensors = load_safetensors(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise UserError(f"the weights of {what} ({path}) are not a valid safetensors file: {exc}") from None
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if shapes != expected:
        raise UserError(f"the weights of {what} ({path}) do not fit the trial's network")
    return blob
