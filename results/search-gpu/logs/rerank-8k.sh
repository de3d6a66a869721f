#!/bin/bash
# After the #78/#164 seed runs: three more confirmed trials of the GPU study, seeds 1 and 2, through the CLI.
cd /work/main && . .venv/bin/activate
while pgrep -f valseeds/run.py >/dev/null; do sleep 20; done
python - <<'PY'
import optuna
db = "sqlite:///results/search-gpu/study.db"
source = optuna.load_study(study_name="mnist-search", storage=db)
study = optuna.create_study(study_name="rerank-8k", storage=db, direction="maximize", load_if_exists=True)
for number in (107, 172, 159):
    study.enqueue_trial(source.trials[number].params, user_attrs={"warm_start": f"mnist-search#{number}"})
PY
mnist-search run --storage sqlite:///results/search-gpu/study.db --study-name rerank-8k --trials 3 \
    --seeds-per-trial 2 --seed 1 --pruner none --max-params 8000 --device cpu --data-dir ../shared/data
