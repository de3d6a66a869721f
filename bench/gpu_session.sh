#!/usr/bin/env bash
# Everything that waits for a GPU, in one run of at most ~9 minutes on one H100/H200:
#   1. the small-budget searches (2,000 and 1,000 parameters, 15 epochs, warm-started from the
#      committed levers-2k network, two seeds per trial), side by side on the GPU;
#   2. 9-seed test-set confirmations of each search's top 2 trials;
#   3. the roofline table on CUDA (bench/roofline.py), fused seeds against one after another.
# Outputs land in $OUT (the study, its weights, logs); a later step exports the winners.
#
#   OUT=/tmp/gpu DATA=/path/holding/MNIST/raw/.. bash bench/gpu_session.sh
# DATA defaults to a copy unpacked from .device-carry/*.gz, the way the device machine gets it;
# DEVICE, EPOCHS, SEEDS and SEARCH_MINUTES shrink it for a smoke test on the CPU;
# PYTHON_SITE, when set, is an extra site directory of wheels (optuna, SQLAlchemy, ...).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the output directory}"
SEARCH_MINUTES=${SEARCH_MINUTES:-3.5} DEVICE=${DEVICE:-cuda} EPOCHS=${EPOCHS:-15} SEEDS=${SEEDS:-9}
export PYTHONPATH="$PWD${PYTHON_SITE:+:$PYTHON_SITE}" PYTHONUNBUFFERED=1
if [ -z "${DATA:-}" ]; then
  DATA=/tmp/mnist-data; mkdir -p "$DATA/MNIST/raw"
  for f in .device-carry/*.gz; do gunzip -c "$f" > "$DATA/MNIST/raw/$(basename "${f%.gz}")"; done
fi
ms() { python3 -m mnist_search "$@"; }
started=$(date +%s)
log() { echo "[$(( $(date +%s) - started ))s] $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

DB="sqlite:///$OUT/small-budgets.db"
python3 - "$DB" <<'PY'
import sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
optuna.copy_study(from_study_name="levers-2k", from_storage="sqlite:///results/budget-2k/study.db",
                  to_storage=sys.argv[1])
PY
cp -r results/budget-2k/study-artifacts "$OUT/small-budgets-artifacts"

log "searches: 2k and 1k side by side, $SEARCH_MINUTES minutes each"
for budget in 2000 1000; do
  name="search-${budget:0:1}k"
  ms run --storage "$DB" --study-name "$name" --max-params "$budget" --trials 400 --timeout "$SEARCH_MINUTES" \
    --seeds-per-trial 2 --jobs 8 --device "$DEVICE" --epochs "$EPOCHS" --seed 0 --warm-start levers-2k --warm-start-top 1 \
    --data-dir "$DATA" --artifacts "$OUT/small-budgets-artifacts" -q > "$OUT/$name.log" 2>&1 &
done
wait
tail -n 12 "$OUT"/search-*.log

log "confirmations: top 2 of each search, 9 seeds each"
for name in search-2k search-1k; do
  ms confirm --storage "$DB" --study-name "$name" --top 2 --seeds "$SEEDS" --workers "$SEEDS" --device "$DEVICE" \
    --data-dir "$DATA" --artifacts "$OUT/small-budgets-artifacts" > "$OUT/confirm-$name.log" 2>&1 &
done
wait
tail -n 20 "$OUT"/confirm-*.log

log "roofline on CUDA"
timeout 120 python3 bench/roofline.py --data-dir "$DATA" --device cuda --epochs 3 --train-images 20000 \
  --families best-8k,plain-8k,separable-2k,shared-2k,shared-1k --distil --json "$OUT/roofline-cuda.json" \
  2>&1 | tee "$OUT/roofline-cuda.log"

log "fused seeds against one after another on CUDA"
timeout 90 python3 bench/fused_seeds.py --device cuda --data-dir "$DATA" --copies 2 4 --steps 200 --rounds 2 \
  --sides sequential fused 2>&1 | tee "$OUT/fused-seeds-cuda.log"
log "done"
