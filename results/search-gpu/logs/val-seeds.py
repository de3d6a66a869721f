"""Validation seed noise of two GPU-study architectures: #78 (val rank 1) and #164 (val rank 6), seeds 0-2, this CPU.

Ran in session 6 as /tmp/valseeds/run.py from the checkout (python run.py > log); the figures are in val-seeds.log.
"""
import json, sys, time
import optuna
from mnist_search.models import ArchSpec
from mnist_search.trainer import TrainConfig, build_seeded, fit, load_mnist, should_compile

optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="mnist-search", storage="sqlite:///results/search-gpu/study.db")
data = load_mnist("../shared/data", val_size=10000)
out = {}
for number in (78, 164):
    t = study.trials[number]
    spec = ArchSpec.from_dict(t.user_attrs["spec"])
    for seed in (0, 1, 2):
        config = TrainConfig.from_dict(t.user_attrs["config"]).replace(seed=seed)
        started = time.time()
        result = fit(build_seeded(spec, seed), config, data.train, data.val, device="cpu",
                     compile_model=should_compile("auto", config, len(data.train), "cpu"))
        accs = [m["eval_acc"] for m in result.history]
        out[f"{number}/{seed}"] = accs
        print(f"#{number} seed {seed}: last5 mean {sum(accs[-5:])/5:.3f} min {min(accs[-5:]):.2f} "
              f"accs {' '.join(f'{a:.2f}' for a in accs)} ({time.time()-started:.0f}s)", flush=True)
        json.dump(out, open("/tmp/valseeds/out.json", "w"), indent=1)
