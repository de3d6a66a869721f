# Session 8: `confirm --workers 2` against one seed after another, end to end on the real data, this 2-core CPU,
# nothing else running. A 2-epoch study at 2,000 params (sampler seed 0), then 2 seeds confirmed each way, alternating.
cd /work/main && . .venv/bin/activate
db=sqlite:////tmp/cw/study.db
mnist-search run --storage $db --trials 1 --epochs 2 --last-k 1 --max-params 2000 --seed 0 --pruner none --device cpu --data-dir ../shared/data
for round in 1 2; do
  for workers in 1 2; do
    start=$(date +%s.%N)
    mnist-search confirm --storage $db --trial 0 --seeds 2 --last-k 1 --workers $workers --device cpu --data-dir ../shared/data \
        --artifacts /tmp/cw/artifacts > /tmp/cw/confirm-$workers-$round.log
    echo "round $round, --workers $workers: $(echo "$(date +%s.%N) - $start" | bc) s; $(head -1 /tmp/cw/confirm-$workers-$round.log)"
  done
done
