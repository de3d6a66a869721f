"""Trained weights in Optuna's artifact store: search trials and confirmation runs alike.

Each artifact's SHA-256 is recorded beside its id when it is stored, so whoever reads it back
(export) can tell the file is the one training wrote, not a damaged or swapped one.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn

from mnist_search.errors import UserError
from mnist_search.models.weights import save_weights


def store_weights(model: nn.Module, artifact_dir: Path, owner: optuna.Trial | optuna.Study,
                  name: str) -> tuple[str, str]:
    """Upload ``model``'s weights (safetensors) as an artifact of ``owner``: (artifact id, SHA-256)."""
    artifact_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.safetensors"
        save_weights(model, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        artifact_id = upload_artifact(artifact_store=FileSystemArtifactStore(str(artifact_dir)), file_path=str(path),
                                      study_or_trial=owner)
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
