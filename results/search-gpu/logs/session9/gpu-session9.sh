#!/bin/bash
# Session 9's work on the lent H100: phases A, B, C, D, each one call of under 10 minutes.
# Run from the repository root on the device machine: bash results/search-gpu/logs/session9/gpu-session9.sh A
# Carried: .whl (optuna 5.0.0 and the packages the device image lacks), .devdata (MNIST raw, gzipped).
# The study lives in .gpu/study.db (a copy of results/search-gpu/study.db, so warm starts can read
# the earlier studies); each phase copies it and the new trials' weights back under $OUT.
phase=$1
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/mnist/MNIST/raw
for f in .devdata/*.gz; do gunzip -c "$f" > /tmp/mnist/MNIST/raw/"$(basename "$f" .gz)"; done
ms="python3 -m mnist_search"
DB=sqlite:///.gpu/study.db
DATA=(--data-dir /tmp/mnist --device cuda)
save() { cp .gpu/study.db "$OUT"/ && tar czf "$OUT"/artifacts.tgz -C .gpu study-artifacts; }
trap save EXIT
case $phase in
A)
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, optuna; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'optuna', optuna.__version__)"
  mkdir -p .gpu && cp results/search-gpu/study.db .gpu/study.db
  # The GPU-only tests (skipped on CI's and this project's CPU machines).
  timeout 150 python3 -m pytest -p no:cacheprovider -n 0 tests/trainer/test_cuda_graph.py 2>&1 | tee "$OUT"/pytest-gpu.log
  # 8k search, every trial trained with seeds 0 and 1 (score = their mean), weight averaging and
  # separable convs in the space; first trial: ema-8k #0 (#164 + a 1-epoch weight average).
  timeout 420 $ms run --storage $DB --study-name gpu-8k --max-params 8000 --trials 400 --seeds-per-trial 2 \
      --jobs 8 --seed 0 --timeout 5.5 --warm-start ema-8k --warm-start-top 1 "${DATA[@]}" 2>&1 | tee "$OUT"/search-8k.log
  ;;
B)
  test -f .gpu/study.db || { echo "cold machine: no .gpu/study.db; carry it"; trap - EXIT; exit 3; }
  timeout 260 $ms confirm --storage $DB --study-name gpu-8k --top 3 --seeds 6 "${DATA[@]}" 2>&1 | tee "$OUT"/confirm-8k.log
  timeout 290 $ms run --storage $DB --study-name gpu-5k --max-params 5000 --trials 400 --seeds-per-trial 2 \
      --jobs 8 --seed 0 --timeout 3.5 --warm-start separable-5k --warm-start-top 1 "${DATA[@]}" 2>&1 | tee "$OUT"/search-5k.log
  ;;
C)
  test -f .gpu/study.db || { echo "cold machine: no .gpu/study.db; carry it"; trap - EXIT; exit 3; }
  timeout 200 $ms confirm --storage $DB --study-name gpu-5k --top 2 --seeds 6 "${DATA[@]}" 2>&1 | tee "$OUT"/confirm-5k.log
  timeout 200 $ms run --storage $DB --study-name gpu-2k --max-params 2000 --trials 400 --seeds-per-trial 2 \
      --jobs 8 --seed 0 --timeout 2.5 --warm-start separable-2k --warm-start-top 1 "${DATA[@]}" 2>&1 | tee "$OUT"/search-2k.log
  timeout 90 $ms confirm --storage $DB --study-name gpu-2k --top 1 --seeds 3 "${DATA[@]}" 2>&1 | tee "$OUT"/confirm-2k.log
  ;;
D)
  # Fresh seeds on a copy of the study (confirm --first-seed replaces the stored confirmation;
  # these figures are kept in the logs only): ema-8k's network seeds 6-8, the 2k network seeds 3-5.
  trap - EXIT
  cp .gpu/study.db /tmp/extra.db
  for s in "gpu-8k 6" "gpu-2k 3"; do
    set -- $s
    timeout 130 $ms confirm --storage sqlite:////tmp/extra.db --artifacts /tmp/extra-art --study-name $1 --trial 0 \
        --seeds 3 --first-seed $2 "${DATA[@]}" 2>&1 | tee "$OUT"/extra-$1.log
  done
  ;;
E)
  # Eight one-change variants of ema-8k #0 (#164 + weight average), 4 validation seeds each, no
  # pruning; the best by validation (if not the unchanged network) confirmed with 6 test seeds.
  # As run, with an omission: ema-8k #0's params predate "separable", so the sampler drew it for
  # each enqueued trial (TPE, seed 0): variants #2, #4, #5, #7 are separable, 7,468 params
  # (warm_start.enqueue fills such parameters in from LATER_PARAMS; this snippet did not).
  mkdir -p .gpu && cp results/search-gpu/study.db .gpu/study.db
  python3 - <<'PY'
import optuna
db = "sqlite:///.gpu/study.db"
base = optuna.load_study(study_name="ema-8k", storage=db).trials[0].params
study = optuna.create_study(study_name="ema-8k-variants", storage=db, direction="maximize")
for label, change in [("unchanged", {}), ("ema_epochs 2", {"ema_epochs": 2.0}), ("ema_epochs 0.5", {"ema_epochs": 0.5}),
                      ("rotation 5", {"rotation": 5.0}), ("label_smoothing 0.05", {"label_smoothing": 0.05}),
                      ("weight_decay 1e-3", {"weight_decay": 1e-3}), ("lr x0.7", {"adam_lr": base["adam_lr"] * 0.7}),
                      ("batch 128", {"batch_size": 128})]:
    study.enqueue_trial({**base, **change}, user_attrs={"variant": label})
PY
  timeout 200 $ms run --storage $DB --study-name ema-8k-variants --trials 8 --jobs 8 --seeds-per-trial 4 --pruner none \
      --seed 0 "${DATA[@]}" 2>&1 | tee "$OUT"/variants-8k.log
  best=$(python3 -c "import optuna; print(optuna.load_study(study_name='ema-8k-variants', storage='$DB').best_trial.number)")
  if [ "$best" != 0 ]; then
    timeout 80 $ms confirm --storage $DB --study-name ema-8k-variants --trial "$best" --seeds 6 "${DATA[@]}" 2>&1 \
        | tee "$OUT"/confirm-variant.log
  fi
  ;;
F)
  # Run inline on the warm machine after E: fresh seeds 6-8 of E's confirmed variant, on a copy.
  trap - EXIT
  cp .gpu/study.db /tmp/x.db
  timeout 75 $ms confirm --storage sqlite:////tmp/x.db --artifacts /tmp/xa --study-name ema-8k-variants --trial 5 \
      --seeds 3 --first-seed 6 "${DATA[@]}" 2>&1 | tee "$OUT"/extra-variant.log
  ;;
*) echo "usage: $0 A|B|C|D|E|F"; exit 2 ;;
esac
