import numpy as np
import pytest
import yaml

from evalharness.cards import load_protocol
from evalharness.errors import ProbeError
from evalharness.metrics import mean_per_class, ranked_classes
from evalharness.probes.knn import neighbours, vote, voted_ranking

from helpers import build_file, clustered, probe

T = 0.07


def predict(train, labels, test, k, n_classes):
    sims, ids = neighbours(train, test, [k])
    return ranked_classes(vote(sims, ids, labels, n_classes, k, T), n_classes)[:, 0]


def test_hand_computed_weighted_vote_beats_majority():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]], dtype=np.float32)
    labels = np.array([0, 1, 1])
    test = np.array([[1.0, 0.0]], dtype=np.float32)
    sims, ids = neighbours(train, test, [3])
    assert ids.tolist() == [[0, 2, 1]] and np.allclose(sims, [[1.0, 0.8, 0.0]])
    scores = vote(sims, ids, labels, 2, 3, T)
    # class 0: exp(1/0.07); class 1: exp(0.8/0.07) + exp(0/0.07): a majority vote would say 1, DINO's says 0
    assert np.allclose(scores, [[np.exp(1 / T), np.exp(0.8 / T) + 1.0]])
    assert predict(train, labels, test, 3, 2).tolist() == [0]
    assert predict(train, labels, test, 2, 2).tolist() == [0]


def test_neighbour_ties_break_toward_the_lower_train_index():
    a = np.array([0.6, 0.8], dtype=np.float32)
    train = np.stack([[0.0, 1.0], a, a, [1.0, 0.0]]).astype(np.float32)
    labels = np.array([0, 1, 2, 0])
    test = np.array([[0.6, 0.8]], dtype=np.float32)
    # the two identical vectors tie; k = 1 must keep the lower index (1 -> class 1), not the other
    assert predict(train, labels, test, 1, 3).tolist() == [1]
    _sims, ids = neighbours(train, test, [1, 2, 3])
    assert ids[0, :2].tolist() == [1, 2]


def test_vote_ties_break_toward_the_lower_class_index():
    train = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    labels = np.array([1, 0])
    test = np.array([[np.sqrt(0.5), np.sqrt(0.5)]], dtype=np.float32)
    sims, _ids = neighbours(train, test, [2])
    assert sims[0, 0] == sims[0, 1]
    assert predict(train, labels, test, 2, 2).tolist() == [0]


def reference_knn(train, labels, test, k, n_classes):
    """Independent implementation: float64 similarities, full stable sort, explicit loop."""
    out = []
    for q in test.astype(np.float64):
        sims = train.astype(np.float64) @ q
        order = sorted(range(len(sims)), key=lambda i: (-sims[i], i))[:k]
        scores = [0.0] * n_classes
        for i in order:
            scores[labels[i]] += np.exp(sims[i] / T)
        out.append(max(range(n_classes), key=lambda c: (scores[c], -c)))
    return np.array(out)


@pytest.mark.parametrize("k", [1, 10, 20, 200])
def test_predictions_equal_an_independent_implementation(k):
    rng = np.random.default_rng(k)
    centres = rng.normal(size=(7, 16)) * 0.6
    train, train_y = clustered(rng, 400, 16, 7, centres)
    test, test_y = clustered(rng, 120, 16, 7, centres)
    got = predict(train, train_y, test, k, 7)
    assert got.tolist() == reference_knn(train, train_y, test, k, 7).tolist()
    assert 0.3 < (got == test_y).mean() < 0.95


def test_k_larger_than_train_is_capped_and_prefixes_are_exact():
    rng = np.random.default_rng(0)
    train, _train_y = clustered(rng, 15, 8, 3, rng.normal(size=(3, 8)))
    test, _ = clustered(rng, 10, 8, 3, rng.normal(size=(3, 8)))
    sims, ids = neighbours(train, test, [5, 200])
    assert ids.shape == (10, 15)
    assert (np.diff(sims, axis=1) <= 0).all()


def reference_top5(train, labels, test, k, n_classes):
    """DINO's top-5 with classes that got no vote left out: per query, the voted classes by score (ties: lower
    class index), at most five."""
    out = []
    for q in test.astype(np.float64):
        sims = train.astype(np.float64) @ q
        scores = {}
        for i in sorted(range(len(sims)), key=lambda i: (-sims[i], i))[:k]:
            scores[labels[i]] = scores.get(labels[i], 0.0) + np.exp(sims[i] / T)
        out.append(sorted(scores, key=lambda c: (-scores[c], c))[:5])
    return out


def test_classes_without_a_vote_never_fill_the_top5():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(12, 16)) * 0.4
    train, train_y = clustered(rng, 300, 16, 12, centres)
    test, test_y = clustered(rng, 200, 16, 12, centres)
    sims, ids = neighbours(train, test, [3])
    ranked = voted_ranking(vote(sims, ids, train_y, 12, 3, T), 5)
    expected = reference_top5(train, train_y, test, 3, 12)
    assert [[c for c in row if c >= 0] for row in ranked.tolist()] == expected
    assert (ranked[:, 3:] == -1).all()  # three neighbours vote for at most three classes
    free = ranked_classes(vote(sims, ids, train_y, 12, 3, T), 5)  # zero-vote classes in index order
    hits = [(row[:5] == y).any() for row, y in zip(free, test_y, strict=True)]
    honest = [y in row for row, y in zip(expected, test_y, strict=True)]
    assert sum(hits) > sum(honest)  # low-index classes got top-5 hits for free


