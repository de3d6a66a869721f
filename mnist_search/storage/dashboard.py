"""optuna-dashboard over a study store, read-only unless asked.

optuna-dashboard's API deletes studies and artifacts, renames studies, writes trial
attributes and notes, and migrates the database schema, with no authentication. Whoever
reaches the port could delete a search or plant values that later commands read. So the
served application is wrapped: only safe methods (GET, HEAD, OPTIONS) reach it unless the
caller explicitly allows writes; everything else is answered 405 before the dashboard sees it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from optuna.storages import BaseStorage

from mnist_search.errors import UserError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY_REASON = "this dashboard is read-only; restart it with writes allowed to edit studies"

MAX_CONNECTIONS = 64
IDLE_TIMEOUT_S = 30
BUSY_RESPONSE = (b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
                 b"Connection: close\r\n\r\n")

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
    """One thread per request: a slow page (a large study) does not block the others.

    At most ``max_connections`` at once: each holds a thread, and idle connections opened by
    anyone who can reach the port would otherwise grow threads without bound (400 idle ones
    made 400). One over the cap is answered 503 and closed at once.
    """

    daemon_threads = True
    max_connections = MAX_CONNECTIONS
    request_queue_size = 128  # pending connections the kernel queues (socketserver's 5 delays a burst by seconds)

    def server_activate(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().server_activate()

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(BUSY_RESPONSE)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    timeout = IDLE_TIMEOUT_S  # a connection that sends nothing for this long is closed

    def handle(self) -> None:
        try:
            super().handle()
        except TimeoutError:  # idle past the timeout: closed, which is all there is to say
            log.info("%s closed after %s s idle", self.address_string(), self.timeout)

    def log_message(self, format: str, *args) -> None:
        log.info("%s %s", self.address_string(), format % args)


def make_dashboard_server(storage: BaseStorage, host: str, port: int, artifact_store=None,
                          allow_writes: bool = False, max_connections: int = MAX_CONNECTIONS,
                          idle_timeout_s: float = IDLE_TIMEOUT_S) -> WSGIServer:
    """A server for optuna-dashboard on ``storage``, read-only unless ``allow_writes``; call
    ``serve_forever()`` on it. It serves at most ``max_connections`` at once and closes a
    connection idle for ``idle_timeout_s``. A port that cannot be bound is a UserError."""
    from optuna_dashboard import wsgi  # heavy import: only when serving

    if not 0 <= port < 65536:
        raise UserError(f"the port must be between 1 and 65535 (0: any free port), got {port}")
    app = wsgi(storage, artifact_store=artifact_store)
    server_class = type("Server", (_Server6 if ":" in host else _Server,), {"max_connections": max_connections})
    handler_class = type("Handler", (_QuietHandler,), {"timeout": idle_timeout_s})
    try:
        return make_server(host.strip("[]"), port, app if allow_writes else read_only(app),
                           server_class=server_class, handler_class=handler_class)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another port") from None
