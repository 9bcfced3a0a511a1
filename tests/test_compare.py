import json
import subprocess
import sys

import numpy as np
import pytest

from evalharness.errors import HarnessError
from evalharness.metrics import accuracy_estimate, mcnemar_exact, paired_difference, sequence_share_estimate, wilson_interval
from evalharness.results import compare_records, write_record

from helpers import build_file, clustered, probe


def test_mcnemar_and_paired_difference_by_hand():
    a = np.array([1, 1, 1, 0, 1, 0])
    b = np.array([0, 0, 1, 0, 1, 1])
    test = mcnemar_exact(a, b)
    assert (test["only_a"], test["only_b"]) == (2, 1)
    assert test["p_value"] == pytest.approx(1.0)  # two-sided binomial: P(X <= 1 or X >= 2 | n=3) = 1
    assert mcnemar_exact([1] * 6, [0] * 6)["p_value"] == pytest.approx(2 * 0.5 ** 6)
    d = paired_difference(a, b, higher_is_better=True, unit="fraction")
    assert d.value == pytest.approx(1 / 6) and d.ci_low <= d.value <= d.ci_high
    same = paired_difference(a, a, higher_is_better=True, unit="fraction")
    assert (same.value, same.ci_low, same.ci_high, same.n) == (0.0, 0.0, 0.0, 6)


@pytest.mark.parametrize(("hits", "n"), [(0, 20), (20, 20), (7, 20), (1, 1), (480, 500)])
def test_proportions_get_wilsons_interval_as_scipy_computes_it(hits, n):
    from scipy.stats import binomtest

    reference = binomtest(hits, n).proportion_ci(0.95, method="wilson")
    assert wilson_interval(hits, n) == pytest.approx((reference.low, reference.high), abs=1e-12)
    e = accuracy_estimate(np.arange(n) < hits)
    assert (e.value, e.ci_low, e.ci_high, e.interval) == (hits / n, *wilson_interval(hits, n), "wilson")
    assert e.ci_low < e.ci_high  # 0% and 100% are estimates, not certainties


def test_sequence_bootstrap_moves_the_objects_of_a_video_together():
    # two objects per video, equal within a video: resampling objects would count each video twice
    values = np.repeat([0.2, 0.9, 0.5, 0.7, 0.4, 0.8], 2)
    sequences = np.repeat(list("abcdef"), 2)
    by_sequence = sequence_share_estimate(values, sequences)
    assert by_sequence.value == pytest.approx(values.mean()) and by_sequence.n == 12
    assert by_sequence.interval == "bootstrap-sequences"
    one_each = sequence_share_estimate(values[::2], sequences[::2])
    assert (by_sequence.ci_low, by_sequence.ci_high) == pytest.approx((one_each.ci_low, one_each.ci_high))
    from evalharness.metrics import share_estimate

    by_object = share_estimate(values)
    assert by_object.ci_high - by_object.ci_low < by_sequence.ci_high - by_sequence.ci_low


def test_compare_two_models_on_the_same_items(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 0.7
    train, train_y = clustered(rng, 200, 16, 4, centres)
    test, test_y = clustered(rng, 100, 16, 4, centres)
    good, protocol, root = build_file(tmp_path / "good", train, train_y, test, test_y)
    noisy = lambda x: (x + rng.normal(scale=1.5, size=x.shape)).astype(np.float32)
    bad, _, _ = build_file(tmp_path / "bad", noisy(train), train_y, noisy(test), test_y)
    a = probe("knn", good, protocol, root)
    b = probe("knn", bad, protocol, root)
    b["model"] = "worse"
    out = compare_records(a, b)
    va, vb = np.array(a["predictions"]["value"]), np.array(b["predictions"]["value"])
    assert out["difference"].value == pytest.approx(va.mean() - vb.mean())
    assert out["mcnemar"]["only_a"] == int(((va == 1) & (vb == 0)).sum())
    assert out["difference"].ci_low > 0 and out["mcnemar"]["p_value"] < 0.01
    paths = [write_record(r, tmp_path / "results") for r in (a, b)]
    cli = subprocess.run([sys.executable, "-m", "evalharness", "compare", *map(str, paths)], capture_output=True, text=True)
    assert cli.returncode == 0 and "| hand knn (n=100) |" in cli.stdout and "McNemar" in cli.stdout
    other = json.loads(json.dumps(b))
    other["probe_hash"] = "0" * 64
    with pytest.raises(HarnessError, match="differ in probe_hash"):
        compare_records(a, other)
    other = json.loads(json.dumps(b))
    other["predictions"]["ids"] = other["predictions"]["ids"][::-1]
    with pytest.raises(HarnessError, match="same test items"):
        compare_records(a, other)
