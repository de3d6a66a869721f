"""optuna-dashboard over a study store, read-only unless asked.

optuna-dashboard's API deletes studies and artifacts, renames studies, writes trial
attributes and notes, and migrates the database schema, with no authentication. Whoever
reaches the port could delete a search or plant values that later commands read. So the
served application is wrapped: only safe methods (GET, HEAD, OPTIONS) reach it unless the
caller explicitly allows writes; everything else is answered 405 before the dashboard sees it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from optuna.storages import BaseStorage

from mnist_search.errors import UserError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY_REASON = "this dashboard is read-only; restart it with writes allowed to edit studies"

log = logging.getLogger(__name__)


def read_only(app: Callable) -> Callable:
    """``app`` (a WSGI application) answering every request that is not a safe method with 405."""

    def guarded(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET").upper() in SAFE_METHODS:
            return app(environ, start_response)
        body = json.dumps({"reason": READ_ONLY_REASON}).encode()
        start_response("405 Method Not Allowed", [("Content-Type", "application/json"),
                                                  ("Allow", ", ".join(sorted(SAFE_METHODS))),
                                                  ("Content-Length", str(len(body)))])
        return [body]

    return guarded


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) reaches only this machine."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow page (a large study) does not block the others."""

    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:
        log.info("%s %s", self.address_string(), format % args)


def make_dashboard_server(storage: BaseStorage, host: str, port: int, artifact_store=None,
                          allow_writes: bool = False) -> WSGIServer:
    """A server for optuna-dashboard on ``storage``, read-only unless ``allow_writes``; call
    ``serve_forever()`` on it. A port that cannot be bound is a UserError."""
    from optuna_dashboard import wsgi  # heavy import: only when serving

    if not 0 <= port < 65536:
        raise UserError(f"the port must be between 1 and 65535 (0: any free port), got {port}")
    app = wsgi(storage, artifact_store=artifact_store)
    server_class = _Server6 if ":" in host else _Server
    try:
        return make_server(host.strip("[]"), port, app if allow_writes else read_only(app),
                           server_class=server_class, handler_class=_QuietHandler)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another port") from None
