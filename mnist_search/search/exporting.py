"""Export: the study's best network as a standalone Python module, with the weights that go with it.

Which trial (the best confirmed one within the budget, else the best by validation score) and
which weights (a confirmed trial's median seed) are chosen here; the module's source comes from
:func:`mnist_search.models.export.export_source`, which encodes and checks every value.

An export writes files next to irreplaceable ones (the study store, the trials' weights), from
paths a user typed. So every output is resolved first and refused when it is the store, lies
in the artifact directory, is an input, or is the other output; the weights are read and
checked before anything is written; and both files are written to temporary names and renamed
into place only when both are complete, so a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna

from mnist_search.errors import OutputExists, UserError
from mnist_search.models import ArchSpec, build
from mnist_search.models.export import export_source, relative_weights_path
from mnist_search.search.artifacts import read_weights
from mnist_search.search.meter import plural
from mnist_search.search.records import Confirmation, RecordError, TrialRecord, best_trial, confirmation
from mnist_search.storage.files import check_output, write_files
from mnist_search.trainer import TrainConfig
from mnist_search.trainer.data import mnist_dir


@dataclass(frozen=True)
class Exported:
    """What an export wrote and where it came from."""

    trial: TrialRecord
    module: Path
    weights: Path | None
    weights_line: str  # whose weights these are, as the module's docstring says


def export(study: optuna.Study, output: str | os.PathLike, weights: str | os.PathLike | None = None,
           max_params: int | None = None, artifact_dir: str | os.PathLike | None = None,
           protected: tuple[str | os.PathLike, ...] = (), source_label: str = "", force: bool = False,
           deploy: Callable[..., list[tuple[Path, bytes]]] | None = None) -> Exported:
    """Write the best trial of ``study`` (within ``max_params``) as a module at ``output`` and,
    with ``weights``, its weights there (safetensors).

    ``artifact_dir`` holds the trials' weights; ``protected`` names further files no output may
    replace (the store's files); ``source_label`` says where the study lives (no password) in the
    module's docstring. An output that exists already is refused unless ``force``. ``deploy``
    (see :mod:`mnist_search.search.deploying`) adds more outputs, built from the checked
    weights; all are written together or not at all.
    """
    record = best_trial(study, max_params)
    spec = ArchSpec.from_dict(record.spec)
    try:
        config = TrainConfig.from_dict(record.config)
    except TypeError:  # a value of the wrong type, edited into the store
        raise RecordError(f"trial #{record.number}'s stored config holds a value of the wrong type") from None
    confirmed = confirmation(study, record.number)
    module_path = Path(output)
    weights_path = Path(weights) if weights is not None else None
    artifacts = Path(artifact_dir) if artifact_dir is not None else None
    _check_outputs(module_path, weights_path, artifacts, protected, force)

    artifact_id, sha256, owner, weights_line = weights_source(record, confirmed)
    blob = None
    if weights_path is not None or deploy is not None:
        if artifacts is None:
            raise UserError("exporting weights needs the artifact directory the trials' weights are in")
        expected = {name: tuple(t.shape) for name, t in build(spec).state_dict().items()}
        blob = read_weights(artifacts, artifact_id, sha256, expected, owner)
    details = describe(study, record, confirmed, config, spec, weights_line if weights_path else None, source_label)
    source = export_source(spec, f"Net: the best network of mnist-search study {study.study_name!r}", details,
                           weights=relative_weights_path(module_path, weights_path) if weights_path else None)
    check_computes_the_same(source, spec, blob, f"trial #{record.number}")
    # The weights first and the module last: a module must never be in place without the weights it loads.
    outputs = [(weights_path, blob)] if weights_path is not None else []
    module_output = (module_path, source.encode())
    if deploy is not None:
        outputs += deploy(record, confirmed, spec, config, blob, weights_line, [module_output, *outputs])
    write_files(outputs + [module_output])
    return Exported(record, module_path, weights_path, weights_line)


def check_computes_the_same(source: str, spec: ArchSpec, blob: bytes | None, what: str) -> None:
    """UserError unless the generated module's ``Net`` computes what the library's network of
    ``spec`` computes, with the same weights (``blob``, else seeded ones), on fixed inputs.

    The source is the checked template (``export_source`` parsed it back), so running it runs
    only its own definitions; a spec the template renders differently from the trainer's
    network (an edited field both accept) would otherwise ship a network nobody trained.
    """
    import torch
    from safetensors.torch import load

    from mnist_search.trainer import build_seeded

    library = build_seeded(spec, 0)
    if blob is not None:
        library.load_state_dict(load(blob))
    namespace: dict = {"__name__": "mnist_search_export_check"}
    exec(compile(source, "<exported module>", "exec"), namespace)  # noqa: S102 - the checked template
    generated = namespace["Net"]()
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(8, 1, 28, 28, generator=generator)
    # Also with every tensor drawn at random: fresh BatchNorm statistics are an identity that
    # would hide, say, a norm and a ReLU in the wrong order.
    drawn = {name: torch.rand(t.shape, generator=generator) + 0.5 if t.is_floating_point() else t
             for name, t in library.state_dict().items()}
    for state in (library.state_dict(), drawn):
        library.load_state_dict(state)
        try:
            generated.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"the module generated for {what} does not hold its network's tensors "
                            f"({str(exc).splitlines()[0]}); nothing was written") from None
        with torch.no_grad():
            expected, got = library.eval()(inputs), generated.eval()(inputs)
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-4):
            difference = (got - expected).abs().max().item() if got.shape == expected.shape else float("nan")
            raise UserError(f"the module generated for {what} computes something other than its network (largest "
                            f"difference {difference:.3g} on fixed inputs); its stored spec may have been edited; "
                            "nothing was written")


def weights_source(record: TrialRecord, confirmed: Confirmation | None) -> tuple[str | None, str | None, str, str]:
    """The artifact to export as weights, its checksum, whose they are, and a docstring line saying so.

    A confirmed trial ships the weights of its median-accuracy confirmation seed (trained on
    all 60k images), so the module's stated test accuracy is reproducible from them.
    """
    representative = confirmed.representative() if confirmed else None
    if representative:
        run, count = representative
        return run.weights_artifact, run.weights_sha256, f"confirmation seed {run.seed} of trial #{record.number}", (
            f"Weights (load_weights): confirmation seed {run.seed}, the median of {count} completed seeds, trained"
            f" on all 60,000 training images; its final test accuracy is {run.test_acc[-1]:.2f}%"
            f"{measured_on(run.device)}.")
    final = record.history[-1] if record.history else float("nan")
    return record.weights_artifact, record.weights_sha256, f"trial #{record.number}", (
        f"Weights (load_weights): the search trial's own, trained on the training split; final validation "
        f"accuracy {final:.2f}%.")


def measured_on(device: str | None) -> str:
    """Where a confirmation seed was scored (older confirmations did not record it)."""
    if device == "cuda":
        # Seen on the H100: one test image whose top two logits differed by 0.0004 flipped (RESULTS.md).
        return (" (scored on a CUDA GPU, where PyTorch runs convolutions in TF32: on a CPU an image whose"
                " top two logits nearly tie can fall the other way)")
    return f" (scored on the {device.upper()})" if device else ""


def describe(study: optuna.Study, record: TrialRecord, confirmed: Confirmation | None, config: TrainConfig,
             spec: ArchSpec, weights_line: str | None, source_label: str) -> str:
    """The module docstring's body: provenance, scores, confirmation, recipe and architecture."""
    from mnist_search.models import analyse

    analysis = analyse(spec)
    where = f" ({source_label})" if source_label else ""
    seeds = ""
    if record.seed_scores:
        seeds = (f", the mean over {len(record.seed_scores)} training seeds "
                 f"({', '.join(f'{s:.3f}' for s in record.seed_scores)})")
    last_k_min = record.last_k_min if record.last_k_min is not None else float("nan")
    lines = [
        f"Exported by mnist-search from study {study.study_name!r} trial #{record.number}{where}.",
        "",
        f"Parameters: {analysis.params:,}",
        f"Receptive field: {analysis.receptive_field}",
        f"Score (mean validation accuracy of the last epochs): {record.score:.3f}%{seeds}",
        f"Minimum validation accuracy over those epochs: {last_k_min:.2f}%",
        f"Validation accuracy per epoch{' (first seed)' if record.seed_scores else ''}: "
        + ", ".join(f"{a:.2f}" for a in record.history),
        *confirmation_lines(confirmed),
        *([weights_line] if weights_line else []),
        *averaging_lines(config),
        "Training recipe (mnist_search TrainConfig):",
        json.dumps(config.to_dict(), indent=4),
        "",
        "Architecture (mnist_search ArchSpec):",
        spec.to_json(),
    ]
    return "\n".join(lines)


def confirmation_lines(confirmed: Confirmation | None) -> list[str]:
    if confirmed is None:
        return ["Not confirmed on the test set yet (run `mnist-search confirm`)."]
    s, k = confirmed.stats, confirmed.last_k
    lines = [
        f"Confirmed on the MNIST test set ({plural(len(confirmed.runs), 'seed')}, trained on all 60,000 training images):",
        f"  final test accuracy {s.final_mean:.2f} +- {s.final_std:.2f}%; last {plural(k, 'epoch')} {s.last_k_mean:.2f}"
        f" +- {s.last_k_std:.2f}%, minimum {s.last_k_min:.2f}%; every last-{k} epoch of every seed >="
        f" {confirmed.target:g}%: {'yes' if confirmed.consistent else 'no'}",
    ]
    lines += [f"  seed {r.seed}: " + ", ".join(f"{a:.2f}" for a in r.test_acc) for r in confirmed.runs]
    if confirmed.raw is not None:
        lines.append(f"  the same runs' raw (unaveraged) weights: final {confirmed.raw.final_mean:.2f}"
                     f" +- {confirmed.raw.final_std:.2f}%, minimum of the last {k} {confirmed.raw.last_k_min:.2f}%")
    return lines


def averaging_lines(config: TrainConfig) -> list[str]:
    """Says that the accuracies and weights are those of the averaged network, when the recipe averages."""
    if not config.ema_epochs:
        return []
    return [f"The network evaluated above and shipped is an exponential moving average of the training weights"
            f" over about {config.ema_epochs:.3g} epoch(s) of steps (TrainConfig.ema_epochs), not the last step's."]


def _check_outputs(module: Path, weights: Path | None, artifact_dir: Path | None,
                   protected: tuple[str | os.PathLike, ...], force: bool = False) -> None:
    """Refuse outputs that would replace the store, an artifact, an input or each other."""
    outputs = [("module", module)] + ([("weights", weights)] if weights is not None else [])
    if weights is not None and module.resolve() == weights.resolve():
        raise UserError(f"the module and the weights would both be written to {module}; give them different paths")
    dirs = [(mnist_dir(), "the MNIST files")]
    if artifact_dir is not None:
        dirs.append((artifact_dir, "the trials' weights (the artifact directory)"))
    for what, path in outputs:
        check_output(path, f"the {what} output", protected, dirs)
        if not force and path.exists():
            raise OutputExists(f"{path} exists already (an earlier export?); set force to replace it", str(path))
