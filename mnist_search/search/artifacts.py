"""Trained weights in Optuna's artifact store: search trials and confirmation runs alike."""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from torch import nn

from mnist_search.errors import UserError
from mnist_search.models.weights import save_weights


def store_weights(model: nn.Module, artifact_dir: Path, owner: optuna.Trial | optuna.Study, name: str) -> str:
    """Upload ``model``'s weights (safetensors) as an artifact of ``owner``; returns the artifact id."""
    artifact_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.safetensors"
        save_weights(model, path)
        return upload_artifact(artifact_store=FileSystemArtifactStore(str(artifact_dir)), file_path=str(path),
                               study_or_trial=owner)


def fetch_weights(artifact_dir: Path, artifact_id: str | None, destination: Path, what: str) -> None:
    """Copy a stored weights artifact to ``destination``; ``what`` names it in the error."""
    if not artifact_id or not (artifact_dir / artifact_id).is_file():
        raise UserError(f"the weights of {what} are not in {artifact_dir}; pass --artifacts DIR")
    if destination.exists():
        destination.unlink()
    try:
        download_artifact(artifact_store=FileSystemArtifactStore(str(artifact_dir)), artifact_id=artifact_id,
                          file_path=str(destination))
    except OSError as exc:
        raise UserError(f"cannot write weights to {destination}: {exc.strerror or exc}") from None
