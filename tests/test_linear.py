import numpy as np
import pytest
import torch
from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model._linear_loss import LinearModelLoss

from evalharness.cards import load_protocol
from evalharness.datasets import resolve_manifest
from evalharness.errors import ProbeError
from evalharness.probes.common import no_validation_reason
from evalharness.probes.linear import (
    Config,
    _Objective,
    _start,
    _strength,
    fit_logistic,
    select_and_fit,
    standardise,
    stratified_split,
)

from conftest import write_card
from helpers import build_file, clustered, probe


def per_class_split(labels, fraction, seed):
    """The split before groups existed: round(fraction * count) of each class by a seeded permutation."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = int(np.floor(fraction * len(members) + 0.5)) if len(members) > 1 else 0
        val.extend(rng.permutation(members)[:min(take, len(members) - 1)])
    return np.sort(np.array(val, dtype=np.int64))


def test_without_groups_the_split_is_the_per_class_split():
    rng = np.random.default_rng(7)
    for seed, fraction in [(0, 0.1), (1, 0.25), (5, 0.5)]:
        labels = rng.integers(0, 9, 300)
        assert np.array_equal(stratified_split(labels, fraction, seed)[1], per_class_split(labels, fraction, seed))


def test_stratified_split_takes_a_tenth_of_each_class_deterministically():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 1)
    fit, val = stratified_split(labels, 0.1, 0)
    assert np.bincount(labels[val], minlength=3).tolist() == [5, 3, 0]
    assert sorted(np.concatenate([fit, val]).tolist()) == list(range(81))
    assert np.array_equal(val, stratified_split(labels, 0.1, 0)[1])
    assert not np.array_equal(val, stratified_split(labels, 0.1, 1)[1])


def test_groups_never_straddle_the_split_on_the_real_ucf101_lists(tmp_path, realdata):
    """UCF101 split 1's 9537 train clips in 101 x ~18 groups: the validation groups hold no fit clip, and each class
    holds out close to a tenth of its clips."""
    splits = realdata / "splits" / "ucf101"
    if not (splits / "trainlist01.txt").is_file():
        pytest.skip("the UCF101 split lists are not in ../shared/realdata")
    (tmp_path / "lists").symlink_to(splits)
    card = write_card(tmp_path, "ucf", dataset={"adapter": "ucf101", "lists": "lists", "train": "train", "test": "test"})
    items = resolve_manifest(load_protocol(card), tmp_path).split("train")
    labels = np.array([item.label for item in items])
    groups = [item.group for item in items]
    assert len(items) == 9537 and len(set(groups)) == 101 * 18 and groups[0] == "ApplyEyeMakeup_g08"
    fit, val = stratified_split(labels, 0.1, 0, groups)
    assert not {groups[i] for i in fit} & {groups[i] for i in val}
    assert len(fit) + len(val) == len(items)
    for c in np.unique(labels):
        n, held = (labels == c).sum(), (labels[val] == c).sum()
        assert 0 < held < n and abs(held - 0.1 * n) <= 4  # groups hold 4 to 7 clips
    # without groups, the same lists split clips of one group across fit and validation
    fit, val = stratified_split(labels, 0.1, 0)
    assert {groups[i] for i in fit} & {groups[i] for i in val}


def test_probe_records_the_held_out_groups(tmp_path):
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(3, 12)) * 0.8
    train, train_y = clustered(rng, 90, 12, 3, centres)
    test, test_y = clustered(rng, 30, 12, 3, centres)
    groups = [f"s{i % 15}" for i in range(90)]  # 15 sources of 6 clips, each spanning classes
    probes = {"linear": {"c_grid": {"log10_min": -2, "log10_max": 1, "steps": 4}}}
    path, protocol, root = build_file(tmp_path, train, train_y, test, test_y, probes=probes, groups=groups)
    chosen = probe("linear", path, protocol, root)["chosen"]
    assert chosen["val_split"] == "stratified by class, disjoint by group"
    held = set(chosen["val_groups"])
    assert held and held < set(groups)
    assert chosen["val_videos"] == sum(g in held for g in groups)


def test_too_small_a_fraction_names_the_cause_and_the_smallest_that_works():
    labels = np.repeat(np.arange(4), 12)
    reason = no_validation_reason(labels, 0.02)
    assert reason.startswith("val_fraction 0.02 holds out no validation video in any class")
    smallest = float(reason.rsplit(" ", 1)[1])
    assert len(stratified_split(labels, smallest, 0)[1]) > 0 and len(stratified_split(labels, smallest - 0.002, 0)[1]) == 0
    assert "no class has train videos in two groups" in no_validation_reason(labels, 0.5, [f"g{c}" for c in labels])
    with pytest.raises(ProbeError, match=r"smallest val_fraction that holds one out is 0\.042"):
        select_and_fit(np.random.default_rng(0).normal(size=(48, 4)).astype(np.float32), labels, 4,
                       Config(val_fraction=0.02))


def test_standardise_keeps_constant_dimensions_at_unit_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4)).astype(np.float32)
    x[:, 1] = np.float32(0.0312)  # constant, then float32 rounding noise from a normalisation
    x[:, 1] *= 1 + rng.normal(scale=3e-8, size=500).astype(np.float32)
    x[:, 2] = 0
    mean, std = standardise(torch.from_numpy(x))
    assert std[1] == 1 and std[2] == 1 and abs(mean[1] - 0.0312) < 1e-6
    assert np.allclose(std[[0, 3]].numpy(), x[:, [0, 3]].std(0), rtol=1e-5)


def test_validation_is_standardised_by_the_fit_part_only(monkeypatch):
    import evalharness.probes.linear as linear

    seen = []
    monkeypatch.setattr(linear, "standardise", lambda x: seen.append(x.shape[0]) or standardise(x))
    rng = np.random.default_rng(2)
    x, y = clustered(rng, 200, 8, 4, rng.normal(size=(4, 8)))
    fit = select_and_fit(x, y, 4, Config(c_grid={"log10_min": 0, "log10_max": 0, "steps": 1}))
    assert seen == [fit.fit_videos, 200] and fit.fit_videos + fit.val_videos == 200


@pytest.mark.parametrize("c", [0.001, 0.1, 10.0])
def test_binary_fit_is_scikit_learns_binary_objective(c):
    """Two classes: one logistic column, so the same C gives scikit-learn's coefficients and predictions (two
    penalised softmax columns would equal scikit-learn only at 2C)."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(2, 16)) * 0.4
    x, y = clustered(rng, 400, 16, 2, centres)
    xt = torch.from_numpy(x).double()
    mean, std = standardise(xt)
    xs = ((xt - mean) / std).double()
    ours = fit_logistic(xs, torch.from_numpy(y), 2, c, tolerance=1e-8)
    reference = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(xs.numpy(), y)
    assert ours.shape == (17, 1)
    assert np.allclose(ours[:-1, 0].numpy(), reference.coef_[0], atol=1e-4 * max(1.0, np.abs(reference.coef_).max()))
    assert abs(float(ours[-1, 0]) - reference.intercept_[0]) < 1e-4 * max(1.0, abs(reference.intercept_[0]))
    test, _ = clustered(rng, 2000, 16, 2, centres)
    ts = ((torch.from_numpy(test).double() - mean) / std).numpy()
    ours_pred = (ts @ ours[:-1, 0].numpy() + float(ours[-1, 0]) > 0).astype(int)
    assert (ours_pred == reference.predict(ts)).mean() >= 0.999


