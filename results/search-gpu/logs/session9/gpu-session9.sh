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
*) echo "usage: $0 A|B|C|D"; exit 2 ;;
esac
