# After separable-2k.sh, on one core (the other trains separable-5k.sh): the separable version of budget-2k #48 (separable-2k #2), 3 seeds on the test set.
cd /work/main && . .venv/bin/activate
while pgrep -f "study-name separable-2k --trials" >/dev/null; do sleep 10; done
OMP_NUM_THREADS=1 mnist-search confirm --storage sqlite:///results/search-gpu/study.db --study-name separable-2k --trial 2 \
    --seeds 3 --device cpu --data-dir ../shared/data
