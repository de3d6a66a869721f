"""`mnist-search dashboard`: browse the study store in optuna-dashboard (read-only unless asked)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_search.commands import options
from mnist_search.errors import UserError

HELP = "browse the study store in optuna-dashboard (read-only unless --allow-writes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_storage(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    options.add_artifacts(parser)
    parser.add_argument("--allow-writes", action="store_true",
                        help="let the dashboard edit the store (delete studies, edit notes and attributes); "
                             "default: read-only")
    parser.add_argument("--allow-remote-writes", action="store_true",
                        help="with --allow-writes on a non-loopback --host: accept unauthenticated writes from the "
                             "network")
    options.add_verbosity(parser, quiet=False)


def run(args: argparse.Namespace) -> int:
    from optuna.artifacts import FileSystemArtifactStore

    from mnist_search.storage import default_artifact_dir, mask_password, open_storage, resolve_storage_url
    from mnist_search.storage.dashboard import is_loopback, make_dashboard_server

    remote = not is_loopback(args.host)
    if remote and args.allow_writes and not args.allow_remote_writes:
        raise UserError(f"--allow-writes on {args.host} lets anyone who reaches it delete studies (the dashboard has "
                        "no authentication); bind to 127.0.0.1, or add --allow-remote-writes if you mean it")
    url = resolve_storage_url(args.storage)
    storage = open_storage(url, create=False)
    artifact_dir = Path(args.artifacts) if args.artifacts else default_artifact_dir(url)
    store = FileSystemArtifactStore(str(artifact_dir)) if artifact_dir.is_dir() else None
    server = make_dashboard_server(storage, args.host, args.port, store, allow_writes=args.allow_writes)
    if remote:
        print(f"warning: {args.host} is reachable from other machines and the dashboard has no authentication",
              file=sys.stderr)
    mode = "read-write" if args.allow_writes else "read-only"
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {mask_password(url)} ({mode}) at http://{shown_host}:{server.server_address[1]}/dashboard (Ctrl-C to stop)",
          flush=True)
    with server:
        server.serve_forever()
    return 0
