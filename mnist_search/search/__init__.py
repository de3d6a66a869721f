"""WHICH networks to try: the search space, the objective, the Optuna study and its pruning."""

from mnist_search.search.objective import DEFAULT_LAST_K, Objective, TrainingDiverged, consistency_score
from mnist_search.search.space import Choices, Infeasible, sample_choices, sample_config, spec_from_choices
from mnist_search.search.study import (
    PRUNERS, SAMPLERS, is_pareto, make_pruner, make_sampler, open_study, ranked, score,
)

__all__ = [
    "Choices", "DEFAULT_LAST_K", "Infeasible", "Objective", "PRUNERS", "SAMPLERS", "TrainingDiverged",
    "consistency_score", "is_pareto", "make_pruner", "score", "make_sampler", "open_study", "ranked",
    "sample_choices", "sample_config", "spec_from_choices",
]
