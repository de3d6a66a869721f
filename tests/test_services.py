"""The tests' own check for servers and tools: absence skips with the reason (a failure where
services are required), and an unreachable server is told at once, not after a hang."""

import socket
import time

import pytest

from tests import services


def closed_port() -> int:
    with socket.socket() as probe:  # bound, never listening, then closed: nothing answers there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_absent_service_skips_unless_services_are_required(monkeypatch):
    monkeypatch.delenv(services.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="^the server is away$"):
        services.absent("the server is away")
    monkeypatch.setenv(services.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=f"the server is away \\({services.REQUIRE_ENV}=1"):
        services.absent("the server is away")


def test_a_server_that_does_not_answer_is_named_at_once():
    port = closed_port()
    start = time.monotonic()
    error = services.postgres_error(f"postgresql://postgres@127.0.0.1:{port}/test")
    assert error and str(port) in error  # the driver's own words, which name where it tried
    assert time.monotonic() - start < services.CONNECT_TIMEOUT_S


def test_a_missing_tool_skips_saying_how_to_install_it(monkeypatch):
    monkeypatch.delenv(services.REQUIRE_ENV, raising=False)
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(services, "PG_BIN_DIRS", "/nonexistent/postgresql/*/bin")
    with pytest.raises(pytest.skip.Exception, match="no-such-linter is not installed: pip install it"):
        services.tool("no-such-linter", "pip install it")
    with pytest.raises(pytest.skip.Exception, match="initdb not found in /nonexistent/postgresql/.*apt install"):
        services.pg_server_binary("initdb")