def test_binary_card_matches_scikit_learn_at_the_chosen_c(tmp_path):
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(2, 20)) * 0.35
    train, train_y = clustered(rng, 400, 20, 2, centres)
    test, test_y = clustered(rng, 600, 20, 2, centres)
    probes = {"linear": {"c_grid": {"log10_min": -4, "log10_max": 1, "steps": 6}}}
    path, protocol, root = build_file(tmp_path, train, train_y, test, test_y, probes=probes)
    record = probe("linear", path, protocol, root)
    c = record["chosen"]["C"]
    mean, std = train.mean(0), train.std(0)
    reference = LogisticRegression(C=c, max_iter=5000).fit((train - mean) / std, train_y)
    expected = reference.predict((test - mean) / std)
    ours = np.array([int(p[1:]) for p in record["predictions"]["predicted"]])
    assert (ours == expected).mean() >= 0.995
    assert abs(record["metrics"]["top1"]["value"] - (expected == test_y).mean()) <= 0.005
    assert 0.6 < (expected == test_y).mean() < 0.98


@pytest.mark.parametrize("c", [0.001, 0.1, 10.0])
def test_fit_matches_scikit_learn_at_the_same_c(c):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 20)) * 0.7
    x, y = clustered(rng, 600, 20, 5, centres)
    xt = torch.from_numpy(x).double()
    mean, std = standardise(xt)
    xs = ((xt - mean) / std)
    ours = fit_logistic(xs, torch.from_numpy(y), 5, c, tolerance=1e-7)
    reference = LogisticRegression(C=c, max_iter=5000, tol=1e-8).fit(xs.numpy(), y)
    assert np.allclose(ours[:-1].numpy(), reference.coef_.T, atol=2e-3 * max(1.0, np.abs(reference.coef_).max()))
    test, test_y = clustered(rng, 400, 20, 5, centres)
    ts = ((torch.from_numpy(test).double() - mean) / std)
    ours_acc = ((ts @ ours[:-1] + ours[-1]).argmax(1).numpy() == test_y).mean()
    assert abs(ours_acc - reference.score(ts.numpy(), test_y)) <= 0.005


