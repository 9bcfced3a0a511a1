import json
import subprocess
import sys

import numpy as np
import pytest

from evalharness.errors import HarnessError
from evalharness.report import board, long_rows, render
from evalharness.report.regress import compare
from evalharness.results import find_records, load_record, write_record
from evalharness.untrusted import folder_name

from helpers import build_file, clustered, probe


def cli(*args):
    return subprocess.run([sys.executable, "-m", "evalharness", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Result records of two models on one card."""
    tmp = tmp_path_factory.mktemp("regress")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 0.7
    train, train_y = clustered(rng, 200, 16, 4, centres)
    test, test_y = clustered(rng, 100, 16, 4, centres)
    folder = tmp / "results"
    for name, noise in (("good", 0.0), ("worse", 1.5)):
        def x(v, noise=noise):
            return (v + rng.normal(scale=noise, size=v.shape)).astype(np.float32)

        path, protocol, root = build_file(tmp / name, x(train), train_y, x(test), test_y)
        record = probe("knn", path, protocol, root)
        record["model"] = name
        write_record(record, folder)
    return folder


def test_leaderboard_formats_ranks_and_coverage(results, tmp_path):
    data = board(find_records([results]))
    assert [r["model"] for r in data["rows"]] == ["good", "worse"]
    cell = data["rows"][0]["cells"]["hand v1 / knn top1@k10"]
    assert (cell["rank_low"], cell["rank_high"]) == (1, 1) and data["rows"][0]["coverage"] == "1/1"
    markdown = cli("leaderboard", results)
    assert markdown.returncode == 0 and "| good" in markdown.stdout and "#1" in markdown.stdout
    for fmt, needle in (("csv", "model,column,value"), ("latex", "\\toprule"), ("json", '"evalharness.leaderboard"')):
        out = cli("leaderboard", results, "--format", fmt)
        assert out.returncode == 0 and needle in out.stdout, fmt
    assert json.loads(cli("leaderboard", results, "--format", "json").stdout)["columns"] == ["hand v1 / knn top1@k10"]


def test_overlapping_cis_share_a_rank_range():
    base = {"model_revision": "", "protocol": "p", "protocol_version": 1, "probe": "knn", "headline": "acc",
            "conforming": True, "extraction_hash": "e", "probe_hash": "h", "manifest_hash": "m", "created_utc": "t"}
    records = [{**base, "model": m, "metrics": {"acc": {"value": v, "ci_low": lo, "ci_high": hi, "n": 10,
                                                          "higher_is_better": True, "unit": "fraction"}}}
               for m, v, lo, hi in (("a", 0.8, 0.75, 0.85), ("b", 0.78, 0.70, 0.82), ("c", 0.5, 0.45, 0.55))]
    data = board(records)
    cells = {r["model"]: r["cells"]["p v1 / knn acc"] for r in data["rows"]}
    ranks = {model: (cell["rank_low"], cell["rank_high"]) for model, cell in cells.items()}
    assert ranks == {"a": (1, 2), "b": (1, 2), "c": (3, 3)}
    assert "#1-2" in render(data) and {r["model"]: r["mean_rank"] for r in data["rows"]}["a"] == 1.5


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_check_gates_changes(results, tmp_path, fmt):
    baseline = tmp_path / f"baseline.{fmt}"
    assert cli("check", results, "--baseline", baseline, "--update").returncode == 0
    same = cli("check", results, "--baseline", baseline)
    assert same.returncode == 0 and "| good | hand v1 / knn top1@k10 |" in same.stdout and "0 failing" in same.stdout
    text = baseline.read_text()

    def rewrite(change):
        if fmt == "json":
            edited = json.loads(text)
            change(edited["rows"][0]["cells"]["hand v1 / knn top1@k10"])
            baseline.write_text(json.dumps(edited))
        else:
            lines = text.splitlines()
            header = lines[0].split(",")
            row = dict(zip(header, lines[1].split(","), strict=True))
            change(row)
            baseline.write_text("\n".join([lines[0], ",".join(str(row[h]) for h in header), *lines[2:]]) + "\n")

    rewrite(lambda cell: cell.update(value=float(cell["value"]) + 0.05))
    dropped = cli("check", results, "--baseline", baseline)
    assert dropped.returncode == 1 and "**regressed**" in dropped.stdout and "| -5.00 |" in dropped.stdout  # points
    rewrite(lambda cell: cell.update(value=float(cell["value"]) - 0.10))
    improved = cli("check", results, "--baseline", baseline)
    assert improved.returncode == 0 and "improved" in improved.stdout
    assert cli("check", results, "--baseline", baseline, "--strict").returncode == 1
    rewrite(lambda cell: cell.update(value=float(cell["value"]) + 0.05, probe_hash="0" * 64))
    changed = cli("check", results, "--baseline", baseline)
    assert changed.returncode == 1 and "**protocol changed: probe hash**" in changed.stdout


def test_classification_records_hold_per_class_counts(results):
    """knn's record: a confusion matrix over the classes its predictions name, from the per-item predictions."""
    record = load_record(results / folder_name("good", "") / "hand" / "knn.json")
    per_class, predictions = record["per_class"], record["predictions"]
    assert per_class["classes"] == sorted(set(predictions["label"]) | set(predictions["predicted"]))
    matrix = np.array(per_class["confusion"])
    assert matrix.sum() == len(predictions["ids"]) == record["metrics"]["top1@k10"]["n"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(record["metrics"]["top1@k10"]["value"])
    index = {name: i for i, name in enumerate(per_class["classes"])}
    assert matrix.sum(axis=1).tolist() == [predictions["label"].count(c) for c in per_class["classes"]]
    first = index[predictions["label"][0]], index[predictions["predicted"][0]]
    assert matrix[first] >= 1


def test_check_fails_on_a_missing_row(results, tmp_path):
    baseline = tmp_path / "b.json"
    cli("check", results, "--baseline", baseline, "--update")
    only_good = tmp_path / "only"
    only_good.mkdir()
    (only_good / "knn.json").write_text((results / folder_name("good", "") / "hand" / "knn.json").read_text())
    missing = cli("check", only_good, "--baseline", baseline)
    assert missing.returncode == 1 and "**missing**" in missing.stdout


def test_records_that_contradict_their_shipped_card_are_refused(results, tmp_path):
    record = json.loads((results / folder_name("good", "") / "hand" / "knn.json").read_text())
    record["protocol"] = "synthetic-motion"
    (tmp_path / "forged.json").write_text(json.dumps(record))
    out = cli("leaderboard", tmp_path / "forged.json")
    assert out.returncode == 1 and "differs from card synthetic-motion v1" in out.stderr


def test_v1_records_load_with_the_directions_and_units_v1_wrote(results, tmp_path):
    record = json.loads((results / folder_name("good", "") / "hand" / "knn.json").read_text())
    record.update(schema_version=1, probe="retrieval", headline="t2v_R@1")
    head = {k: record["metrics"]["top1@k10"][k] for k in ("value", "ci_low", "ci_high", "n")}
    record["metrics"] = {"t2v_R@1": head, "t2v_MdR": {"value": 3.0, "ci_low": 2.0, "ci_high": 4.0, "n": 100}}
    (tmp_path / "v1.json").write_text(json.dumps(record))
    loaded = load_record(tmp_path / "v1.json")
    assert loaded["schema_version"] == 2
    assert loaded["metrics"]["t2v_R@1"] == {**head, "higher_is_better": True, "unit": "fraction"}
    assert loaded["metrics"]["t2v_MdR"]["higher_is_better"] is False and loaded["metrics"]["t2v_MdR"]["unit"] == "rank"
    del loaded["metrics"]["t2v_MdR"]["n"]
    (tmp_path / "bad.json").write_text(json.dumps(loaded))
    with pytest.raises(HarnessError, match="metric 't2v_MdR' is malformed"):
        load_record(tmp_path / "bad.json")


def test_the_gate_reads_each_metric_s_direction():
    def records(value):
        metric = {"value": value, "ci_low": value - 1, "ci_high": value + 1, "n": 10, "higher_is_better": False,
                  "unit": "rank"}
        return [{"model": "m", "model_revision": "", "protocol": "p", "protocol_version": 1, "probe": "retrieval",
                 "headline": "t2v_MdR", "conforming": True, "extraction_hash": "e", "probe_hash": "h",
                 "manifest_hash": "m", "created_utc": "t", "metrics": {"t2v_MdR": metric}}]

    baseline = {(r["model"], r["column"]): r for r in long_rows(board(records(5.0)))}
    assert [c.status for c in compare(board(records(7.0)), baseline, 0.001)] == ["regressed"]
    assert [c.status for c in compare(board(records(4.0)), baseline, 0.001)] == ["improved"]
    assert "7.0 [6.0, 8.0]" in render(board(records(7.0)))  # ranks are not shown in percent
