"""Queue the best separable 2k network (study separable-2k, trial 2: structure and recipe) with
the new levers switched on, as the next trials of a study, so a search starts from them.

    python results/budget-2k/queue_levers.py STORAGE STUDY [ARM ...]    (default: every arm)

The storage must hold study separable-2k (a copy of results/search-gpu/study.db does). Widths
are refitted to the study's budget when the trials run, so the same queue serves 1,000.
"""
import sys

import optuna

ARMS = {
    "bn": {"norm": "bn", "shared_repeats": 0},  # the network as confirmed (1,983 params at 2,000)
    "in": {"norm": "in", "shared_repeats": 0},
    "gn2": {"norm": "gn", "norm_groups": 2, "shared_repeats": 0},
    "shared-bn": {"norm": "bn", "shared_repeats": 2},
    "shared-in": {"norm": "in", "shared_repeats": 2},
    "shared3-bn": {"norm": "bn", "shared_repeats": 3},
}


def main() -> None:
    storage, name, chosen = sys.argv[1], sys.argv[2], sys.argv[3:] or list(ARMS)
    source = optuna.load_study(study_name="separable-2k", storage=storage).trials[2]
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    for arm in chosen:
        study.enqueue_trial({**source.params, "ema": False, **ARMS[arm]}, user_attrs={"warm_start": f"separable-2k#2 {arm}"})
    print(f"queued {', '.join(chosen)} in study {name!r}")


if __name__ == "__main__":
    main()
