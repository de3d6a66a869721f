"""`mnist-search export`: the best trial as a standalone Python module (+ weights)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from mnist_search.commands import options

HELP = "write the best trial as a standalone Python module (+ weights)"
DESCRIPTION = """Write the best trial of the study as a standalone Python module (imports only torch) and,
with --weights, its weights. "Best": among completed trials within --max-params, the confirmed one
with the highest mean last-K test accuracy (`mnist-search confirm`), else the one with the highest
validation score; a confirmed trial ships the weights of its median confirmation seed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_storage(parser)
    parser.add_argument("--output", default="best_net.py", help="module to write (default best_net.py)")
    parser.add_argument("--weights", help="also write the trial's weights here (safetensors)")
    parser.add_argument("--max-params", type=int, help="pick the best trial with at most this many parameters")
    parser.add_argument("--force", action="store_true", help="replace the module and weights files if they exist")
    options.add_artifacts(parser)
    add_deploy_arguments(parser)
    options.add_verbosity(parser, quiet=False)


def run(args: argparse.Namespace) -> int:
    from mnist_search.errors import OutputExists, UserError
    from mnist_search.search.exporting import export
    from mnist_search.search.runner import load_existing
    from mnist_search.storage import default_artifact_dir, mask_password, open_storage, resolve_storage_url
    from mnist_search.storage.files import store_files

    url = resolve_storage_url(args.storage)
    study = load_existing(open_storage(url, create=False), args.study_name)
    artifact_dir = Path(args.artifacts) if args.artifacts else default_artifact_dir(url)
    try:
        if args.onnx or args.int8:
            return run_deploy(args, study, url, artifact_dir)
        done = export(study, args.output, weights=args.weights, max_params=args.max_params, artifact_dir=artifact_dir,
                      protected=store_files(url), source_label=mask_password(url), force=args.force)
    except OutputExists as exc:
        raise UserError(f"{exc.path} exists already; add --force to replace it") from None
    print_exported(done)
    return 0


def print_exported(done) -> None:
    record = done.trial
    print(f"wrote {done.module}: trial #{record.number}, score {record.score:.3f}, {record.params:,} params")
    if done.weights is not None:
        print(done.weights_line)
        print(f"wrote {done.weights}")
    name = done.module.stem
    print("use it:")
    print(f"  import {name}")
    print(f"  labels = {name}.predict(images)  # images: uint8 0-255 or float 0-1, 28x28, Nx28x28, Nx1x28x28 or Nx784"
          + ("" if done.weights is not None else f"; pass model={name}.load_weights(PATH)"))
    print(f"  net = {name}.load_weights({str(done.weights or 'PATH')!r})  # the nn.Module itself")


def add_deploy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", help="also write the network as ONNX, preprocessing inside (uint8 images in, logits"
                                       " out), checked against PyTorch on the test set; needs mnist-search[onnx]")
    parser.add_argument("--int8", help="also write a statically quantised int8 ONNX model, calibrated on training"
                                       " images, its accuracy measured on the test set")
    options.add_data_dir(parser)


def run_deploy(args: argparse.Namespace, study, url: str, artifact_dir: Path) -> int:
    """The export with --onnx/--int8: module, weights, ONNX model(s) and the model card."""
    from mnist_search.search.deploying import export_deployable
    from mnist_search.storage import mask_password
    from mnist_search.storage.files import store_files

    # The command as it could be typed again (every value explicit; the store's password masked).
    given = [("--storage", mask_password(url)), ("--study-name", args.study_name), ("--output", args.output),
             ("--weights", args.weights), ("--max-params", args.max_params), ("--artifacts", args.artifacts),
             ("--onnx", args.onnx), ("--int8", args.int8), ("--data-dir", args.data_dir)]
    command = shlex.join(["mnist-search", "export", *(str(x) for flag, value in given if value is not None
                                                      for x in (flag, value))])
    from mnist_search.search.data_dir import data_dir_for

    done = export_deployable(study, args.output, weights=args.weights, onnx=args.onnx, int8=args.int8,
                             data_dir=data_dir_for(args.data_dir, study), max_params=args.max_params, artifact_dir=artifact_dir,
                             protected=store_files(url), source_label=mask_password(url), command=command,
                             force=args.force)
    print_exported(done)
    m = done.measured
    print(f"PyTorch (CPU): test accuracy {m['pytorch_test_accuracy']:.2f}% on {m['test_images']:,} images")
    agreement = m["onnx"]["agreement"]
    print(f"ONNX fp32 (onnxruntime): test accuracy {m['onnx']['test_accuracy']:.2f}%; the same argmax as PyTorch"
          f" on {agreement['same_argmax']:,} of {agreement['images']:,} images, logits within"
          f" {agreement['max_logit_difference']:.2g} (tolerance {agreement['tolerance']:g}); {m['onnx']['bytes']:,} bytes")
    if done.onnx is not None:
        print(f"wrote {done.onnx}")
    if done.int8 is not None:
        q = m["int8"]
        print(f"ONNX int8 (onnxruntime): test accuracy {q['test_accuracy']:.2f}% ({q['drop_points']:+.2f} points"
              f" against fp32); {q['bytes']:,} bytes, {q['size_ratio']:.2f}x fp32; {q['choice']}")
        print(f"wrote {done.int8}")
    print(f"wrote {done.card_json} and {done.card_markdown} (the model card)")
    if done.onnx is not None or done.int8 is not None:
        print("use it with onnxruntime:")
        print(f"  session = onnxruntime.InferenceSession({str(done.onnx or done.int8)!r})")
        print('  logits = session.run(None, {"images": images})[0]  # images: uint8 numpy array, N x 1 x 28 x 28')
    return 0
