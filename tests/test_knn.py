import numpy as np
import pytest
import yaml

from evalharness.cards import load_protocol
from evalharness.errors import ProbeError
from evalharness.metrics import mean_per_class, ranked_classes
from evalharness.probes import knn
from evalharness.probes.knn import BACKENDS, chunk_rows, neighbours, search, vote, voted_ranking

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
    assert record["chosen"]["k_used"] == {"1": 1, "10": 10, "20": 20} and record["chosen"]["search"] == "faiss"
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


def float64_reference(train, queries, kmax):
    """Independent exact search: float64 products rounded to float32 once, order by (similarity desc, index asc)."""
    exact = (queries.astype(np.float64) @ train.T.astype(np.float64)).astype(np.float32)
    index = np.broadcast_to(np.arange(len(train)), exact.shape)
    order = np.lexsort((index, -exact), axis=1)[:, :kmax]
    return np.take_along_axis(exact, order, 1), order


def planted_ties(seed):
    """A bank whose second half repeats a few rows of the first at scattered indices, a block of collapsed (equal)
    rows, and queries that are copies of repeated rows: many rows tie exactly across k boundaries."""
    rng = np.random.default_rng(seed)
    train, _ = clustered(rng, 600, 24, 6, rng.normal(size=(6, 24)) * 0.5)
    train[300:] = train[rng.integers(0, 12, 300)]
    train[rng.permutation(600)] = train.copy()
    train[100:140] = train[0]
    queries, _ = clustered(rng, 150, 24, 6, rng.normal(size=(6, 24)) * 0.5)
    queries[:90] = train[rng.integers(0, 600, 90)]
    return train, queries


def assert_exact(sims, ids, train, queries, ks):
    """Every prefix k in ks is the reference's top-k set, the whole list ordered by similarity then index."""
    ref_sims, ref_ids = float64_reference(train, queries, ids.shape[1])
    for k in ks:
        assert (np.sort(ids[:, :k], 1) == np.sort(ref_ids[:, :k], 1)).all(), k
    assert np.allclose(sims, ref_sims, atol=1e-6)
    assert (np.diff(sims, axis=1) <= 0).all()
    same = np.diff(sims, axis=1) == 0
    assert (np.diff(ids, axis=1)[same] > 0).all()


KS = [3, 10, 20, 45]


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_is_exact_on_planted_ties_at_k_boundaries(backend):
    train, queries = planted_ties(1)
    ref_sims, _ = float64_reference(train, queries, 46)
    tied = np.zeros(len(queries), dtype=bool)
    for k in KS:
        tied |= ref_sims[:, k - 1] == ref_sims[:, k]
    assert tied.sum() > 80  # the test exercises the exact recomputation
    found = search(train, queries, KS, backend=backend)
    assert found.backend == backend
    assert_exact(found.sims, found.ids, train, queries, KS)
    rows = np.flatnonzero(tied)  # recomputed rows: the reference's similarities and order to the last bit
    reference = float64_reference(train, queries[rows], 45)
    assert np.array_equal(found.sims[rows], reference[0]) and np.array_equal(found.ids[rows], reference[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_blocks_split_the_queries_and_give_the_same_answer(backend, monkeypatch):
    train, queries = planted_ties(2)
    budget = 4 * len(train) * 7  # seven queries per product
    assert chunk_rows(len(train), budget) == 7
    shapes = []
    monkeypatch.setattr(knn, "_top", lambda block, k, top=knn._top: shapes.append(block.shape) or top(block, k))
    sims, ids = neighbours(train, queries, KS, block_bytes=budget, backend=backend)
    assert_exact(sims, ids, train, queries, KS)
    if backend != "faiss":
        assert len(shapes) == 22 and all(rows * n * 4 <= budget for rows, n in shapes)


def test_the_block_size_bounds_memory_whatever_the_number_of_queries():
    assert chunk_rows(50_000, 256 << 20) == 1342 and 1342 * 50_000 * 4 <= 256 << 20 < 1343 * 50_000 * 4
    assert chunk_rows(10 ** 9, 256 << 20) == 1  # one query at a time rather than no search


def test_the_automatic_choice_times_every_cpu_backend_and_is_exact(monkeypatch):
    train, queries = planted_ties(3)
    assert knn._candidates("cpu", 1.0) == ("faiss",) and knn._candidates("cuda", 1e15) == ("torch",)
    monkeypatch.setattr(knn, "MEASURE_WORK", 0)
    timed = []
    monkeypatch.setattr(knn, "_searcher", lambda name, *a, make=knn._searcher: timed.append(name) or make(name, *a))
    found = search(train, queries, KS)
    assert timed == list(BACKENDS) and found.backend in BACKENDS
    assert_exact(found.sims, found.ids, train, queries, KS)


def test_a_backend_that_cannot_run_is_refused():
    train, queries = planted_ties(4)
    with pytest.raises(ValueError, match="unknown kNN backend 'annoy'"):
        neighbours(train, queries, [5], backend="annoy")
    with pytest.raises(ValueError, match="numpy-blas backend runs on the CPU only"):
        neighbours(train, queries, [5], device="cuda", backend="numpy-blas")


def test_vote_adds_the_weights_in_neighbour_order_to_the_last_bit():
    rng = np.random.default_rng(8)
    sims = np.sort(rng.uniform(-1, 1, (50, 30)).astype(np.float32), 1)[:, ::-1]
    ids = rng.integers(0, 40, (50, 30))
    labels = rng.integers(0, 4, 40)
    weights, expected = np.exp(sims.astype(np.float64) / T), np.zeros((50, 4))
    for row in range(50):
        for j in range(20):
            expected[row, labels[ids[row, j]]] += weights[row, j]
    assert np.array_equal(vote(sims, ids, labels, 4, 20, T), expected)

