"""The Dockerfile and docker-compose.yml pass their linters (no Docker engine runs here)."""

import subprocess
from pathlib import Path

from tests.services import tool

ROOT = Path(__file__).resolve().parents[1]
INSTALL = "pip install -e '.[dev]'"


def test_dockerfile_passes_hadolint():
    result = subprocess.run([tool("hadolint", INSTALL), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_the_compose_spec():
    result = subprocess.run([tool("check-jsonschema", INSTALL), "--builtin-schema", "vendor.compose-spec",
                             str(ROOT / "docker-compose.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