def test_probe_chooses_c_on_validation_and_matches_scikit_learn(tmp_path):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 24)) * 0.5
    train, train_y = clustered(rng, 500, 24, 6, centres)
    test, test_y = clustered(rng, 300, 24, 6, centres)
    probes = {"linear": {"c_grid": {"log10_min": -4, "log10_max": 2, "steps": 7}}}
    path, protocol, root = build_file(tmp_path, train, train_y, test, test_y, probes=probes)
    record = probe("linear", path, protocol, root)
    chosen = record["chosen"]
    assert [round(np.log10(p["C"])) for p in chosen["curve"]] == list(range(-4, 3))
    assert chosen["C"] == max(chosen["curve"], key=lambda p: p["val_top1"])["C"]
    assert chosen["val_videos"] == sum(int(np.floor(0.1 * n + 0.5)) for n in np.bincount(train_y))
    mean, std = train.mean(0), train.std(0)
    reference = LogisticRegression(C=chosen["C"], max_iter=5000).fit((train - mean) / std, train_y)
    expected = reference.score((test - mean) / std, test_y)
    assert abs(record["metrics"]["top1"]["value"] - expected) <= 0.005
    assert 0.3 < expected < 0.95
    assert record["metrics"]["top5"]["value"] >= record["metrics"]["top1"]["value"]


def test_views_clips_trains_on_every_view(tmp_path):
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(3, 16)) * 0.6
    train, train_y = clustered(rng, 120, 16, 3, centres, views=3)
    test, test_y = clustered(rng, 60, 16, 3, centres, views=3)
    probes = {"linear": {"c_grid": {"log10_min": -2, "log10_max": 1, "steps": 4}, "views": "clips"}}
    path, protocol, root = build_file(tmp_path, train, train_y, test, test_y, probes=probes)
    record = probe("linear", path, protocol, root)
    assert record["config"]["views"] == "clips"
    assert record["metrics"]["top1"]["value"] > 0.6 and len(record["predictions"]["ids"]) == 60


def scikit_learns_objective(x, y, n_classes, c):
    """scikit-learn's own LogisticRegression objective (LinearModelLoss, mean loss + ||W||^2 / (2 C n)) and its
    gradient, as functions of our (D + 1, K) weights."""
    binary = n_classes == 2
    loss = LinearModelLoss(HalfBinomialLoss() if binary else HalfMultinomialLoss(n_classes=n_classes), True)
    target, strength = y.astype(np.float64), 1 / (c * len(x))

    def coef(weights):
        return weights[:, 0] if binary else np.ascontiguousarray(weights.T)

    def value(weights):
        return loss.loss(coef(weights), x, target, l2_reg_strength=strength)

    def gradient(weights):
        grad = loss.gradient(coef(weights), x, target, l2_reg_strength=strength)
        return grad[:, None] if binary else grad.T

    return value, gradient


