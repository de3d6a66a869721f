"""The exported module's predict: batches with bounded memory, flat 784-pixel rows, and shape
errors that name the caller's shape and the accepted forms."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from mnist_search.models import GAP, ArchSpec, Conv, MaxPool
from mnist_search.models.export import export_source

# Narrow, so 60,000 images take seconds on one thread; its first activation is still 21.6 kB an
# image, so one batch of 60,000 would hold 1.3 GB in that tensor alone.
SPEC = ArchSpec((Conv(8, post=("bn", "relu")), MaxPool(2), Conv(10, post=("relu",)), GAP(), Conv(10, k=1, post=())))


def load(tmp_path):
    path = tmp_path / "streaming_net.py"
    path.write_text(export_source(SPEC, "test"))
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace, path


def test_predict_takes_flat_rows_and_batches_without_changing_a_label(tmp_path):
    module, _ = load(tmp_path)
    torch.manual_seed(0)
    net = module["Net"]().eval()
    pixels = torch.randint(0, 256, (2345, 28, 28), dtype=torch.uint8)
    whole = net(module["preprocess"](pixels)).argmax(1)
    assert torch.equal(module["predict"](pixels, model=net), whole)
    assert torch.equal(module["predict"](pixels.reshape(-1, 784), model=net), whole)
    assert torch.equal(module["predict"](pixels.numpy(), model=net, batch_size=7), whole)
    assert torch.equal(module["predict"](pixels[0].reshape(784), model=net), whole[:1])
    assert module["predict"](pixels[:0], model=net).shape == (0,)


@pytest.mark.parametrize("shape", [(10000, 1, 784), (3, 28, 27), (2, 3, 28, 28), (783,), (5, 785)])
def test_a_wrong_shape_is_named_as_the_caller_passed_it_with_the_accepted_forms(tmp_path, shape):
    module, _ = load(tmp_path)
    with pytest.raises(ValueError) as raised:
        module["predict"](torch.zeros(shape, dtype=torch.uint8), model=module["Net"]())
    message = str(raised.value)
    assert f"shaped {shape}" in message
    assert all(form in message for form in ("28x28", "784", "Nx28x28", "Nx1x28x28", "Nx784"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak from Linux's /proc/self/status")
def test_predict_classifies_60000_images_in_under_1_gb(tmp_path):
    _, path = load(tmp_path)
    script = textwrap.dedent(f"""
        import importlib.util, sys
        import torch
        loaded = importlib.util.spec_from_file_location("streaming_net", {str(path)!r})
        module = importlib.util.module_from_spec(loaded)
        loaded.loader.exec_module(module)
        images = torch.randint(0, 256, (60000, 28, 28), dtype=torch.uint8)
        labels = module.predict(images, model=module.Net())
        assert labels.shape == (60000,)
        # The process's own peak. Not getrusage's ru_maxrss: Linux carries the parent's peak over
        # an exec into it, so it reported the test process's 1.5 GB.
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        print(int(status["VmHWM"].split()[0]) * 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) < 1_000_000_000
