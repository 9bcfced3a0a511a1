import hashlib
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from evalharness import submit as submit_module
from evalharness.cards import load_protocol
from evalharness.errors import HarnessError
from evalharness.extract import ExtractConfig, extract
from evalharness.submit import init

from conftest import small_labelprop_card
from helpers import build_file, clustered, probe

PROGRESS = re.compile(r"^[\w ]+: \d+/\d+ \w+, [\d.]+ \w+/s, (ETA [\d:?]+|done)$")  # a progress line in a log


def cli(*args):
    return subprocess.run([sys.executable, "-m", "evalharness", *map(str, args)], capture_output=True, text=True, timeout=600)


def snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def files(tmp_path_factory, synth30, card30):
    tmp = tmp_path_factory.mktemp("submit")
    out = {}
    for model in ("builtin:pixels", "builtin:stats"):
        out[model] = tmp / f"{model.split(':')[1]}.h5"
        extract(model, load_protocol(card30), synth30, out[model], ExtractConfig(batch_size=8, workers=0, quiet=True))
    return out


@pytest.fixture()
def board_dir(tmp_path, synth30, card30):
    folder = tmp_path / "lb"
    assert cli("leaderboard", "init", folder, "-p", card30, "-d", synth30).returncode == 0
    return folder


def test_honest_submission_scores_as_the_probe_does(board_dir, files, synth30, card30):
    result = cli("submit", files["builtin:stats"], "-l", board_dir)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^copying: (\d+)/\1 clips, .* done$", result.stderr, re.M), result.stderr  # the child's copy
    assert all(PROGRESS.match(line) for line in result.stderr.splitlines()), result.stderr
    direct = probe("knn", files["builtin:stats"], load_protocol(card30), synth30)
    value = direct["metrics"]["top1@k10"]["value"]
    assert f"top1@k10: {100 * value:.2f}" in result.stdout
    table = (board_dir / "leaderboard.md").read_text()
    assert "builtin:stats" in table and f"{100 * value:.1f}" in table
    assert (board_dir / "submissions").is_dir() and (board_dir / "table.json").is_file()


def craft(src, dst, mutate):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        mutate(f)
    return dst


def _external(f, secret):
    shape, dtype = f["clip"].shape, f["clip"].dtype
    del f["clip"]
    f.create_dataset("clip", shape=shape, dtype=dtype, external=[(str(secret), 0, int(np.prod(shape)) * dtype.itemsize)])


def test_hostile_files_are_rejected_and_change_nothing(board_dir, files, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"SECRETSECRET" * 100_000)
    src = files["builtin:pixels"]
    cases = {
        "external storage": craft(src, tmp_path / "ext.h5", lambda f: _external(f, secret)),
        "nan": craft(src, tmp_path / "nan.h5", lambda f: f["clip"].__setitem__((0, 0, 0), np.nan)),
        "duplicate ids": craft(src, tmp_path / "dup.h5", lambda f: (f.__delitem__("ids"), f.create_dataset(
            "ids", data=np.array(["synth00000"] * 30, dtype=object), dtype=h5py.string_dtype()))),
        "wrong extraction hash": craft(src, tmp_path / "hash.h5", lambda f: f.attrs.__setitem__("extraction_hash", "0" * 64)),
        "wrong manifest hash": craft(src, tmp_path / "mhash.h5", lambda f: f.attrs.__setitem__("manifest_hash", "0" * 64)),
        "lying shape": craft(src, tmp_path / "shape.h5", lambda f: (f.__delitem__("frame_indices"), f.create_dataset(
            "frame_indices", shape=(10**7, 1, 16), dtype="i4", chunks=(1024, 1, 16)))),
    }
    truncated = tmp_path / "trunc.h5"
    truncated.write_bytes(src.read_bytes()[:5000])
    cases["truncated"] = truncated
    text = tmp_path / "text.h5"
    text.write_text("not hdf5\n")
    cases["not hdf5"] = text
    before = snapshot(board_dir)
    for name, path in cases.items():
        result = cli("submit", path, "-l", board_dir)
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip() and not PROGRESS.match(line)]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, (name, result.stderr)
        assert b"SECRET" not in (result.stdout + result.stderr).encode()
        assert snapshot(board_dir) == before, name


def test_missing_clips_and_size_limit(board_dir, files, tmp_path, synth30, card30):
    small = tmp_path / "small"
    assert cli("leaderboard", "init", small, "-p", card30, "-d", synth30, "--max-bytes", 1000).returncode == 0
    too_big = cli("submit", files["builtin:stats"], "-l", small)
    assert too_big.returncode == 1 and "more than this leaderboard accepts" in too_big.stderr
    dry = cli("submit", files["builtin:stats"], "-l", board_dir, "--dry-run")
    assert dry.returncode == 0 and "would score" in dry.stdout and not (board_dir / "leaderboard.md").exists()


