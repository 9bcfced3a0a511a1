"""Hostile embedding files and leaderboard folders (issue 12, items 4-8): every attack is crafted here, small, and
must end in one line and exit 1 (or a bounded acceptance), change nothing in the leaderboard folder and leak nothing.

Amplification (a small file standing for a large one), scoring memory, label-propagation geometry, files that crash
or hang HDF5 (a fuzz run through `validate` and `probe`), kills and planted links."""

import hashlib
import json
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from test_store import dense, make_valid, mutated, replace

from evalharness import submit as submit_module
from evalharness.cards import load_protocol
from evalharness.errors import HarnessError, StoreError
from evalharness.store import EmbeddingFile, Keep, Limits, file_problems, write_canonical
from evalharness.store.sandbox import Confinement, check_file, run_confined, scratch

from helpers import build_file, clustered


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "evalharness", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture()
def valid(tmp_path):
    return make_valid(tmp_path / "valid")


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    """A small honest file for a manifest card (kNN), its card and data root."""
    tmp = tmp_path_factory.mktemp("honest")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    train, train_y = clustered(rng, 24, 8, 3, centres)
    test, test_y = clustered(rng, 12, 8, 3, centres)
    path, _, root = build_file(tmp, train, train_y, test, test_y, probes={"knn": {"k": [5], "headline_k": 5}})
    return path, tmp / "hand.yaml", root


@pytest.fixture()
def board(tmp_path, honest):
    _, card, root = honest
    return submit_module.init(tmp_path / "lb", [str(card)], root)


def refused(path, needle, limits=Limits()):
    problems = file_problems(path, limits)
    assert problems and all("\n" not in p and p.startswith(str(path)) for p in problems), problems
    assert any(needle in p for p in problems), problems
    return problems


# ------------------------------------------------------------------ 4. amplification


def _unwritten_chunks(f, t):
    replace(f, "clip", shape=(6, 2, 4), dtype="f4", chunks=(1, 2, 4))


def _unwritten_contiguous(f, t):
    replace(f, "frame_indices", shape=(6, 1000, 8), dtype="i4")


def _gzip_bomb(f, t):
    replace(f, "clip", data=np.zeros((6, 64, 16384), np.float32), chunks=(1, 64, 16384), compression="gzip")


def _tiny_chunks(f, t):
    replace(f, "frame_indices", data=np.zeros((6, 1, 4096), np.int32), chunks=(1, 1, 1))


def _huge_chunk(f, t):
    replace(f, "clip", shape=(6, 1024, 65536), dtype="f4", chunks=(6, 1024, 65536))


def _long_id(f, t):
    replace(f, "ids", data=np.array(["v" * 5000] + [f"w{i}" for i in range(5)], dtype=object),
            dtype=h5py.string_dtype())


AMPLIFIED = {
    "chunks never written": (_unwritten_chunks, "0 of its 6 chunks written"),
    "contiguous data never written": (_unwritten_contiguous, "was never written"),
    "gzip bomb": (_gzip_bomb, "more than 8 times"),
    "tiny chunks": (_tiny_chunks, "more than 16384"),
    "one huge chunk": (_huge_chunk, "chunks of 1610612736 bytes"),
    "an id of 5000 characters": (_long_id, "string of 5000 characters"),
}


@pytest.mark.parametrize("case", sorted(AMPLIFIED))
def test_a_small_file_cannot_stand_for_a_large_one(valid, tmp_path, case):
    mutate, needle = AMPLIFIED[case]
    path = mutated(valid, tmp_path, mutate)
    assert path.stat().st_size < 2 << 20
    refused(path, needle)


def test_sizes_count_uncompressed_against_the_limits(valid):
    refused(valid, "more than the 100 accepted", Limits(data_bytes=100))
    refused(valid, "scoring it would hold", Limits(memory=100))


def test_the_canonical_copy_keeps_only_the_manifest_rows_and_the_card_groups(valid, tmp_path):
    path = mutated(valid, tmp_path, lambda f, t: dense(f, "v001", np.ones((3, 2, 2, 16), np.float16)))
    protocol = load_protocol("synthetic-motion")
    copy = tmp_path / "copy.h5"
    write_canonical(path, copy, Keep.for_card(protocol, ["v001", "v004", "elsewhere"]))
    with EmbeddingFile(copy) as f:
        assert f.ids == ["v001", "v004"] and list(f.dense_maps()) == []
        with EmbeddingFile(path) as src:
            assert np.array_equal(f.clip(), src.clip(np.array([1, 4])))
    write_canonical(path, copy)
    with EmbeddingFile(copy) as f:
        assert len(f.ids) == 6 and list(f.dense_maps()) == ["v001"]


def test_the_child_cannot_write_past_its_file_size_limit(tmp_path):
    target = tmp_path / "big.bin"
    with pytest.raises(StoreError, match="File too large"):
        run_confined(["-c", f"open({str(target)!r}, 'wb').write(bytes(2 << 20))"], target, Confinement(file_bytes=1 << 20))
    assert target.stat().st_size <= 1 << 20


