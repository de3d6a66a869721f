"""`mnist-search export`: the best trial as a standalone Python module (+ weights)."""

from __future__ import annotations

import argparse
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
        done = export(study, args.output, weights=args.weights, max_params=args.max_params, artifact_dir=artifact_dir,
                      protected=store_files(url), source_label=mask_password(url), force=args.force)
    except OutputExists as exc:
        raise UserError(f"{exc.path} exists already; add --force to replace it") from None
    record = done.trial
    print(f"wrote {done.module}: trial #{record.number}, score {record.score:.3f}, {record.params:,} params")
    if done.weights is not None:
        print(done.weights_line)
        print(f"wrote {done.weights}")
    name = done.module.stem
    print("use it:")
    print(f"  import {name}")
    print(f"  labels = {name}.predict(images)  # images: uint8 0-255 or float 0-1, 28x28, Nx28x28 or Nx1x28x28"
          + ("" if done.weights is not None else f"; pass model={name}.load_weights(PATH)"))
    print(f"  net = {name}.load_weights({str(done.weights or 'PATH')!r})  # the nn.Module itself")
    return 0