def test_mean_per_class_accuracy():
    labels = np.array([0, 0, 0, 0, 1])
    correct = np.array([1, 1, 1, 1, 0], dtype=bool)
    assert mean_per_class(correct, labels) == 0.5


def test_probe_record_matches_reference_and_collapsed_scores_chance(tmp_path):
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(4, 12)) * 0.8
    train, train_y = clustered(rng, 200, 12, 4, centres)
    test, test_y = clustered(rng, 80, 12, 4, centres)
    path, protocol, root = build_file(tmp_path, train, train_y, test, test_y)
    record = probe("knn", path, protocol, root)
    # manifest class indices follow sorted label names c0..c3; ids sort train-before-test within each split
    expected = reference_knn(train, train_y, test, 10, 4)
    assert record["predictions"]["predicted"] == [f"c{c}" for c in expected]
    head = record["metrics"]["top1@k10"]
    assert head["value"] == pytest.approx((expected == test_y).mean())
    assert head["ci_low"] <= head["value"] <= head["ci_high"] and head["n"] == 80
    assert record["chosen"]["k_used"] == {"1": 1, "10": 10, "20": 20}
    assert record["conforming"] and record["probe_hash"] == protocol.probe_hash

    collapsed_dir = tmp_path / "collapsed"
    collapsed_dir.mkdir()
    flat = np.ones_like(train) / np.sqrt(12)
    balanced_test_y = np.arange(80) % 4
    path, protocol, root = build_file(collapsed_dir, flat, train_y, np.ones_like(test) / np.sqrt(12), balanced_test_y, "flat")
    record = probe("knn", path, protocol, root)
    assert record["metrics"]["top1@k10"]["value"] == pytest.approx(0.25)
    assert record["metrics"]["mean_class@k10"]["value"] == pytest.approx(0.25)
    assert record["caveats"] == []


def test_a_k_beyond_the_train_split_is_a_caveat_in_the_record_line_and_table(tmp_path):
    from click.testing import CliRunner

    from evalharness.cli import cli
    from evalharness.report import board, render

    rng = np.random.default_rng(6)
    x, y = clustered(rng, 24, 6, 3, rng.normal(size=(3, 6)))
    probes = {"knn": {"k": [1, 10, 20], "headline_k": 10}}
    path, protocol, root = build_file(tmp_path, x[:15], y[:15], x[15:], y[15:], probes=probes)
    record = probe("knn", path, protocol, root)
    assert record["chosen"]["k_used"] == {"1": 1, "10": 10, "20": 15}
    assert record["caveats"] == ["k = 20 capped at the 15 train videos: each of those metrics votes with all 15"]
    out = CliRunner().invoke(cli, ["probe", "knn", str(path), "-p", str(tmp_path / "hand.yaml"), "-d", str(root),
                                   "-o", str(tmp_path / "results")])
    assert out.exit_code == 0 and "caveat: k = 20 capped at the 15 train videos" in out.output
    table = render(board([record]))
    assert "\u2020" in table.splitlines()[2] and "\u2020 = the record states a caveat" in table


def test_probe_refuses_a_file_from_another_card(tmp_path):
    rng = np.random.default_rng(0)
    x, y = clustered(rng, 30, 4, 2, rng.normal(size=(2, 4)))
    path, _protocol, root = build_file(tmp_path, x[:20], y[:20], x[20:], y[20:])
    raw = yaml.safe_load((tmp_path / "hand.yaml").read_text())
    raw["frames"]["count"] = 8
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ProbeError, match=r"was extracted under protocol hand v1 .* but card hand v1 has extraction_hash"):
        probe("knn", path, load_protocol(tmp_path / "other.yaml"), root)
    record = probe("knn", path, load_protocol(tmp_path / "other.yaml"), root, allow_mismatch=True)
    assert record["conforming"] is False and "extracted under" in record["notes"][0]
    import subprocess
    import sys

    def validate(*args):
        return subprocess.run([sys.executable, "-m", "evalharness", "validate", str(path), *map(str, args)],
                              capture_output=True, text=True)

    assert validate("-p", tmp_path / "hand.yaml", "-d", root).returncode == 0
    wrong = validate("-p", tmp_path / "other.yaml")
    assert wrong.returncode == 1 and "was extracted under protocol hand v1" in wrong.stdout
    (root / "manifest.csv").write_text((root / "manifest.csv").read_text().replace("te0000,te0000.mp4,", "te9999,te9999.mp4,"))
    moved = validate("-p", tmp_path / "hand.yaml", "-d", root)
    assert moved.returncode == 1 and "lacks 1 of the" in moved.stdout
    assert "different clips, labels, splits or groups" in moved.stdout


def test_faiss_and_torch_paths_give_the_same_neighbours():
    rng = np.random.default_rng(9)
    train, _ = clustered(rng, 500, 32, 5, rng.normal(size=(5, 32)))
    train[100] = train[50]  # an exact tie
    queries, _ = clustered(rng, 64, 32, 5, rng.normal(size=(5, 32)))
    queries[0] = train[50]
    a = neighbours(train, queries, [10, 20], backend="faiss")
    b = neighbours(train, queries, [10, 20], backend="torch")
    assert np.array_equal(a[1], b[1])
    assert a[1][0, :2].tolist() == [50, 100]
    assert np.allclose(a[0], b[0], atol=1e-6)
