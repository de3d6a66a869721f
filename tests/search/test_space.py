from dataclasses import replace

import optuna
import pytest

from mnist_search.models import PRESETS, Conv, build, count_params
from mnist_search.search.space import (
    Choices,
    Infeasible,
    fit_to_budget,
    sample_choices,
    sample_config,
    spec_from_choices,
)
from mnist_search.search.warm_start import enqueue

PRESET_CHOICES = {
    "seed001-exp4": Choices(block1=(8, 8, 8), block2=(16, 16, 16), order=("relu", "bn"), head="conv_gap"),
    "seed001-exp5": Choices(block1=(9, 9, 9), block2=(16, 16, 16), order=("relu", "bn"), head="conv_gap"),
    "seed002": Choices(block1=(10, 10, 15), block2=(10, 10, 32), squeeze="after_pool", squeeze_width=10,
                       squeeze_post=("bn", "relu"), order=("bn", "relu"), dropout=0.029, head="gap_conv"),
    "seed003": Choices(block1=(10, 10, 10, 10), block2=(14, 14, 13), squeeze="before_pool", squeeze_width=10,
                       squeeze_post=("bn",), order=("bn", "relu"), last_relu=False, head="gap_conv",
                       head_post=("bn",)),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_expressible_in_the_space(name):
    assert spec_from_choices(PRESET_CHOICES[name]) == PRESETS[name].spec


def test_the_space_can_sample_every_preset_structure():
    """Each structural choice the presets need is a value the sampler can pick."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {"squeeze": set(), "order": set(), "head": set(), "last_relu": set(), "head_bn": set(), "block1_convs": set(),
            "separable": set()}
    for _ in range(200):
        trial = study.ask()
        try:
            sample_choices(trial, 8000)
        except Infeasible:
            pass
        for key in seen:
            seen[key].add(trial.params.get(key))
        study.tell(trial, 0.0)
    assert {"none", "before_pool", "after_pool"} <= seen["squeeze"]
    assert {"bn_relu", "relu_bn"} <= seen["order"] and {"conv_gap", "gap_conv"} <= seen["head"]
    assert {True, False} <= seen["last_relu"] and {True, False} <= seen["head_bn"] and {3, 4} <= seen["block1_convs"]
    assert {True, False} <= seen["separable"]


@pytest.mark.parametrize("budget", [2000, 5000, 8000])
def test_every_sample_fits_the_budget_and_uses_most_of_it(budget):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=budget))
    counts, infeasible = [], 0
    for _ in range(100):
        trial = study.ask()
        try:
            counts.append(count_params(spec_from_choices(sample_choices(trial, budget))))
        except Infeasible:
            infeasible += 1
        sample_config(trial, epochs=15, seed=0)
        study.tell(trial, 0.0)
    assert counts and max(counts) <= budget
    assert sorted(counts)[len(counts) // 2] >= 0.8 * budget  # widths are scaled up to the budget
    assert infeasible < 20


def test_a_budget_below_the_narrowest_structure_is_infeasible():
    trial = optuna.create_study().ask()
    with pytest.raises(Infeasible, match="narrowest"):
        sample_choices(trial, 100)


def test_every_sampled_recipe_is_valid_for_short_studies_too():
    """A sampled averaging horizon longer than the study (2 epochs, 1 epoch) is clipped to it."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    horizons = []
    for epochs in (1, 2, 15) * 30:
        trial = study.ask()
        horizons.append((epochs, sample_config(trial, epochs=epochs, seed=0).ema_epochs))
        study.tell(trial, 0.0)
    assert all(0 <= h <= epochs for epochs, h in horizons)
    assert any(h == epochs == 1 for epochs, h in horizons)  # clipped, not refused
    assert any(h == 0 for _, h in horizons) and any(1 < h <= 2 for _, h in horizons)


def test_separable_convs_split_every_3x3_but_the_first_into_depthwise_and_pointwise():
    plain = Choices(block1=(8, 12), block2=(12, 16), squeeze="after_pool", squeeze_width=6)
    layers = spec_from_choices(replace(plain, separable=True)).layers
    convs = [layer for layer in layers if isinstance(layer, Conv)]
    assert (convs[0].k, convs[0].groups, convs[0].out) == (3, 1, 8)  # one input channel: nothing to separate
    depthwise = [(i, conv) for i, conv in enumerate(convs) if conv.groups > 1]
    assert [conv.out for _, conv in depthwise] == [8, 6, 12]  # as wide as their input: 8, the squeeze's 6, 12
    for i, conv in depthwise:
        assert conv.k == 3 and conv.groups == conv.out and convs[i + 1].k == 1
    assert [conv.out for conv in convs if conv.k == 1] == [12, 6, 12, 16, 10]  # pointwise halves keep the widths
    assert len(convs) == len(spec_from_choices(plain).layers) - 2 + 3  # no maxpool/GAP; three more convs


def test_a_separable_network_is_wider_at_the_same_budget_and_counts_its_parameters_exactly():
    def at(separable):
        return lambda unit: Choices(block1=(unit, unit), block2=(2 * unit, 2 * unit), squeeze="after_pool",
                                    squeeze_width=unit, separable=separable)

    plain, separable = fit_to_budget(at(False), 2000), fit_to_budget(at(True), 2000)
    assert separable.block1[0] >= 2 * plain.block1[0]
    spec = spec_from_choices(separable)
    assert count_params(spec) <= 2000
    assert sum(p.numel() for p in build(spec).parameters()) == count_params(spec)


@pytest.mark.parametrize("budget", [8000, 2000])
def test_warm_start_rebuilds_trials_run_before_a_choice_existed(budget):
    """A trial from before ``separable``, ``ema``, ``norm`` and ``shared_repeats`` were in the
    space is queued as what it trained."""
    asked = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4)).ask()
    sample_choices(asked, 8000)
    sample_config(asked, epochs=15, seed=0)
    old = {k: v for k, v in asked.params.items() if k not in ("separable", "ema", "ema_epochs")}
    source_trial = optuna.trial.create_trial(value=99.0, params=old,
                                             distributions={k: asked.distributions[k] for k in old})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    assert enqueue(study, "old", [source_trial]) == [source_trial.number]
    queued = study.ask()
    try:
        choices = sample_choices(queued, budget)
    except Infeasible:
        pytest.skip("this structure does not fit the budget")
    assert not choices.separable and sample_config(queued, epochs=15, seed=0).ema_epochs == 0
    assert choices.norm == "bn" and choices.shared_repeats == 0
    old_space = {**old, "separable": False, "norm": "bn", "shared_repeats": 0}
    assert choices == sample_choices(optuna.trial.FixedTrial(old_space), budget)


