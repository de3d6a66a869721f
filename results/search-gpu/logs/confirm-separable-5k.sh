# Session 8, one core (the other runs separable-8k.sh): the separable version of #164 at 5,000
# parameters (separable-5k #0, validation 99.374, session 7), 3 seeds on the test set.
cd /work/main && . .venv/bin/activate
OMP_NUM_THREADS=1 mnist-search confirm --storage sqlite:///results/search-gpu/study.db --study-name separable-5k --trial 0 \
    --seeds 3 --device cpu --data-dir ../shared/data
