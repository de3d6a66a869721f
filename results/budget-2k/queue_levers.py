"""Queue the best separable 2k network (study separable-2k, trial 2: structure and recipe) with
each new lever switched on, as the first trials of a study, so the sampler starts from them.

    python results/budget-2k/queue_levers.py sqlite:////tmp/levers/study.db levers-2k

The storage must hold study separable-2k (a copy of results/search-gpu/study.db does). Widths
are refitted to the study's budget when the trials run, so the same queue serves 1,000.
"""
import sys

import optuna

storage, name = sys.argv[1], sys.argv[2]
source = optuna.load_study(study_name="separable-2k", storage=storage).trials[2]
study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
arms = [
    dict(norm="bn", shared_repeats=0),  # the network as confirmed (98.98% over 6 seeds at 1,983 params)
    dict(norm="in", shared_repeats=0),
    dict(norm="gn", norm_groups=2, shared_repeats=0),
    dict(norm="bn", shared_repeats=2),
    dict(norm="in", shared_repeats=2),
    dict(norm="in", shared_repeats=3),
]
for arm in arms:
    study.enqueue_trial({**source.params, "ema": False, **arm}, user_attrs={"warm_start": f"separable-2k#2 {arm}"})
print(f"queued {len(arms)} trials in study {name!r}")
