#!/bin/bash
# The 2k and 5k budgets, after the 8k confirm (results/search-cpu/logs/confirm-top3.log) ends:
# the 8k study's best trials rebuilt at each budget (--warm-start), two single-threaded lanes
# side by side on this 2-core machine.
# (A first attempt ran the 2k lane beside the 2-thread 8k confirm; it slowed the confirm ~5x,
# so it was stopped after budget-2k trial #0 and this script waits instead.)
while pgrep -f "mnist-search confirm --storage sqlite:///results/search-cpu/study.db --top 3" > /dev/null; do sleep 10; done
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
DB=sqlite:///results/search-cpu/study.db
(
  set -x
  # budget-2k trial #1 (#18 narrowed) was cut off by the stop above; its heartbeat retry re-runs it.
  mnist-search run --storage $DB --study-name budget-2k --max-params 2000 --trials 1 --seed 0 --data-dir ../shared/data
  mnist-search confirm --storage $DB --study-name budget-2k --top 1 --seeds 3 --data-dir ../shared/data
) > results/search-cpu/logs/budget-2k.log 2>&1 &
(
  set -x
  mnist-search run --storage $DB --study-name budget-5k --max-params 4999 --warm-start mnist-search \
    --warm-start-top 3 --trials 3 --timeout 40 --seed 0 --data-dir ../shared/data
) > results/search-cpu/logs/budget-5k.log 2>&1 &
wait
