"""Record the device of session 9's H100 confirmations, which ran before confirm stored it.

Every confirmation below was run by gpu-session9.sh phases B, C and E with --device cuda on
the lent H100 (logs beside this file); this adds "device": "cuda" to their runs so that
`export` can say where the shipped seed was scored. Nothing else in them changes.
"""

import optuna

DB = "sqlite:///results/search-gpu/study.db"
H100_CONFIRMATIONS = {"gpu-8k": [0, 44, 83], "gpu-5k": [35, 32], "gpu-2k": [0], "ema-8k-variants": [5]}

for study_name, trials in H100_CONFIRMATIONS.items():
    study = optuna.load_study(study_name=study_name, storage=DB)
    for number in trials:
        key = f"confirm:{number}"
        confirmation = study.user_attrs[key]
        for run in confirmation["runs"]:
            assert run.get("device", "cuda") == "cuda" and run["cpu_threads"] == 16  # the H100 machine's 16 cores
            run["device"] = "cuda"
        study.set_user_attr(key, confirmation)
        print(f"{study_name} {key}: {len(confirmation['runs'])} runs marked cuda")
