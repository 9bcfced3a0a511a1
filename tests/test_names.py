"""Names and records from strangers: a crafted model name can neither break, forge nor escape the leaderboard,
and a record that lies is refused in one line."""

import csv
import hashlib
import io
import json
import math
import shutil

import h5py
import numpy as np
import pytest

from evalharness.errors import HarnessError
from evalharness.report import board, render
from evalharness.report.regress import compare
from evalharness.results import check_record, load_record, record_path
from evalharness.submit import init, submit
from evalharness.untrusted import shown

from helpers import build_file, clustered, probe

HOSTILE = {
    "mathtext": "evil$\\foo$",
    "nested superscripts": "$" + "a^{" * 40 + "}" * 40 + "$",
    "row forgery": "x | 100.0 [100.0, 100.0] #1 | 1/1 |",
    "formula": '=HYPERLINK("http://evil.example","click")',
    "script": "<script>alert(1)</script>",
    "dot dot": "..",
    "dot": ".",
    "slug twin": "builtin_stats",
    "slug original": "builtin:stats",
}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """One real record, and a copy of it under every hostile name."""
    tmp = tmp_path_factory.mktemp("names")
    rng = np.random.default_rng(0)
    x, y = clustered(rng, 40, 6, 2, rng.normal(size=(2, 6)))
    path, protocol, root = build_file(tmp, x[:30], y[:30], x[30:], y[30:], probes={"knn": {"k": [5], "headline_k": 5}})
    record = probe("knn", path, protocol, root)
    return tmp, path, root, record, [{**record, "model": name} for name in HOSTILE.values()]


def snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_paths_from_names_are_unique_and_inside(scored, tmp_path):
    _, _, _, _, records = scored
    paths = [record_path(tmp_path / "results", r) for r in records]
    assert len(set(paths)) == len(paths)  # builtin_stats and builtin:stats apart
    for path in paths:
        assert path.resolve().is_relative_to((tmp_path / "results").resolve())
        assert path.parent.parent.name not in (".", "..", "")


def test_every_table_shows_hostile_names_as_plain_text(scored):
    *_, records = scored
    data = board(records)
    md = render(data, "markdown")
    body = [line for line in md.splitlines() if line.startswith("|")]
    assert len(body) == 2 + len(HOSTILE)  # header, rule, one row per model: nothing forged
    assert "<script>" not in md and "\\<script\\>" in md
    assert all(line.count("|") - line.count("\\|") == md.splitlines()[0].count("|") for line in body)
    rows = list(csv.DictReader(io.StringIO(render(data, "csv"))))
    assert not any(row["model"].startswith(("=", "+", "-", "@")) for row in rows)
    assert "'=HYPERLINK" in {row["model"][:11] for row in rows}
    page = render(data, "html")  # the plots render names with matplotlib: mathtext would crash
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "\\&" not in render(data, "latex").replace("\\&", "") and "\\$" in render(data, "latex")
    assert json.loads(render(data, "json"))["rows"]


def test_csv_baseline_round_trips_neutralised_names(scored, tmp_path):
    *_, records = scored
    data = board(records)
    baseline = tmp_path / "baseline.csv"
    baseline.write_text(render(data, "csv"))
    from evalharness.report.regress import read_baseline

    assert all(r.status == "ok" for r in compare(data, read_baseline(baseline), 0.001))


def test_a_non_finite_baseline_or_score_fails_the_gate(scored, tmp_path):
    *_, record, _ = scored
    data = board([record])
    for bad in ("nan", "inf", "-inf"):
        text = render(data, "csv").splitlines()
        header = text[0].split(",")
        cells = next(csv.reader([text[1]]))
        cells[header.index("value")] = bad
        baseline = tmp_path / f"{bad}.csv"
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([header, cells])
        baseline.write_text(out.getvalue())
        from evalharness.report.regress import read_baseline

        (row,) = compare(data, read_baseline(baseline), 0.001)
        assert row.status == "not finite" and row.failed


