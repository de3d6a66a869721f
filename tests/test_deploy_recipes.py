"""The cluster recipes under deploy/, checked as far as an offline check can: the Kubernetes Job
parses and names what it must, the Slurm array script is valid bash, and both start
`mnist-search worker` with flags the worker really takes (parsed by the command's own parser)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from mnist_search.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
JOB = DEPLOY / "kubernetes" / "worker-job.yaml"
SLURM = DEPLOY / "slurm" / "worker-array.sh"


def worker_args(argv: list[str]):
    """``argv`` (after `mnist-search`) parsed as the command parses it: a flag the worker does
    not take exits 2 here, as it would on the cluster."""
    args = build_parser().parse_args(argv)
    assert args.verb == "worker"
    return args


def job_documents() -> list[dict]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (it comes with optuna)")
    return [doc for doc in yaml.safe_load_all(JOB.read_text()) if doc]


def test_the_kubernetes_job_runs_n_workers_with_the_storage_url_from_a_secret():
    (job,) = [doc for doc in job_documents() if doc.get("kind") == "Job"]
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert isinstance(spec["parallelism"], int) and spec["parallelism"] >= 2
    assert spec["completions"] == spec["parallelism"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # what podFailurePolicy requires
    (container,) = pod["containers"]
    assert container["image"].endswith("mnist-search:latest")
    assert container["command"] == ["mnist-search", "worker"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["MNIST_SEARCH_STORAGE"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "mnist-search-storage", "key": "url"}
    assert not any("postgresql://" in str(a) for a in container["args"])  # the URL is only in the Secret
    args = worker_args(container["command"][1:] + container["args"])
    assert args.storage is None  # so the worker reads MNIST_SEARCH_STORAGE
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[args.artifacts] in {v["name"] for v in pod["volumes"]}
    assert mounts[args.data_dir] in {v["name"] for v in pod["volumes"]}
    # Bad input (exit 2) fails the Job at once instead of being retried.
    rules = spec["podFailurePolicy"]["rules"]
    assert any(r["action"] == "FailJob" and r["onExitCodes"]["values"] == [2] for r in rules)


def test_the_kubernetes_job_passes_kubectls_client_side_dry_run():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "create", "--dry-run=client", "--validate=false", "--request-timeout=5s",
                             "-o", "yaml", "-f", str(JOB)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and ("connection refused" in result.stderr or "couldn't get current server" in
                                   result.stderr or "unable to recognize" in result.stderr):
        # kubectl maps a file's kinds with the API server's discovery even in a client dry run.
        pytest.skip(f"kubectl's client dry run needs a reachable cluster here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (it comes with optuna)")
    assert yaml.safe_load(result.stdout)["kind"] == "Job"


def test_the_slurm_script_is_valid_bash_and_an_array_job():
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run([bash, "-n", str(SLURM)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    directives = [line.split(None, 1)[1] for line in SLURM.read_text().splitlines() if line.startswith("#SBATCH ")]
    assert any(d.startswith("--array=") for d in directives)
    assert any(d.startswith("--signal=TERM@") for d in directives)  # SIGTERM before the time limit


def test_the_slurm_script_starts_the_worker_with_real_flags_and_the_url_off_its_command_line(tmp_path):
    """The script run as Slurm would run it, with `srun` and `mnist-search` replaced by stubs
    that record what they were given."""
    bin_dir, venv_bin = tmp_path / "bin", tmp_path / "venv" / "bin"
    bin_dir.mkdir()
    venv_bin.mkdir(parents=True)
    record = tmp_path / "record"
    stubs = {bin_dir / "srun": 'exec "$@"\n',
             venv_bin / "mnist-search": f'printf "%s\\n" "$@" > {record}\nprintf "%s" "$MNIST_SEARCH_STORAGE"'
                                        f' > {record}.url\nprintf "%s" "$OMP_NUM_THREADS" > {record}.threads\n'}
    for path, body in stubs.items():
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    url = "postgresql://searcher:s3cret@db.example:5432/search"
    (tmp_path / "storage").write_text(url + "\n")
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path), "VENV": str(tmp_path / "venv"),
           "STORAGE_FILE": str(tmp_path / "storage"), "SLURM_ARRAY_TASK_ID": "3", "SLURM_CPUS_PER_TASK": "2"}
    result = subprocess.run(["bash", str(SLURM)], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    argv = record.read_text().splitlines()
    args = worker_args(argv)
    assert args.storage is None and (tmp_path / "record.url").read_text() == url
    assert not any("s3cret" in a for a in argv)
    assert args.study_name == "main" and args.trials == 25 and args.timeout_minutes == 660
    assert args.artifacts == str(tmp_path / "mnist-search-artifacts") and Path(args.artifacts).is_dir()
    assert (tmp_path / "record.threads").read_text() == "2"