def test_two_submissions_at_once_both_land(board_dir, files):
    procs = [subprocess.Popen([sys.executable, "-m", "evalharness", "submit", str(files[m]), "-l", str(board_dir)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for m in files]
    assert all(p.wait(timeout=600) == 0 for p in procs)
    table = (board_dir / "leaderboard.md").read_text()
    assert "builtin:pixels" in table and "builtin:stats" in table
    assert len(list((board_dir / "results").rglob("knn.json"))) == 2


@pytest.mark.slow
def test_label_propagation_submission_keeps_its_dense_maps(tmp_path, synth30):
    card = small_labelprop_card(tmp_path)
    out = tmp_path / "lp.h5"
    extract("builtin:stats", load_protocol(card), synth30, out, ExtractConfig(batch_size=3, workers=0, quiet=True))
    folder = tmp_path / "lb"
    assert cli("leaderboard", "init", folder, "-p", card, "-d", synth30).returncode == 0
    result = cli("submit", out, "-l", folder)
    assert result.returncode == 0, result.stderr
    direct = probe("labelprop", out, load_protocol(card), synth30)["metrics"]["J&F"]["value"]
    assert f"J&F: {100 * direct:.2f}" in result.stdout


def test_a_three_probe_submission_reads_the_values_twice(tmp_path, monkeypatch):
    """Once in the sandbox (checked while copied), once to score: not once per probe or per check."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 8))
    train, train_y = clustered(rng, 40, 8, 3, centres, views=2)
    test, test_y = clustered(rng, 20, 8, 3, centres, views=2)
    probes = {"knn": {"k": [5], "headline_k": 5}, "linear": {"c_grid": {"log10_min": 0, "log10_max": 0, "steps": 1}},
              "retrieval": {}}
    path, _protocol, root = build_file(tmp_path, train, train_y, test, test_y, probes=probes)
    folder = tmp_path / "lb"
    init(folder, [str(tmp_path / "hand.yaml")], root)
    read = []
    get = h5py.Dataset.__getitem__

    def counting(self, key):
        out = get(self, key)
        if self.name == "/clip":
            read.append(out.nbytes)
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counting)
    monkeypatch.setattr(submit_module, "check_in_child",
                        lambda source, board, copy_to, _: submit_module._child(source, board, copy_to))
    records = submit_module.submit(path, folder, dry_run=True)
    assert [r["probe"] for r in records] == ["knn", "linear", "retrieval"]
    assert sum(read) == 2 * train.nbytes + 2 * test.nbytes


def test_hostile_token_files_are_refused_before_any_value_is_read(tmp_path, synth30):
    from conftest import write_card

    card = write_card(tmp_path, "tok30", features={"tokens": {"layer": -1, "pool": [2, 2, 2]}},
                      probes={"attentive": {"num_heads": 4, "epochs": 1, "batch_size": 8}})
    src = tmp_path / "tok.h5"
    extract("builtin:stats", load_protocol(card), synth30, src, ExtractConfig(batch_size=8, workers=0, quiet=True))
    board = init(tmp_path / "lb", [str(card)], synth30)

    def retoken(f, shape, chunks=None, dtype="f2"):
        attrs = dict(f["tokens"].attrs)
        del f["tokens"]
        f.create_dataset("tokens", shape=shape, dtype=dtype, chunks=chunks)
        for key, value in attrs.items():
            f["tokens"].attrs[key] = value

    n, v, length, dim = h5py.File(src, "r")["tokens"].shape
    cases = {
        "huge declared tokens": (lambda f: retoken(f, (n, v, 10**9, dim), (1, v, 1024, dim)), "tokens"),
        "grid that lies": (lambda f: f["tokens"].attrs.__setitem__("grid", np.array([1000, 1000, 1000])), "grid"),
        "width that lies": (lambda f: f["tokens"].attrs.__setitem__("dim", dim + 1), "tokens"),
        "not one clip per chunk": (lambda f: retoken(f, (n, v, length, dim), (2, v, length, dim)), "chunk"),
        "nan token": (lambda f: f["tokens"].__setitem__((3, 0, 5, 1), np.nan), "finite"),
        "clips never written (they would read as zeros)": (
            lambda f: retoken(f, (n, v, length, dim), (1, v, length, dim)), "written"),
        "tiny chunks": (lambda f: retoken(f, (n, v, length, dim), (1, 1, 1, 1)), "chunk"),
        "fractional grid": (lambda f: f["tokens"].attrs.__setitem__("grid", np.array([8.0, 4.0, 4.0])), "integer"),
        "another layer than the card's": (lambda f: f["tokens"].attrs.__setitem__("layer", 3), "layer 3"),
    }
    before = snapshot(board)
    for name, (mutate, needle) in cases.items():  # the command's one-line errors are tested above; here the library's
        path = craft(src, tmp_path / f"{name.replace(' ', '-')}.h5", mutate)
        with pytest.raises(HarnessError) as refused:
            submit_module.submit(path, board)
        message = str(refused.value)
        assert "\n" not in message and needle in message, (name, message)
        assert snapshot(board) == before, name