def lying(record):
    """Records that lie, each with the problem its one-line refusal names."""
    metric = record["metrics"][record["headline"]]
    yield "NaN", {**record, "metrics": {record["headline"]: {**metric, "value": math.nan}}}, "NaN is not JSON"
    yield "Infinity", {**record, "metrics": {record["headline"]: {**metric, "ci_high": math.inf}}}, "Infinity is not JSON"
    yield "no n", {**record, "metrics": {record["headline"]: {k: v for k, v in metric.items() if k != "n"}}}, "'n'"
    yield "string", {**record, "metrics": {record["headline"]: "100"}}, "not a mapping"
    yield "bool", {**record, "metrics": {record["headline"]: {**metric, "value": True}}}, "finite"
    yield "750%", {**record, "metrics": {record["headline"]: {**metric, "value": 7.5, "ci_low": 9, "ci_high": -3}}}, \
        "upside down"
    yield "over 100%", {**record, "metrics": {record["headline"]: {**metric, "value": 7.5, "ci_high": 9}}}, "[0, 1]"
    yield "surrogate", {**record, "model": "a\ud800b"}, "U+D800"
    yield "newline", {**record, "model_revision": "v1\n| forged |"}, "U+000A"
    yield "bidi", {**record, "model": "abc\u202etxt.exe"}, "U+202E"
    yield "long", {**record, "model": "m" * 20000}, "20000 characters"
    yield "predictions", {**record, "predictions": {"ids": ["a", "b"], "value": [1]}}, "'value' is not a list as long"
    yield "metric name", {**record, "metrics": {**record["metrics"], "x\x1b[2J": metric}}, "U+001B"


def test_records_that_lie_are_refused_in_one_line(scored, tmp_path):
    *_, record, _ = scored
    for name, bad, needle in lying(record):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(bad, allow_nan=True))
        with pytest.raises(HarnessError) as caught:
            load_record(path)
        assert needle in str(caught.value) and "\n" not in str(caught.value), (name, str(caught.value))
    with pytest.raises(HarnessError, match="'value' is not a finite number"):  # a record of ours, before writing
        check_record({**record, "metrics": {record["headline"]: {**record["metrics"][record["headline"]],
                                                                 "value": math.nan}}}, "new record")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(HarnessError, match="unreadable result record"):
        load_record(deep)


def test_the_terminal_sees_untrusted_strings_as_one_short_line():
    assert shown("builtin:stats") == "builtin:stats"
    forged = "m\nscored evil knn top1: 100.00\x1b[2J"
    assert "\n" not in shown(forged) and "\x1b" not in shown(forged) and shown(forged).startswith("'")
    assert len(shown("x" * 3_000_000)) < 200


def rename(src, dst, model):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        f.attrs["model"] = model
    return dst


def test_a_crafted_name_is_refused_or_shown_and_never_blocks_an_honest_submission(scored, tmp_path):
    tmp, path, root, _, _ = scored
    folder = tmp_path / "lb"
    init(folder, [str(tmp / "hand.yaml")], root)
    before = snapshot(folder)
    with pytest.raises(HarnessError, match="model name is 20000 characters long"):
        submit(rename(path, tmp_path / "bad.h5", "m" * 20_000), folder)
    assert snapshot(folder) == before
    submit(rename(path, tmp_path / "math.h5", HOSTILE["mathtext"]), folder)
    submit(rename(path, tmp_path / "twin.h5", "builtin_stats"), folder)
    first = submit(rename(path, tmp_path / "stats.h5", "builtin:stats"), folder)
    again = submit(rename(path, tmp_path / "stats2.h5", "builtin:stats"), folder)
    assert "replaced" not in first[0]["embedding_file"]
    assert again[0]["embedding_file"]["replaced"]["created_utc"] == first[0]["created_utc"]
    table = (folder / "leaderboard.md").read_text()
    assert "builtin:stats" in table and "builtin\\_stats" in table and "evil\\$\\\\foo\\$" in table
    assert len(list((folder / "submissions").glob("*.h5"))) == 3
    assert len(list((folder / "results").rglob("knn.json"))) == 3