# ------------------------------------------------------------------ 6. label-propagation geometry


def _stride(value):
    def mutate(f, t):
        dense(f, "v001", np.ones((3, 2, 2, 4), np.float16)).attrs["stride"] = value
    return mutate


GEOMETRY = {
    "frame_size 10^6 x 10^6": (lambda f, t: dense(f, "v001", np.ones((3, 2, 2, 4), np.float16), 8, (10**6, 10**6)),
                               "beyond bounds"),
    "stride 2^40": (_stride(1 << 40), "beyond bounds"),
    "float stride": (_stride(8.5), "integer 'stride'"),
    "stride that does not match the grid": (_stride(1), "does not cover frames of 16 x 16"),
    "zero grid": (lambda f, t: dense(f, "v001", np.ones((3, 0, 2, 4), np.float16)), "empty dimension"),
    "D = 0": (lambda f, t: dense(f, "v001", np.ones((3, 2, 2, 0), np.float16)), "empty dimension"),
    "NaN dense map": (lambda f, t: dense(f, "v001", np.full((3, 2, 2, 4), np.nan, np.float16)), "non-finite"),
    "Inf dense map": (lambda f, t: dense(f, "v001", np.full((3, 2, 2, 4), np.inf, np.float16)), "non-finite"),
    "V = 0": (lambda f, t: replace(f, "clip", data=np.zeros((6, 0, 4), np.float32)), "empty dimension"),
}


@pytest.mark.parametrize("case", sorted(GEOMETRY))
def test_impossible_geometry_and_values_are_refused(valid, tmp_path, case):
    mutate, needle = GEOMETRY[case]
    refused(mutated(valid, tmp_path, mutate), needle)


def test_real_grids_pass_the_geometry_check(valid, tmp_path):
    """Rounded down (ViT 16 on 854), rounded up (padded convolutions), Inception's 8 cells of 32 on 299 pixels."""
    def grids(f, t):
        for vid, h, w, stride, size in (("v000", 30, 53, 16, (480, 854)), ("v001", 15, 27, 32, (480, 854)),
                                        ("v002", 8, 8, 32, (299, 299))):
            dense(f, vid, np.ones((2, h, w, 4), np.float16), stride, size)
    assert file_problems(mutated(valid, tmp_path, grids)) == []


# ------------------------------------------------------------------ 7. crashes, hangs and tracebacks


def segfaulting(valid, tmp_path):
    """One changed byte: the type of a string attribute made an unknown variable-length kind (HDF5 2.0 crashes)."""
    data = bytearray(valid.read_bytes())
    at = data.find(b"model_revision\x00\x00\x19\x01")
    assert at > 0
    data[at + len(b"model_revision\x00\x00\x19")] = 0x6B
    path = tmp_path / "segv.h5"
    path.write_bytes(data)
    return path


def test_a_file_that_crashes_hdf5_is_one_line_and_exit_1(valid, tmp_path):
    path = segfaulting(valid, tmp_path)
    crashed = subprocess.run([sys.executable, "-c", "import sys, h5py; dict(h5py.File(sys.argv[1], 'r').attrs)",
                              str(path)], capture_output=True)
    result = cli("validate", path)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: ")
    if crashed.returncode == -signal.SIGSEGV:  # HDF5 2.0; a fixed HDF5 refuses the type in its own words
        assert lines[0].endswith("reading it crashed HDF5 in the sandbox (SIGSEGV): the file is corrupt or hostile")


def test_a_child_that_hangs_or_runs_out_of_memory_is_one_line(tmp_path):
    with pytest.raises(StoreError, match=r"took longer than 1 s|more than 1 s of CPU"):
        run_confined(["-c", "while True: pass"], tmp_path, Confinement(seconds=1))
    with pytest.raises(StoreError, match="MemoryError"):
        run_confined(["-c", "bytearray(1 << 32)"], tmp_path, Confinement(memory=1 << 30))


def test_strings_that_are_not_utf8_are_one_line(valid, tmp_path):
    path = mutated(valid, tmp_path, lambda f, t: replace(
        f, "ids", data=np.array([b"\xff\xfe\x1b[31m", b"b", b"c", b"d", b"e", b"f"], dtype=object),
        dtype=h5py.string_dtype()))
    assert check_file(path) == [f"{path}: /ids holds a string that is not UTF-8"]


def _mutants(source, folder, count, seed):
    """`count` copies of a file with one to three random bytes of its first 8 KB (headers, heaps) changed."""
    rng = np.random.default_rng(seed)
    data = source.read_bytes()
    out = []
    for i in range(count):
        copy = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            copy[int(rng.integers(0, min(len(copy), 8192)))] = int(rng.integers(0, 256))
        out.append(folder / f"mutant{i:02d}.h5")
        out[-1].write_bytes(bytes(copy))
    return out


