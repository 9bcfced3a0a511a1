"""Units and ranking a reader trusts: `check` in percent with a tolerance in points (ranks in rank units), warning
when the tolerance hides real changes and naming the hash that changed; non-conforming rows shown but not ranked;
per-class counts in records, checked as hostile input."""

import csv
import io
import json

import pytest
from click.testing import CliRunner

from evalharness import __version__
from evalharness.cli import cli
from evalharness.errors import HarnessError
from evalharness.metrics import MAX_CLASSES, confusion
from evalharness.report import board, long_rows, render
from evalharness.report.regress import compare, markdown_report
from evalharness.results import check_record, write_record


def record(model="m", value=0.5, unit="fraction", conforming=True, **changes):
    low, high = (value - 0.05, value + 0.05) if unit == "fraction" else (value - 1, value + 1)
    metric = {"value": value, "ci_low": max(0.0, low), "ci_high": min(1.0, high) if unit == "fraction" else high,
              "n": 100, "higher_is_better": unit == "fraction", "unit": unit}
    predictions = {"ids": ["a", "b", "c"], "label": ["x", "y", "y"], "predicted": ["x", "x", "y"], "value": [1, 0, 1]}
    return {"format": "evalharness.result", "schema_version": 2, "model": model, "model_revision": "",
            "protocol": "toy", "protocol_version": 1, "probe": "knn" if unit == "fraction" else "retrieval",
            "headline": "top1" if unit == "fraction" else "t2v_MdR", "conforming": conforming,
            "extraction_hash": "e" * 64, "probe_hash": "p" * 64, "manifest_hash": "m" * 64, "created_utc": "t",
            "embedding_file": {}, "config": {}, "chosen": {},
            "metrics": {"top1" if unit == "fraction" else "t2v_MdR": metric}, "predictions": predictions,
            "per_class": confusion(predictions), "notes": [], "caveats": [], "harness_version": __version__,
            "environment": {}, "timings": {}, **changes}


def baseline_of(*records):
    return {(r["model"], r["column"]): r for r in long_rows(board(list(records)))}


def test_check_reads_shares_in_percent_and_the_tolerance_in_points():
    base = baseline_of(record(value=0.5), record("r", 3.0, "rank"))
    same = compare(board([record(value=0.5005), record("r", 3.05, "rank")]), base, 0.1)
    assert [c.status for c in same] == ["ok", "ok"]  # 0.05 points, 0.05 ranks
    moved = compare(board([record(value=0.498), record("r", 3.5, "rank")]), base, 0.1)
    assert [c.status for c in moved] == ["regressed", "regressed"]  # 0.2 points, half a rank
    report = markdown_report(moved, 0.1)
    assert "| m | toy v1 / knn top1 | 50.00 | 49.80 | -0.20 | **regressed** |" in report
    assert "| r | toy v1 / retrieval t2v\\_MdR | 3.00 | 3.50 | +0.50 | **regressed** |" in report
    assert "2 compared, 2 failing (shares in percent, deltas in points" in report and "warning" not in report


def test_a_tolerance_that_hides_a_real_change_warns():
    base = baseline_of(record(value=0.5), record("n", value=0.5))
    rows = compare(board([record(value=0.44), record("n", value=0.5)]), base, 8)
    assert [r.status for r in rows] == ["ok", "ok"]
    assert markdown_report(rows, 8).splitlines()[-1] == (
        "warning: a tolerance of 8 points lets a score move more than 5 points without failing; 1 score(s) moved "
        "more than 5 points and passed as ok")
    strict = compare(board([record(value=0.44), record("n", value=0.5)]), base, 5)
    assert [r.status for r in strict] == ["regressed", "ok"] and "warning" not in markdown_report(strict, 5)


@pytest.mark.parametrize("name", ["extraction", "manifest", "probe"])
def test_check_names_the_hash_that_changed(name):
    rows = compare(board([record(**{f"{name}_hash": "0" * 64})]), baseline_of(record()), 0.1)
    assert rows[0].status == "protocol changed" and rows[0].changed == (name,) and rows[0].failed
    assert f"**protocol changed: {name} hash**" in markdown_report(rows, 0.1)


def test_a_baseline_without_manifest_hashes_is_still_read():
    old = {key: {k: v for k, v in row.items() if k != "manifest_hash"} for key, row in baseline_of(record()).items()}
    assert [r.status for r in compare(board([record(manifest_hash="0" * 64)]), old, 0.1)] == ["ok"]


