"""The MNIST test accuracy of an exported module with its weights: how a user checks what an
export's docstring claims.

The module is imported from its file, exactly as the user would, and its own ``predict``
classifies the 10,000 raw (uint8) test images, so its preprocessing is checked too.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from mnist_search.errors import UserError
from mnist_search.search.data_dir import data_dir_for
from mnist_search.trainer import load_mnist, resolve_device

BATCH = 1000  # images per predict call: bounded memory for any network the spec allows


@dataclass(frozen=True)
class Evaluation:
    """An exported module's score on the MNIST test set."""

    module: Path
    weights: Path
    correct: int
    images: int
    params: int

    @property
    def accuracy(self) -> float:
        """Test accuracy in percent."""
        return 100.0 * self.correct / self.images

    def __str__(self) -> str:
        return (f"{self.module.name} + {self.weights.name}: test accuracy {self.accuracy:.2f}% on {self.images:,} "
                f"images ({self.params:,} parameters)")


def evaluate(module: str | os.PathLike, weights: str | os.PathLike, device: str = "auto",
             data_dir: str | os.PathLike | None = None) -> Evaluation:
    """Import ``module`` (a file written by export; importing it runs it), load ``weights`` into its
    network and classify the MNIST test set with its ``predict``."""
    module_path, weights_path = Path(module), Path(weights)
    for path, what in ((module_path, "module"), (weights_path, "weights file")):
        if not path.is_file():
            raise UserError(f"{what} {path} " + ("is not a file" if path.exists() else "does not exist"))
    torch_device = resolve_device(device)
    loaded = _import(module_path)
    try:
        net = loaded.load_weights(str(weights_path)).to(torch_device)
    except Exception as exc:  # a wrong or damaged weights file fails in many ways; all are the user's to fix
        raise UserError(f"cannot load {weights_path} into {module_path.name}'s Net: {type(exc).__name__}: {exc}"
                        ) from None
    test = load_mnist(data_dir_for(data_dir), val_size=0).test  # only the test split is used
    correct = sum(int((loaded.predict(test.images[i : i + BATCH], model=net).cpu() == test.labels[i : i + BATCH]).sum())
                  for i in range(0, len(test), BATCH))
    return Evaluation(module_path, weights_path, correct, len(test), sum(p.numel() for p in net.parameters()))


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{path} is not a Python module (.py); the module comes first, then its weights")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # any error in the user's file is theirs to see, in one line
        raise UserError(f"cannot import {path}: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, "load_weights") or not hasattr(module, "predict"):
        raise UserError(f"{path} has no load_weights() and predict(); export it again with mnist-search's export")
    return module
