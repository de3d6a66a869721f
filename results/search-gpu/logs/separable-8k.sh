# Session 8, one core (the other confirms separable-5k #0): ema-8k #0 (#164 + 1-epoch weight average,
# the best confirmed sub-8k network) with depthwise-separable 3x3 convs, widths rescaled to the
# 8,000-parameter budget. One validation trial (same protocol as ema-8k #0: 50k/10k split, 15 epochs).
cd /work/main && . .venv/bin/activate
python - <<'PY'
import optuna
db = "sqlite:///results/search-gpu/study.db"
source = optuna.load_study(study_name="ema-8k", storage=db)
study = optuna.create_study(study_name="separable-8k", storage=db, direction="maximize", load_if_exists=True)
study.enqueue_trial({**source.trials[0].params, "separable": True},
                    user_attrs={"warm_start": "ema-8k#0 separable=True"})
PY
OMP_NUM_THREADS=1 mnist-search run --storage sqlite:///results/search-gpu/study.db --study-name separable-8k \
    --trials 1 --pruner none --max-params 8000 --device cpu --data-dir ../shared/data