def test_non_conforming_rows_are_shown_but_not_ranked_unless_rank_all():
    records = [record("a", 0.8), record("b", 0.5), record("c", 0.95, conforming=False, notes=["limit: 8 clips per split"])]
    data = board(records)
    rows = {row["model"]: row for row in data["rows"]}
    assert [row["model"] for row in data["rows"]] == ["a", "b", "c"]
    assert (rows["c"]["coverage"], rows["c"]["mean_rank"]) == ("0/1", None)
    assert [rows[m]["cells"]["toy v1 / knn top1"]["rank_low"] for m in "abc"] == [1, 2, None]
    markdown = render(data)
    assert "| c       | 95.0 [90.0, 100.0] * | 0/1        | –" in markdown and "not ranked" in markdown
    assert "\\dag{}" in render(data, "latex") and "not ranked" in render(data, "latex")
    line = next(row for row in csv.DictReader(io.StringIO(render(data, "csv"))) if row["model"] == "c")
    assert (line["conforming"], line["rank_low"]) == ("False", "")
    assert json.loads(render(data, "json"))["rows"][2]["mean_rank"] is None
    ranked = board(records, rank_all=True)
    assert [row["model"] for row in ranked["rows"]] == ["c", "a", "b"] and ranked["rows"][0]["coverage"] == "1/1"
    assert "95.0 [90.0, 100.0] #1 *" in render(ranked) and "(--rank-all)" in render(ranked)


def test_the_commands_say_what_they_mean(tmp_path):
    runner = CliRunner()
    assert "`leaderboard RESULTS...` means `leaderboard show RESULTS...`" in runner.invoke(cli, ["leaderboard", "--help"]).output
    show = " ".join(runner.invoke(cli, ["leaderboard", "show", "--help"]).output.split())
    assert "--rank-all" in show and "--details" in show
    check = " ".join(runner.invoke(cli, ["check", "--help"]).output.split())
    assert "percentage points for shares" in check and "[default: 0.1; x>=0]" in check
    write_record(record("a", 0.8), tmp_path / "results")
    write_record(record("c", 0.9, conforming=False), tmp_path / "results")
    table = runner.invoke(cli, ["leaderboard", str(tmp_path / "results"), "--rank-all"]).output
    assert "90.0 [85.0, 95.0] #1-2 *" in table
    baseline = str(tmp_path / "b.json")
    assert runner.invoke(cli, ["check", str(tmp_path / "results"), "-b", baseline, "--update"]).exit_code == 0
    assert runner.invoke(cli, ["check", str(tmp_path / "results"), "-b", baseline, "--tolerance", "-1"]).exit_code == 2
    loose = runner.invoke(cli, ["check", str(tmp_path / "results"), "-b", baseline, "--tolerance", "6"])
    assert loose.exit_code == 0 and "| a | toy v1 / knn top1 | 80.00 | 80.00 | +0.00 | ok |" in loose.output
    assert "warning: a tolerance of 6 points" in loose.output


def test_per_class_counts_come_from_the_predictions():
    assert confusion({"ids": ["a", "b", "c"], "label": ["y", "x", "y"], "predicted": ["x", "x", "y"]}) == {
        "classes": ["x", "y"], "confusion": [[1, 0], [1, 1]]}
    # one prediction per seed (attentive): every seed counts
    assert confusion({"ids": ["a"], "label": ["x"], "predicted": [["x", "z"]]}) == {
        "classes": ["x", "z"], "confusion": [[1, 1], [0, 0]]}
    assert confusion({"ids": ["a"], "rank": [1], "value": [1]}) is None  # retrieval: no classes
    many = [f"c{i}" for i in range(MAX_CLASSES + 1)]
    assert confusion({"ids": many, "label": many, "predicted": many}) is None


@pytest.mark.parametrize("per_class, problem", [
    ([1], "not a mapping"),
    ({"classes": ["x"], "confusion": [[1]], "extra": 1}, "not a mapping"),
    ({"classes": [], "confusion": []}, "unique names"),
    ({"classes": ["x", "x"], "confusion": [[1, 0], [0, 1]]}, "unique names"),
    ({"classes": [f"c{i}" for i in range(MAX_CLASSES + 1)], "confusion": []}, "unique names"),
    ({"classes": ["x\u202e"], "confusion": [[1]]}, "U\\+202E"),
    ({"classes": [7], "confusion": [[1]]}, "not a string"),
    ({"classes": ["x", "y"], "confusion": [[1, 0]]}, "square"),
    ({"classes": ["x", "y"], "confusion": [[1, 0], [0]]}, "square"),
    ({"classes": ["x"], "confusion": [[-1]]}, "integer counts"),
    ({"classes": ["x"], "confusion": [[True]]}, "integer counts"),
    ({"classes": ["x"], "confusion": [[1.0]]}, "integer counts"),
    ({"classes": ["x"], "confusion": [[10 ** 30]]}, "integer counts"),
])
def test_hostile_per_class_counts_are_refused(per_class, problem):
    assert check_record(record(), "r")["per_class"] == {"classes": ["x", "y"], "confusion": [[1, 0], [1, 1]]}
    with pytest.raises(HarnessError, match=f"r: field 'per_class' is malformed .*{problem}"):
        check_record(record(per_class=per_class), "r")
