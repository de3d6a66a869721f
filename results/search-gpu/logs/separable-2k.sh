# Same structure and recipe, full 3x3 convs vs depthwise-separable ones, at 2,000 parameters:
# the GPU 2k study's two best trials (#58, #48), each both ways, on this CPU (session 7).
set -e
python - <<'PY'
import optuna
db = "sqlite:///results/search-gpu/study.db"
source = optuna.load_study(study_name="budget-2k", storage=db)
study = optuna.create_study(study_name="separable-2k", storage=db, direction="maximize", load_if_exists=True)
for number in (58, 48):
    for separable in (True, False):
        study.enqueue_trial({**source.trials[number].params, "ema": False, "separable": separable},
                            user_attrs={"warm_start": f"budget-2k#{number} separable={separable}"})
PY
mnist-search run --storage sqlite:///results/search-gpu/study.db --study-name separable-2k --trials 4 \
    --workers 2 --pruner none --max-params 2000 --device cpu --data-dir ../shared/data
