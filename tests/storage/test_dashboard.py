"""The dashboard is read-only unless asked: a real server over HTTP on a real SQLite store, and
on a real PostgreSQL database where it writes (or refuses to) through the store."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import optuna
import pytest

from mnist_search.storage import open_storage
from mnist_search.storage.dashboard import is_loopback, make_dashboard_server, read_only
from tests.helpers import assert_user_error, cli


def request(url: str, method: str = "GET", body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def with_kept_study(url: str) -> str:
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="kept")
    study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"params": 100}))
    storage.engine.dispose()
    return url


@pytest.fixture
def store(tmp_path):
    """A SQLite store, for what the server does whatever its store (pages, connections, warnings)."""
    return with_kept_study(f"sqlite:///{tmp_path / 'dash.db'}")


def serve(url: str, allow_writes: bool):
    server = make_dashboard_server(open_storage(url), "127.0.0.1", 0, allow_writes=allow_writes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("allow_writes", [False, True])
def test_writes_reach_the_store_only_when_allowed(storage_url, allow_writes):
    server, base = serve(with_kept_study(storage_url), allow_writes)
    store = open_storage(storage_url)
    try:
        status, body = request(f"{base}/api/studies")
        assert status == 200
        study_id = json.loads(body)["study_summaries"][0]["study_id"]
        trial_id = optuna.load_study(study_name="kept", storage=store).trials[0]._trial_id
        status, _ = request(f"{base}/api/trials/{trial_id}/user-attrs", "POST", {"user_attrs": {"params": "x"}})
        assert (status == 405) != allow_writes
        status, _ = request(f"{base}/api/studies/{study_id}/note", "PUT", {"version": 1, "body": "planted"})
        assert (status == 405) != allow_writes
        status, _ = request(f"{base}/api/studies/{study_id}", "DELETE")
        assert (status == 405) != allow_writes
        kept = [s.study_name for s in optuna.get_all_study_summaries(store)]
        assert kept == ([] if allow_writes else ["kept"])
        if not allow_writes:
            trial = optuna.load_study(study_name="kept", storage=store).trials[0]
            assert trial.user_attrs == {"params": 100}
    finally:
        server.shutdown()
        server.server_close()
        store.engine.dispose()


def test_the_read_only_wrapper_passes_safe_methods_and_refuses_the_rest():
    calls = []

    def app(environ, start_response):
        calls.append(environ["REQUEST_METHOD"])
        start_response("200 OK", [])
        return [b"ok"]

    guarded = read_only(app)
    statuses = []
    for method in ("GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH", "get", "PROPFIND"):
        body = guarded({"REQUEST_METHOD": method}, lambda status, headers: statuses.append(status))
        assert b"".join(body)
    assert calls == ["GET", "HEAD", "OPTIONS", "get"]
    assert statuses.count("405 Method Not Allowed") == 5


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                             ("127.0.0.2", True), ("0.0.0.0", False), ("::", False),
                                             ("192.168.1.20", False), ("10.0.0.1", False)])
def test_loopback_addresses_are_told_apart(host, loopback):
    assert is_loopback(host) is loopback


def test_writes_on_a_network_address_need_a_second_flag(store):
    assert_user_error(cli("dashboard", "--storage", store, "--host", "0.0.0.0", "--allow-writes"),
                      "--allow-remote-writes")


def test_a_network_address_warns_that_there_is_no_authentication(store):
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mnist_search", "dashboard", "--storage", store, "--host",
                               "0.0.0.0", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and request_ok(f"http://127.0.0.1:{port}/api/studies") is None:
            time.sleep(0.3)
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
    assert err.splitlines()[0].startswith("warning:") and "no authentication" in err.splitlines()[0], err
    assert "read-only" in out


def request_ok(url: str) -> int | None:
    try:
        return request(url)[0]
    except OSError:
        return None


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt install chromium)")
def test_every_page_renders_in_a_real_browser_when_read_only(store, tmp_path):
    """The dashboard's pages draw from GET requests only, so the read-only wrapper breaks none of them."""
    from optuna_dashboard import save_note

    study = optuna.load_study(study_name="kept", storage=store)
    trial = study.ask()
    save_note(trial, "**a trial note** that the page shows")
    study.tell(trial, 2.0)
    server, base = serve(store, allow_writes=False)
    study_id = json.loads(request(f"{base}/api/studies")[1])["study_summaries"][0]["study_id"]
    try:
        pages = {"/dashboard": "kept", f"/dashboard/studies/{study_id}": "kept",
                 f"/dashboard/studies/{study_id}/trials?numbers={trial.number}": "a trial note"}
        for path, text in pages.items():
            dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=8000",
                                  f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", base + path],
                                 capture_output=True, text=True, timeout=120).stdout
            assert text in dom, f"{path} did not render {text!r}"
    finally:
        server.shutdown()
        server.server_close()


def test_connections_are_capped_and_idle_ones_closed(store):
    server = make_dashboard_server(open_storage(store), "127.0.0.1", 0, max_connections=4, idle_timeout_s=1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    address = server.server_address
    try:
        before = threading.active_count()
        idle = [socket.create_connection(address, timeout=5) for _ in range(20)]  # each sends nothing
        answers = [s.recv(64) for s in idle[4:]]
        assert all(a.startswith(b"HTTP/1.0 503") for a in answers), answers  # over the cap: refused at once
        assert threading.active_count() - before <= 4
        started = time.monotonic()
        assert all(s.recv(64) == b"" for s in idle[:4])  # closed by the server once idle for 1 s
        assert time.monotonic() - started < 4
        status, _ = request(f"http://127.0.0.1:{address[1]}/api/studies")
        assert status == 200  # the slots are free again
        for s in idle:
            s.close()
    finally:
        server.shutdown()
        server.server_close()