def problem(n_classes, n=300, dim=7):
    rng = np.random.default_rng(n_classes)
    x, y = clustered(rng, n, dim, n_classes, rng.normal(size=(n_classes, dim)) * 0.8)
    return (x - x.mean(0)) / x.std(0), y


@pytest.mark.parametrize("n_classes", [2, 4])
def test_objective_and_gradient_are_scikit_learns_at_any_weights(n_classes):
    x, y = problem(n_classes)
    columns = 1 if n_classes == 2 else n_classes
    rng = np.random.default_rng(5)
    for c in (1e-3, 1.0):
        value, gradient = scikit_learns_objective(x.astype(np.float64), y, n_classes, c)
        for scale in (0.1, 3.0):
            weights = rng.normal(scale=scale, size=(x.shape[1] + 1, columns))
            point = _start(_Objective(torch.from_numpy(x).double(), torch.from_numpy(y), columns), torch.from_numpy(weights))
            assert float(point.value(_strength(c, len(x)))) == pytest.approx(value(weights), rel=1e-12)
            assert np.allclose(point.total_gradient(_strength(c, len(x))).numpy(), gradient(weights), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("c", [1e-4, 1.0, 1e3])
def test_our_minimum_is_scikit_learns_minimum(n_classes, c):
    """On scikit-learn's objective and on ours, each minimiser's point is as low as the other's (to 1e-9 relative), so
    both minimise the same function; the weights agree too."""
    x, y = problem(n_classes)
    value, _ = scikit_learns_objective(x.astype(np.float64), y, n_classes, c)
    objective = _Objective(torch.from_numpy(x).double(), torch.from_numpy(y), 1 if n_classes == 2 else n_classes)

    def our_value(weights):
        return float(_start(objective, torch.from_numpy(weights)).value(_strength(c, len(x))))

    ours = fit_logistic(torch.from_numpy(x).double(), torch.from_numpy(y), n_classes, c, tolerance=1e-9).numpy()
    reference = LogisticRegression(C=c, max_iter=10000, tol=1e-10).fit(x.astype(np.float64), y)
    theirs = np.vstack([reference.coef_.T, reference.intercept_])
    if n_classes > 2:  # scikit-learn's unpenalised intercepts are defined up to a constant shift
        theirs[-1] -= theirs[-1].mean() - ours[-1].mean()
    for objective_value in (value, our_value):
        assert abs(objective_value(ours) - objective_value(theirs)) <= 1e-9 * objective_value(theirs)
    assert np.allclose(ours, theirs, atol=1e-4 * max(1.0, np.abs(theirs).max()))


def test_float32_fits_meet_the_tolerance_on_scikit_learns_gradient():
    """From strong to weak regularisation, where float32 losses no longer resolve the last decreases, the float32
    sweep still stops only once scikit-learn's gradient (float64) is within the tolerance at every C."""
    x, y = problem(5, n=1000, dim=16)
    weights = None
    for c in np.logspace(-6, 2, 3):
        weights = fit_logistic(torch.from_numpy(x), torch.from_numpy(y), 5, float(c), weights)
        _, gradient = scikit_learns_objective(x.astype(np.float64), y, 5, float(c))
        assert np.abs(gradient(weights.double().numpy())).max() <= 1.0001e-4


def test_the_sweep_refits_to_the_tolerance_on_scikit_learns_gradient():
    """The refit, started from the validation fit with its curvature pairs carried over, still stops only within the
    tolerance of scikit-learn's gradient on all of train at the chosen C."""
    x, y = problem(5, n=1000, dim=16)
    fit = select_and_fit(x, y, 5, Config(c_grid={"log10_min": -6, "log10_max": 2, "steps": 3}))
    xs = (x.astype(np.float64) - fit.mean.numpy()) / fit.std.numpy()
    _, gradient = scikit_learns_objective(xs, y, 5, fit.c)
    assert fit.c > 1e-6 and np.abs(gradient(fit.weights.double().numpy())).max() <= 1.0001e-4
