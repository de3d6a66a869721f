"""`mnist-search dashboard`: serve optuna-dashboard on the study store (127.0.0.1 unless --host says otherwise)."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from optuna.artifacts import FileSystemArtifactStore

from mnist_search.errors import UserError
from mnist_search.storage import default_artifact_dir, mask_password, open_storage, resolve_storage_url


def run(args: argparse.Namespace) -> int:
    from optuna_dashboard import run_server  # heavy import: only when serving

    url = resolve_storage_url(args.storage)
    storage = open_storage(url)
    _check_port_free(args.host, args.port)
    artifact_dir = Path(args.artifacts) if args.artifacts else default_artifact_dir(url)
    store = FileSystemArtifactStore(str(artifact_dir)) if artifact_dir.is_dir() else None
    print(f"serving {mask_password(url)} at http://{args.host}:{args.port}/dashboard (Ctrl-C to stop)", flush=True)
    run_server(storage, host=args.host, port=args.port, artifact_store=store)
    return 0


def _check_port_free(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
