# Full vs depthwise-separable 3x3 convs at 5,000 parameters: the structure and recipe of #164
# (the 8k GPU study's confirmed network) narrowed to 5k both ways, on one core of this CPU (session 7).
cd /work/main && . .venv/bin/activate
while pgrep -f "study-name separable-2k --trials" >/dev/null; do sleep 10; done
python - <<'PY'
import optuna
db = "sqlite:///results/search-gpu/study.db"
source = optuna.load_study(study_name="mnist-search", storage=db)
study = optuna.create_study(study_name="separable-5k", storage=db, direction="maximize", load_if_exists=True)
for separable in (True, False):
    study.enqueue_trial({**source.trials[164].params, "ema": False, "separable": separable},
                        user_attrs={"warm_start": f"mnist-search#164 separable={separable}"})
PY
OMP_NUM_THREADS=1 mnist-search run --storage sqlite:///results/search-gpu/study.db --study-name separable-5k \
    --trials 2 --pruner none --max-params 5000 --device cpu --data-dir ../shared/data
