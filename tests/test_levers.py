"""The levers are declared once (mnist_search/levers.py): every parameter the space samples
belongs to one, every declared one is sampled, and the side tables follow the declarations."""

import optuna

from mnist_search import levers
from mnist_search.models import ArchSpec
from mnist_search.models.spec import OPTIONAL_FIELDS
from mnist_search.search.space import SMALL_BUDGET, Infeasible, sample_choices, sample_config
from mnist_search.trainer import fusion


def sampled_names(max_params: int, distil: bool) -> set[str]:
    def objective(trial):
        try:
            sample_choices(trial, max_params=max_params)
        except Infeasible:
            pass  # its structural parameters were sampled all the same
        sample_config(trial, epochs=15, seed=0, distil=distil)
        return 0.0

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study.optimize(objective, n_trials=80)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {name for trial in study.trials for name in trial.params}


def test_every_sampled_parameter_is_declared_and_every_declared_one_is_sampled():
    names = sampled_names(8000, distil=False) | sampled_names(SMALL_BUDGET, distil=True)
    assert {"block2_width3", "sgd_lr", "adam_lr", "step_size", "norm_groups", "distill_weight"} <= names
    assert sorted(name for name in names if not levers.is_known_param(name)) == []
    declared = {name for lever in levers.LEVERS for name in lever.params if "{i}" not in name}
    assert sorted(declared - names) == []  # no declaration outlives its sampling code


def test_labels_of_indexed_parameters_count_from_one():
    assert levers.param_label("adam_lr") == "AdamW learning rate"
    assert levers.param_label("block2_width0") == "width of conv 1 after the max-pool (relative)"
    assert levers.param_label("block1_width3") == "width of conv 4 before the max-pool (relative)"
    assert levers.param_label("w_b0_1") == "w_b0_1" and not levers.is_known_param("w_b0_1")


def test_the_side_tables_follow_the_declarations():
    lever_fields = {name for lever in levers.LEVERS for name in lever.conv_fields}
    assert set(OPTIONAL_FIELDS) == lever_fields == {"share", "norm_groups"}
    unfusable = {lever.name for lever in levers.LEVERS if not lever.fusable}
    assert unfusable == {"norm", "shared_repeats"}
    assert not (lever_fields & fusion.FUSABLE_CONV_FIELDS) and not ({"in", "gn"} & fusion.FUSABLE_POST_OPS)
    assert levers.REBUILD == {"separable": False, "norm": "bn", "shared_repeats": 0, "ema": False}
    shared = ArchSpec.from_dict({"layers": [
        {"op": "conv", "out": 8, "k": 3}, {"op": "conv", "out": 8, "k": 3, "pad": 1, "share": 0},
        {"op": "conv", "out": 10, "k": 1}, {"op": "gap"}]})
    assert not fusion.fusable(shared)  # an unfusable lever's field trains its seeds one after another
