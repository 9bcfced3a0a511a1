import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from evalharness.probes.linear import fit_logistic, standardise, stratified_split

from helpers import build_file, clustered, probe


def test_stratified_split_takes_a_tenth_of_each_class_deterministically():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 1)
    fit, val = stratified_split(labels, 0.1, 0)
    assert np.bincount(labels[val], minlength=3).tolist() == [5, 3, 0]
    assert sorted(np.concatenate([fit, val]).tolist()) == list(range(81))
    assert np.array_equal(val, stratified_split(labels, 0.1, 0)[1])
    assert not np.array_equal(val, stratified_split(labels, 0.1, 1)[1])


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