def test_small_budgets_also_sample_the_norm_and_shared_repeats_and_large_ones_keep_their_space():
    def seen(budget):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
        values = {"norm": set(), "shared_repeats": set(), "norm_groups": set()}
        for _ in range(60):
            trial = study.ask()
            try:
                sample_choices(trial, budget)
            except Infeasible:
                pass
            for key, seen_values in values.items():
                seen_values.add(trial.params.get(key))
            study.tell(trial, 0.0)
        return values

    small = seen(2000)
    assert small["norm"] == {"bn", "in", "gn"} and small["shared_repeats"] == {0, 1, 2, 3}
    assert {2, 4} <= small["norm_groups"]
    assert seen(8000) == {"norm": {None}, "shared_repeats": {None}, "norm_groups": {None}}


def test_shared_repeats_apply_one_square_conv_again_with_its_own_norms():
    plain = Choices(block1=(8,), block2=(12,), pad2=1, norm="in")
    for separable, per_repeat in ((False, 1), (True, 2)):
        base = spec_from_choices(replace(plain, separable=separable))
        spec = spec_from_choices(replace(plain, separable=separable, shared_repeats=3))
        added = spec.layers[len(base.layers) - 2:-2]  # before the head conv and GAP
        assert len(added) == 3 * per_repeat
        owners = added[:per_repeat]
        assert all(layer.share is None for layer in owners)
        owner_index = len(base.layers) - 2
        assert [layer.share for layer in added[per_repeat:]] == [owner_index + i for i in range(per_repeat)] * 2
        assert all(layer.norm == "in" for layer in added)
        model = build(spec)
        assert sum(p.numel() for p in model.parameters()) == count_params(spec)
        weights = 12 * 12 * 9 if not separable else 12 * 9 + 12 * 12  # full 3x3, or depthwise + pointwise
        assert count_params(spec) - count_params(base) == weights + 3 * per_repeat * 2 * 12


def test_the_norm_choice_replaces_batchnorm_everywhere_but_the_head():
    choices = Choices(block1=(8, 12), block2=(12, 16), squeeze="after_pool", squeeze_width=6, separable=True,
                      head="gap_conv", head_post=("bn",), norm="gn", norm_groups=4)
    convs = [layer for layer in spec_from_choices(choices).layers if isinstance(layer, Conv)]
    assert [conv.norm for conv in convs] == ["gn"] * (len(convs) - 1) + ["bn"]
    assert [conv.norm_groups for conv in convs[:-1]] == [4, 4, 4, 2, 2, 4, 4, 4]  # gcd(width, 4); the squeeze's 6 -> 2
    assert count_params(spec_from_choices(choices)) == sum(p.numel() for p in build(spec_from_choices(choices)).parameters())


@pytest.mark.parametrize("budget", [1000, 2000])
def test_samples_with_the_new_levers_fit_small_budgets_and_build(budget):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=budget + 1))
    built = 0
    for _ in range(40):
        trial = study.ask()
        try:
            spec = spec_from_choices(sample_choices(trial, budget))
        except Infeasible:
            study.tell(trial, 0.0)
            continue
        assert count_params(spec) <= budget
        if trial.params["shared_repeats"] or trial.params["norm"] != "bn":
            assert sum(p.numel() for p in build(spec).parameters()) == count_params(spec)
            built += 1
        study.tell(trial, 0.0)
    assert built >= 10
