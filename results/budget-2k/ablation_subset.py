"""Ablation of the new levers at a small cost of CPU: study separable-2k's trial 2 (structure and
recipe, 1,983 parameters at 2,000) with each lever switched on alone, widths refitted to BUDGET,
trained on a stratified 10,000-image subset of the 50,000 training images for EPOCHS epochs
(the recipe's schedule compressed to them), scored on the 10,000 held-out validation images.
One thread, eager (no compile). Prints one JSON line per arm.

    python results/budget-2k/ablation_subset.py STORAGE DATA_DIR BUDGET EPOCHS SEED ARM...
    ARM: bn in gn2 shared-bn shared-in (see queue_levers.py)
"""
import json
import sys
import time
from pathlib import Path

import optuna
import torch

from mnist_search.models import analyse, count_params
from mnist_search.search.space import sample_choices, sample_config, spec_from_choices
from mnist_search.trainer.data import Split, load_mnist, stratified_indices
from mnist_search.trainer.loop import fit
from mnist_search.trainer.setup import build_seeded

sys.path.insert(0, str(Path(__file__).parent))
from queue_levers import ARMS

torch.set_num_threads(1)
storage, data_dir = sys.argv[1], sys.argv[2]
budget, epochs, seed, arms = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6:]
optuna.logging.set_verbosity(optuna.logging.WARNING)
source = optuna.load_study(study_name="separable-2k", storage=storage).trials[2].params
data = load_mnist(data_dir, download=False)
subset = stratified_indices(data.train.labels, 10_000, seed=1)
train = Split(data.train.images[subset], data.train.labels[subset])
for arm in arms:
    trial = optuna.trial.FixedTrial({**source, **ARMS[arm]})
    spec = spec_from_choices(sample_choices(trial, budget))
    config = sample_config(trial, epochs=epochs, seed=seed)
    start = time.perf_counter()
    result = fit(build_seeded(spec, seed), config, train, data.val, device="cpu")
    print(json.dumps({"budget": budget, "arm": arm, "seed": seed, "epochs": epochs, "params": count_params(spec),
                      "rf": analyse(spec).receptive_field, "seconds": round(time.perf_counter() - start),
                      "val_acc": [round(h["eval_acc"], 2) for h in result.history], "history": result.history}),
          flush=True)
