"""Weights on disk as safetensors: no pickle is ever loaded."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mnist_search.errors import UserError


def save_weights(model: nn.Module, path: str | Path) -> None:
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(path))


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