DRIVER = """
import contextlib, io, json, sys
from evalharness.cli import main
count = int(sys.argv[1])
command, files = sys.argv[2:2 + count], sys.argv[2 + count:]
report = []
for path in files:
    stdout, stderr = io.StringIO(), io.StringIO()
    sys.argv = ["evalharness", command[0], *command[1:2], path, *command[2:]]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
    report.append([path, code, stdout.getvalue(), stderr.getvalue()])
print(json.dumps(report))
"""


def _driven(command, files):
    """A process that runs `evalharness COMMAND FILE ...` (the command line's own entry point) for each file in turn,
    reporting each exit code and output; a crash of that process is a crash of the command."""
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(len(command)), *command, *map(str, files)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _report(process):
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    return json.loads(stdout)


def test_fuzzed_files_through_validate_and_probe_never_crash_or_trace(honest, valid, tmp_path):
    """30 mutants of a small file through `evalharness validate`, 8 of them, a file that crashes HDF5 and one of
    impossible geometry through `evalharness probe knn`: exit 0 or 1, no traceback, problems on one line each."""
    path, card, root = honest
    mutants = _mutants(path, tmp_path, 30, seed=3)
    geometry = mutated(valid, tmp_path, GEOMETRY["stride 2^40"][0])
    crafted = [segfaulting(valid, tmp_path), geometry]
    probing = _driven(["probe", "knn", "-p", str(card), "-d", str(root), "-o", str(tmp_path / "results")],
                      mutants[:8] + crafted)
    validated = _report(_driven(["validate"], mutants))
    for mutant, code, stdout, stderr in validated:
        assert code in (0, 1) and "Traceback" not in stdout + stderr and not stderr, (mutant, code, stdout, stderr)
        lines = stdout.strip().splitlines()
        assert lines and all(line.startswith(mutant) for line in lines), (mutant, stdout)
    assert {code for _, code, _, _ in validated} == {0, 1}
    probed = _report(probing)
    for mutant, code, stdout, stderr in probed:
        assert code in (0, 1) and "Traceback" not in stdout + stderr, (mutant, stdout, stderr)
        assert code == 0 or (len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: ")), (mutant, stderr)
    assert [code for _, code, _, _ in probed[-2:]] == [1, 1]
    assert probed[-1][3].strip() == (f"error: {geometry}: /dense/v001 has stride 1099511627776 or frame_size [16, 16] "
                                     "beyond bounds (stride 1-1024, sides 1-16384)")


# ------------------------------------------------------------------ 5 and 8. the submitting process, kills, links


CALLER = """
import sys
from pathlib import Path
from evalharness.store.sandbox import Confinement, run_confined
child = f"import os, time; open({sys.argv[1]!r}, 'w').write(str(os.getpid())); time.sleep(60)"
run_confined(["-c", child], Path("x"), Confinement(seconds=60, file_bytes=1 << 20))
"""


def test_a_killed_caller_takes_its_child_with_it(tmp_path):
    marker = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", CALLER, str(marker)])
    deadline = time.time() + 30
    while not (marker.exists() and marker.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    child = int(marker.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while _alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_scratch_left_by_a_killed_submission_is_swept_but_a_live_one_is_kept(tmp_path):
    root = tmp_path / ".scratch"
    (root / "killed").mkdir(parents=True)
    (root / "killed" / "canonical.h5").write_bytes(b"x" * 1000)
    with scratch(root) as mine, scratch(root) as other:
        assert mine.is_dir() and other.is_dir()
        assert sorted(p.name for p in root.iterdir()) == sorted([mine.name, other.name])
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("plant, to_folder", [(".leaderboard.md.tmp", False), ("submissions", True),
                                              ("results/planted", True), (".lock", False), (".scratch", True)])
def test_planted_links_are_refused_and_never_followed(board, honest, tmp_path, plant, to_folder):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep me")
    link = board / plant
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside if to_folder else outside / "victim")
    before = snapshot(board)
    with pytest.raises(HarnessError, match="is a symbolic link"):
        submit_module.submit(honest[0], board)
    assert snapshot(board) == before and (outside / "victim").read_text() == "keep me"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


def test_an_honest_submission_after_hostile_ones_and_leftovers(board, honest, valid, tmp_path, monkeypatch):
    """A crashing file is one line and changes nothing; the leftovers of a killed submission are swept; the parent
    never opens an HDF5 file (the child validates, copies and scores)."""
    before = snapshot(board)
    with pytest.raises(HarnessError, match="crashed HDF5"):
        submit_module.submit(segfaulting(valid, tmp_path), board)
    assert snapshot(board) == before
    (board / ".scratch" / "killed").mkdir(parents=True)
    (board / ".scratch" / "killed" / "canonical.h5").write_bytes(b"x" * 1000)
    monkeypatch.setattr(h5py, "File", lambda *a, **k: pytest.fail("the submitting process opened an HDF5 file"))
    records = submit_module.submit(honest[0], board)
    assert [r["probe"] for r in records] == ["knn"] and list((board / ".scratch").iterdir()) == []
    assert len(list((board / "submissions").iterdir())) == 1
