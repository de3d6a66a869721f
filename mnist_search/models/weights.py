"""Weights on disk as safetensors: no pickle is ever loaded."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save, save_file
from torch import nn

from mnist_search.errors import UserError


def _state(model: nn.Module) -> dict:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}


def save_weights(model: nn.Module, path: str | Path) -> None:
    save_file(_state(model), str(path))


def weights_bytes(model: nn.Module) -> bytes:
    """The safetensors file ``save_weights`` would write, in memory (for writes that must be atomic)."""
    return save(_state(model))


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise UserError(f"cannot read weights {path}: {exc}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"weights {path} do not fit this architecture: {str(exc).splitlines()[0]}") from None
    return model


def load_network(spec_path: str | Path, weights_path: str | Path) -> nn.Module:
    """The network a spec file describes with the weights of a safetensors file, in eval mode
    (a teacher to distil from): both files checked as every input is, nothing unpickled."""
    from mnist_search.models.network import build
    from mnist_search.models.spec import ArchSpec

    return load_weights(build(ArchSpec.from_file(spec_path)), weights_path).eval()
