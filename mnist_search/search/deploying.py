"""Export for deployment: the chosen network also as ONNX (preprocessing inside), as a statically
quantised int8 ONNX model, and a model card, next to the module and weights `export` writes.

Everything is built and measured before anything is written, and written together with the
module and weights (:func:`mnist_search.search.exporting.export` stages all of them and renames
them into place only when every one is complete):

- fp32 ONNX: refused unless onnxruntime and the PyTorch network agree on every test image's
  argmax and on every logit within ``LOGIT_TOLERANCE``;
- int8: calibrated on training images only. Whether the weights get one scale per output
  channel or one per tensor is decided on other training images (never the test set): the
  smaller file among the versions within ``SELECTION_MARGIN`` points of the fp32 model's
  accuracy there, else the more accurate (see :func:`choose_int8`). The test set then only
  measures the chosen one (and, for the card, the other);
- the card (``<module>.card.json`` and ``.card.md``): figures, files with sizes and SHA-256,
  and the command.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import torch

from mnist_search.errors import OutputExists, UserError
from mnist_search.models import ArchSpec, build
from mnist_search.search import card as cards
from mnist_search.search.exporting import Exported, export
from mnist_search.search.records import Confirmation, TrialRecord
from mnist_search.trainer import TrainConfig

CALIBRATION_IMAGES = 1000  # onnxruntime's min/max calibration is settled well before this many
SELECTION_IMAGES = 10_000  # held-out training images that decide per-channel or per-tensor
SPLIT_SEED = 31  # fixed: the calibration and selection images of a network never change between exports
# How far below the fp32 model's accuracy on the selection images an int8 version may be and
# still be chosen for being smaller. Half the 0.10 points the 8k network's int8 model may lose
# on the test set: the selection images are another 10,000, so the same model's drop there and
# on the test set differ by a few images (at most 0.07 points for every committed network and
# both versions, RESULTS.md "ONNX and int8"). Per-tensor scales save 4 bytes per output channel
# (the per-channel zero points are one scalar either way): 1.4 kB for the 8k network, 15% of
# its int8 file; every committed network's per-tensor version was within the margin.
SELECTION_MARGIN = 0.05


@dataclass(frozen=True)
class Deployed(Exported):
    """What an export for deployment wrote, and what it measured (the card's ``measured``)."""

    onnx: Path | None = None
    int8: Path | None = None
    card_json: Path | None = None
    card_markdown: Path | None = None
    measured: dict = field(default_factory=dict)


def card_paths(module: str | os.PathLike) -> tuple[Path, Path]:
    """Where the card of the module at ``module`` goes: beside it, ``NAME.card.json`` and ``NAME.card.md``."""
    module = Path(module)
    return module.with_name(module.stem + ".card.json"), module.with_name(module.stem + ".card.md")


def export_deployable(study: optuna.Study, output: str | os.PathLike, weights: str | os.PathLike | None = None, *,
                      onnx: str | os.PathLike | None = None, int8: str | os.PathLike | None = None,
                      data_dir: str | os.PathLike | None = None, max_params: int | None = None,
                      artifact_dir: str | os.PathLike | None = None, protected: tuple[str | os.PathLike, ...] = (),
                      source_label: str = "", command: str = "",
                      calibration_images: int = CALIBRATION_IMAGES, force: bool = False) -> Deployed:
    """:func:`~mnist_search.search.exporting.export` plus the ``onnx`` model, the ``int8`` one and
    the model card (at least one of ``onnx`` and ``int8``). ``data_dir`` holds MNIST: its test set
    checks and measures the models, its training set calibrates int8. ``command`` is recorded in
    the card as what made it. Existing outputs are replaced only with ``force``."""
    from mnist_search.models.onnx_export import require_onnx
    from mnist_search.trainer import load_mnist, resolve_data_dir

    if onnx is None and int8 is None:
        raise UserError("an export for deployment needs an onnx or an int8 output path")
    if calibration_images < 1:
        raise UserError(f"calibration_images must be at least 1, got {calibration_images}")
    require_onnx()  # before any work: a missing package is one line, not a traceback after minutes
    card_json, card_md = card_paths(output)
    named = {"onnx": onnx, "int8": int8, "card": card_json, "Markdown card": card_md}
    paths = {what: Path(p) for what, p in named.items() if p is not None}
    _check_paths(paths, {"module": Path(output), **({"weights": Path(weights)} if weights is not None else {})},
                 [*protected, *(p for p in (artifact_dir, resolve_data_dir(data_dir) / "MNIST") if p is not None)])
    existing = next((path for path in paths.values() if path.exists()), None)
    if existing is not None and not force:
        raise OutputExists(f"{existing} exists already (an earlier export?); set force to replace it", str(existing))
    data = load_mnist(data_dir, val_size=0)
    done: dict = {}

    def build_outputs(record: TrialRecord, confirmed: Confirmation | None, spec: ArchSpec, config: TrainConfig,
                      blob: bytes, weights_line: str, staged: list[tuple[Path, bytes]]) -> list[tuple[Path, bytes]]:
        measured, models = measure(spec, blob, data, want_int8=int8 is not None,
                                   calibration_images=calibration_images)
        outputs = [(paths["onnx"], models["onnx"])] if "onnx" in paths else []
        outputs += [(paths["int8"], models["int8"])] if "int8" in paths else []
        roles = {"module": staged[0]} | ({"weights": staged[1]} if len(staged) > 1 else {})
        roles |= {role: item for role, item in zip([r for r in ("onnx", "int8") if r in paths], outputs)}
        files = {role: cards.file_entry(path.name, content) for role, (path, content) in roles.items()}
        card = cards.build_card(study_name=study.study_name, record=record, spec=spec, config=config,
                                confirmed=confirmed, weights_line=weights_line, files=files, measured=measured,
                                command=command, versions=versions())
        done["measured"] = measured
        return outputs + [(card_json, cards.to_json(card)), (card_md, cards.to_markdown(card))]

    exported = export(study, output, weights=weights, max_params=max_params, artifact_dir=artifact_dir,
                      protected=protected, source_label=source_label, force=force, deploy=build_outputs)
    return Deployed(**vars(exported), onnx=paths.get("onnx"), int8=paths.get("int8"), card_json=card_json,
                    card_markdown=card_md, measured=done["measured"])


def measure(spec: ArchSpec, blob: bytes, data, want_int8: bool, calibration_images: int = CALIBRATION_IMAGES
            ) -> tuple[dict, dict[str, bytes]]:
    """Build the ONNX model(s) of ``spec`` with weights ``blob`` and measure them on ``data``
    (an MNISTData with every training image in ``train``): figures for the card, and the bytes."""
    from safetensors.torch import load as load_safetensors

    from mnist_search.models import onnx_export as ox

    net = build(spec)
    net.load_state_dict(load_safetensors(blob))
    net.eval()
    test = data.test
    fp32 = ox.to_onnx(net)
    reference = ox.torch_logits(net, test.images)
    fp32_logits = ox.onnx_logits(fp32, test.images)
    agreement = ox.check_agreement(reference, fp32_logits)
    measured: dict = {
        "test_images": len(test),
        "pytorch_test_accuracy": ox.accuracy(reference, test.labels),
        "onnx": {"test_accuracy": ox.accuracy(fp32_logits, test.labels), "bytes": len(fp32), "opset": ox.OPSET,
                 "normalisation": ("folded into the first convolution" if ox.normalisation_folded(fp32)
                                   else "nodes of its own before the first convolution"),
                 "agreement": agreement.to_dict()},
    }
    models = {"onnx": fp32}
    if want_int8:
        measured["int8"], models["int8"] = _int8(fp32, data.train, test, measured["onnx"]["test_accuracy"],
                                                 calibration_images)
    return measured, models


@dataclass(frozen=True)
class Int8Candidate:
    """One int8 version of a model, measured on the selection images."""

    model: bytes
    selection_accuracy: float
    logit_error: float  # mean absolute difference from the fp32 model's logits


def choose_int8(candidates: dict[bool, Int8Candidate], fp32_selection_accuracy: float) -> tuple[bool, bool]:
    """Which candidate (keyed by per-channel or not) to ship, and whether it was chosen for its
    size: the smallest of those within SELECTION_MARGIN points of the fp32 accuracy on the
    selection images (on equal size the smaller logit error), else the most accurate there (on a
    tie the smaller logit error)."""
    near = [key for key, c in candidates.items()
            if c.selection_accuracy >= fp32_selection_accuracy - SELECTION_MARGIN - 1e-9]
    if near:
        return min(near, key=lambda key: (len(candidates[key].model), candidates[key].logit_error)), True
    return max(candidates, key=lambda key: (candidates[key].selection_accuracy, -candidates[key].logit_error)), False


def _int8(fp32: bytes, train, test, fp32_accuracy: float, calibration_images: int) -> tuple[dict, bytes]:
    from mnist_search.models import onnx_export as ox

    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_calibration = min(calibration_images, len(train) // 2)
    calibration = train.images[order[:n_calibration]]
    held_out = order[n_calibration : n_calibration + SELECTION_IMAGES]
    selection_images, selection_labels = train.images[held_out], train.labels[held_out]
    fp32_selection = ox.onnx_logits(fp32, selection_images)
    fp32_selection_accuracy = ox.accuracy(fp32_selection, selection_labels)
    candidates = {}
    for per_channel in (True, False):
        model = ox.quantize(fp32, calibration, per_channel=per_channel)
        logits = ox.onnx_logits(model, selection_images)
        candidates[per_channel] = Int8Candidate(model, ox.accuracy(logits, selection_labels),
                                                float(np.abs(logits - fp32_selection).mean()))
    chosen, for_size = choose_int8(candidates, fp32_selection_accuracy)
    other = not chosen
    name = {True: "per-channel", False: "per-tensor"}
    c, o = candidates[chosen], candidates[other]
    test_accuracy = {pc: ox.accuracy(ox.onnx_logits(candidates[pc].model, test.images), test.labels)
                     for pc in (True, False)}
    why = (f"the smaller file ({len(c.model):,} bytes against {len(o.model):,}) within {SELECTION_MARGIN:.2f} points"
           " of fp32 there" if for_size else
           f"neither within {SELECTION_MARGIN:.2f} points of fp32 there, the more accurate")
    choice = (f"{name[chosen]} weight scales: {c.selection_accuracy:.2f}% on {len(held_out):,} other training images"
              f" (fp32 {fp32_selection_accuracy:.2f}%) against {o.selection_accuracy:.2f}% {name[other]}, {why}"
              f" (mean logit error against fp32 {c.logit_error:.3f} against {o.logit_error:.3f}).")
    return {
        "test_accuracy": test_accuracy[chosen],
        "drop_points": round(test_accuracy[chosen] - fp32_accuracy, 6),
        "bytes": len(c.model),
        "size_ratio": round(len(c.model) / len(fp32), 4),
        "per_channel": chosen,
        "choice": choice,
        "format": "QOperator, int8 weights, uint8 activations, int32 biases, min/max calibration",
        "calibration_images": n_calibration,
        "calibration_source": "training images (fixed random draw)",
        "selection_images": len(held_out),
        "selection_margin_points": SELECTION_MARGIN,
        "selection_fp32_accuracy": fp32_selection_accuracy,
        "selection_accuracy": {name[True]: candidates[True].selection_accuracy,
                               name[False]: candidates[False].selection_accuracy},
        "test_accuracy_both": {name[True]: test_accuracy[True], name[False]: test_accuracy[False]},
        "bytes_both": {name[True]: len(candidates[True].model), name[False]: len(candidates[False].model)},
    }, c.model


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def _check_paths(paths: dict[str, Path], others: dict[str, Path], guarded: list) -> None:
    """Refuse outputs that are links, directories, in a missing directory, the store, an artifact,
    an input, the module, the weights or each other."""
    for what, path in others.items():
        if path.is_symlink():
            raise UserError(f"the {what} output {path} is a symbolic link; name a regular file (links are not"
                            " followed)")
    seen = {what: path.resolve() for what, path in others.items()}
    guarded_resolved = [Path(g).resolve() for g in guarded]
    for what, path in paths.items():
        if path.is_symlink():
            raise UserError(f"the {what} output {path} is a symbolic link; name a regular file (links are not"
                            " followed)")
        target = path.resolve()
        if target.is_dir():
            raise UserError(f"the {what} output {path} is a directory; name a file")
        if not target.parent.is_dir():
            raise UserError(f"the directory of the {what} output {path} does not exist; create it first")
        for other, where in seen.items():
            if target == where:
                raise UserError(f"the {what} output and the {other} would both be written to {path}; give them"
                                " different paths")
        if any(target == g or g in target.parents for g in guarded_resolved):
            raise UserError(f"the {what} output {path} would replace the study store, a trial's weights or the"
                            " MNIST files; choose another path")
        seen[what] = target

