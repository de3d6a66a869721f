#!/bin/bash
# mnist-search workers as a Slurm job array: each array task runs `mnist-search worker` on one
# PostgreSQL study until it has added its trials. Optuna's sampler, pruner and heartbeats run in
# every worker; the tasks share nothing but the database and the artifacts directory.
#
# Before submitting it:
#   1. Install mnist-search where the compute nodes see it, in a virtual environment on the
#      shared filesystem, from a clone of the repository (for GPUs, the CUDA build of torch):
#        python3 -m venv ~/mnist-search-venv && ~/mnist-search-venv/bin/pip install ./mnist-search
#      (VENV below says where it is).
#   2. Put the storage URL in a file only you can read, so that it is on no command line (other
#      users see those in squeue and ps):
#        printf '%s\n' 'postgresql://USER:PASSWORD@HOST:5432/DB' > ~/.mnist-search-storage
#        chmod 600 ~/.mnist-search-storage
#   3. Create the study once, with the settings every worker will use (a worker refuses settings
#      that differ from the study's own), from the login node:
#        MNIST_SEARCH_STORAGE="$(cat ~/.mnist-search-storage)" mnist-search run --study-name main \
#          --trials 1 --max-params 8000 --epochs 15
#   4. The four MNIST files in DATA_DIR/MNIST/raw/ and an ARTIFACTS directory, both on a
#      filesystem every node mounts: each worker writes its trials' weights to ARTIFACTS, and
#      `export` and `confirm` read them from there (--artifacts).
#
# Then: sbatch deploy/slurm/worker-array.sh (STUDY=other TRIALS=10 sbatch ... to change them;
# sbatch --array=1-4 ... for another number of workers). Watch the study from anywhere with
# `mnist-search dashboard --storage "$URL"`; the tasks' logs are mnist-search-JOB_TASK.out.
#
#SBATCH --job-name=mnist-search
#SBATCH --array=1-16%8
#   16 workers, at most 8 running at once; each adds TRIALS trials.
#SBATCH --cpus-per-task=2
#   one CPU trial uses every core of its task (at 2 cores, about 4 minutes a trial)
#SBATCH --mem=6G
#SBATCH --time=12:00:00
#SBATCH --signal=TERM@120
#   SIGTERM two minutes before the time limit: the worker marks its running trial failed
#   (another worker retries it) and exits 143, instead of being killed mid-write.
#SBATCH --output=mnist-search-%A_%a.out
# For GPUs, uncomment (each worker then trains 8 trials at once on its GPU, --jobs auto):
##SBATCH --gres=gpu:1

set -euo pipefail

VENV="${VENV:-$HOME/mnist-search-venv}"
STUDY="${STUDY:-main}"
TRIALS="${TRIALS:-25}"
DATA_DIR="${DATA_DIR:-$HOME/mnist-data}"
ARTIFACTS="${ARTIFACTS:-$HOME/mnist-search-artifacts}"
STORAGE_FILE="${STORAGE_FILE:-$HOME/.mnist-search-storage}"

# --storage defaults to this variable, which keeps the password off the command line.
MNIST_SEARCH_STORAGE="$(cat "$STORAGE_FILE")"
export MNIST_SEARCH_STORAGE
# The threads of this task: the cores Slurm gave it.
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
mkdir -p "$ARTIFACTS"

# Flags of `mnist-search worker --help`. The search settings (budget, epochs, last-K, seeds per
# trial, objective) are the study's own: a worker takes them from the study and refuses flags
# that contradict them. --timeout (minutes) starts no new
# trial after 11 of the 12 hours, so the last one finishes inside the time limit; -q: a log line
# per epoch instead of a live progress line.
srun "$VENV/bin/mnist-search" worker \
    --study-name "$STUDY" \
    --trials "$TRIALS" \
    --timeout 660 \
    --artifacts "$ARTIFACTS" \
    --data-dir "$DATA_DIR" \
    -q
