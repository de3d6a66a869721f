"""The model card written beside an export: what the network is, how it was made and checked,
and the files, each with its size and SHA-256, as JSON (for tools) and Markdown (for people).

Everything in it is data: study names and other stored strings are JSON strings in the JSON
card and code spans in the Markdown one (backticks in them are replaced), never markup.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics

from mnist_search.models import ArchSpec, analyse
from mnist_search.models.spec import Conv
from mnist_search.search.records import Confirmation, TrialRecord
from mnist_search.trainer import TrainConfig

CARD_SCHEMA = 1


def conv_macs(spec: ArchSpec) -> int:
    """Multiply-accumulates of the network's convolutions for one image (a shared conv counts at
    each application; BatchNorm folds into the convolutions, and ReLU, pooling and the
    preprocessing are a few thousand operations, left out)."""
    analysis, channels, total = analyse(spec), 1, 0
    for layer, info in zip(spec.layers, analysis.layers):
        if isinstance(layer, Conv):
            out_c, out_h, out_w = info.out_shape
            total += out_c * out_h * out_w * (channels // layer.groups) * layer.k * layer.k
            channels = layer.out
    return total


def file_entry(name: str, content: bytes) -> dict:
    return {"file": name, "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}


def _sample_std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def confirmed_entry(confirmed: Confirmation | None) -> dict | None:
    if confirmed is None:
        return None
    finals = [r.test_acc[-1] for r in confirmed.runs if r.test_acc]
    return {"seeds": [{"seed": r.seed, "status": r.status, "final_test_accuracy": r.test_acc[-1] if r.test_acc else None,
                       "device": r.device} for r in confirmed.runs],
            "final_test_accuracy_mean": statistics.fmean(finals) if finals else None,
            "final_test_accuracy_sample_std": _sample_std(finals) if finals else None,
            "last_k": confirmed.last_k, "lowest_judged_epoch": confirmed.stats.last_k_min,
            "target": confirmed.target, "consistent": confirmed.consistent}


def build_card(*, study_name: str, record: TrialRecord, spec: ArchSpec, config: TrainConfig,
               confirmed: Confirmation | None, weights_line: str, files: dict[str, dict], measured: dict,
               command: str, versions: dict[str, str]) -> dict:
    """The card as a JSON-ready dict. ``files``: role -> :func:`file_entry` (plus any figures for
    that file); ``measured``: the export's own test-set measurements."""
    analysis = analyse(spec)
    macs = conv_macs(spec)
    return {
        "schema": CARD_SCHEMA,
        "kind": "mnist-search model card",
        "study": study_name,
        "trial": record.number,
        "parameters": analysis.params,
        "macs_per_image": macs,
        "flops_per_image": 2 * macs,
        "receptive_field": analysis.receptive_field,
        "validation_score": record.score,
        "confirmed": confirmed_entry(confirmed),
        "weights": weights_line,
        "measured": measured,
        "files": files,
        "input": {"name": "images", "dtype": "uint8", "shape": ["N", 1, 28, 28],
                  "meaning": "MNIST-style pixels 0-255, white digit on black; normalisation is inside the graph"},
        "output": {"name": "logits", "dtype": "float32", "shape": ["N", 10]},
        "recipe": config.to_dict(),
        "architecture": spec.to_dict(),
        "versions": versions,
        "command": command,
    }


def to_json(card: dict) -> bytes:
    # NaN is not JSON: an unknown figure is null.
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return (json.dumps(clean(card), indent=2, ensure_ascii=False) + "\n").encode()


def _code(text: object) -> str:
    """``text`` as a Markdown code span that no stored string can break out of."""
    return "`" + " ".join(str(text).replace("`", "'").split()) + "`"


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.2f}%"


def to_markdown(card: dict) -> bytes:
    m, conf = card["measured"], card["confirmed"]
    lines = [f"# Model card: study {_code(card['study'])} trial #{card['trial']}", "",
             f"- Parameters: {card['parameters']:,}",
             f"- FLOPs per image: {card['flops_per_image']:,} (2 x {card['macs_per_image']:,} multiply-accumulates"
             " of the convolutions)",
             f"- Receptive field: {card['receptive_field']} pixels",
             f"- Validation score (search): {card['validation_score']:.3f}%"]
    if conf:
        seeds = ", ".join(f"seed {s['seed']}: {_pct(s['final_test_accuracy'])}" for s in conf["seeds"])
        std = conf["final_test_accuracy_sample_std"]
        lines.append(f"- Confirmed final test accuracy: {_pct(conf['final_test_accuracy_mean'])}"
                     + (f" +- {std:.3f} (sample std)" if isinstance(std, float) and math.isfinite(std) else "")
                     + f" over {len(conf['seeds'])} seed(s) ({seeds}); consistent >= {conf['target']:g}% in every"
                     f" last-{conf['last_k']} epoch: {'yes' if conf['consistent'] else 'no'}")
    else:
        lines.append("- Not confirmed on the test set")
    lines += [f"- Weights: {_code(card['weights'])}", "", "## Measured by this export (10,000 MNIST test images unless"
              " stated)", "", "| model | test accuracy | file size |", "|---|---|---|"]
    files = card["files"]
    lines.append(f"| PyTorch (this module's network, CPU) | {_pct(m.get('pytorch_test_accuracy'))} | "
                 f"{files['weights']['bytes']:,} B weights |" if "weights" in files else
                 f"| PyTorch (this module's network, CPU) | {_pct(m.get('pytorch_test_accuracy'))} | - |")
    if "onnx" in m:
        size = f"{files['onnx']['bytes']:,} B" if "onnx" in files else f"{m['onnx']['bytes']:,} B (not written)"
        lines.append(f"| ONNX fp32 (onnxruntime) | {_pct(m['onnx']['test_accuracy'])} | {size} |")
    if "int8" in m:
        lines.append(f"| ONNX int8 (onnxruntime) | {_pct(m['int8']['test_accuracy'])} | {files['int8']['bytes']:,} B |")
    if "onnx" in m:
        a = m["onnx"]["agreement"]
        lines += ["", f"fp32 ONNX against PyTorch: the same argmax on {a['same_argmax']:,} of {a['images']:,} test images,"
                  f" logits within {a['max_logit_difference']:.2g} (tolerance {a['tolerance']:g})."
                  + (f" The normalisation is {m['onnx']['normalisation']}." if m["onnx"].get("normalisation") else "")]
    if "int8" in m:
        q = m["int8"]
        lines += ["", f"int8: static quantisation ({q['format']}), calibrated on {q['calibration_images']:,} training"
                  f" images; {q['choice']} Test accuracy {q['drop_points']:+.2f} points against fp32;"
                  f" {q['size_ratio']:.2f}x the fp32 file."]
    lines += ["", "Input `images`: uint8 `[N, 1, 28, 28]`, pixels 0-255, white digit on black (normalisation is"
              " inside the graph). Output `logits`: float32 `[N, 10]`.", "", "## Files", "",
              "| file | bytes | SHA-256 |", "|---|---|---|"]
    lines += [f"| {_code(f['file'])} | {f['bytes']:,} | `{f['sha256']}` |" for f in files.values()]
    lines += ["", "## Made by", "", "```", card["command"].replace("```", "'''"), "```", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()), "",
              "Recipe and architecture: the JSON card beside this file.", ""]
    return "\n".join(lines).encode()
