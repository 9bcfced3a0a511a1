"""Commands that involve no model start without torch, faiss, scikit-learn or matplotlib (`info` and `validate` also
without h5py and numpy: their confined child reads the file), each in a fresh process; and what `models`, `info` and
`extract --help` say."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from evalharness.backbones import FACTORIES, build_backbone, catalog
from evalharness.cli import cli
from evalharness.errors import HarnessError

from helpers import build_file

HEAVY = ("torch", "faiss", "sklearn", "matplotlib")
README = Path(__file__).resolve().parents[1] / "README.md"

# runs `evalharness ARGS...` (each argument list a JSON array on argv) in this process, then names what it loaded
DRIVER = """
import json, sys
from evalharness.cli import main
for args in map(json.loads, sys.argv[1:]):
    sys.argv = ["evalharness", *args]
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, (args, exc.code)
print(json.dumps([m for m in HEAVY + ("h5py", "numpy") if m in sys.modules]))
""".replace("HEAVY", repr(HEAVY))


def loaded(*commands: list[str]) -> list[str]:
    """The heavy modules (and h5py, numpy) a fresh process holds after running these commands."""
    result = subprocess.run([sys.executable, "-c", DRIVER, *map(json.dumps, commands)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small embedding file with token features."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 8)).astype(np.float32)
    tokens = rng.normal(size=(12, 1, 2, 2, 2, 8)).astype(np.float32)
    folder = tmp_path_factory.mktemp("startup")
    path, _, _ = build_file(folder, x[:8], [0, 1] * 4, x[8:], [0, 1] * 2, tokens=(tokens[:8], tokens[8:]))
    return path


def _help_of_every_command() -> list[list[str]]:
    out = [["--help"]]
    for name, command in cli.commands.items():
        out.append([name, "--help"])
        out += [[name, sub, "--help"] for sub in getattr(command, "commands", {})]
    return out


def test_help_of_every_command_loads_nothing_heavy():
    assert set(loaded(*_help_of_every_command())).isdisjoint(HEAVY)


@pytest.mark.parametrize("args", [["protocols"], ["protocols", "ucf101-s1-16x4"], ["models"]])
def test_listing_loads_nothing_heavy(args):
    assert set(loaded(args)).isdisjoint(HEAVY)


@pytest.mark.parametrize("command", ["info", "validate"])
def test_info_and_validate_of_a_small_file_load_nothing_heavy(small, command):
    assert loaded([command, str(small)]) == []  # not even h5py or numpy: the confined child reads the file


def test_protocols_is_a_table_with_a_header():
    lines = CliRunner().invoke(cli, ["protocols"]).output.splitlines()
    assert lines[0].split() == ["name", "version", "task", "dataset", "frames", "views", "crop", "probes", "extraction",
                                "hash"]
    row = next(line for line in lines if line.startswith("ucf101-s1-16x4 "))
    assert row.split()[1:] == ["1", "classification", "ucf101", "16", "dense", "stride", "4", "5x3", "224",
                               "knn,linear,retrieval", row.split()[-1]] and len(row.split()[-1]) == 12
    for column in ("task", "frames", "probes", "extraction hash"):  # aligned: each cell starts under its header
        assert row.find({"task": "classification", "frames": "16 dense", "probes": "knn,", "extraction hash":
                         row.split()[-1]}[column]) == lines[0].find(column)


def test_models_lists_every_family_and_builtin_with_its_extra(monkeypatch):
    out = CliRunner().invoke(cli, ["models"]).output
    for prefix in FACTORIES:
        assert f"\n{prefix}: " in f"\n{out}"
    for name in catalog.BUILTINS:
        assert f"builtin:{name}" in out
    monkeypatch.setattr(catalog, "installed", lambda module: False)
    missing = "\n".join(catalog.listing(FACTORIES))
    for extra in ("hf", "timm", "torchvision"):
        assert f"extra: {extra}, not installed: pip install -e '.[{extra}]'" in missing


def test_the_install_hint_is_the_readmes():
    readme = README.read_text(encoding="utf-8")
    assert "pip install -e '.[hf]'" in readme and catalog.install_hint("hf").startswith("pip install -e '.[hf]'")
    for extra in ("timm", "torchvision"):
        assert f"'.[{extra}]'" in readme


def test_the_catalog_names_exactly_the_builtins_the_registry_builds():
    with pytest.raises(HarnessError) as info:
        build_backbone("builtin:no-such-model")
    assert str(info.value).endswith(f"(known: {', '.join(f'builtin:{n}' for n in catalog.BUILTINS)})")


def test_extract_help_lists_every_builtin():
    out = " ".join(CliRunner().invoke(cli, ["extract", "--help"]).output.split())
    for name in catalog.BUILTINS:
        assert f"builtin:{name}," in out
    for form in catalog.model_forms(p for p in FACTORIES if p in catalog.FAMILIES):  # not families tests register
        assert form in out


def test_info_summarises_a_file(small):
    result = CliRunner().invoke(cli, ["info", str(small)])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.output.splitlines())
    assert lines["model"] == "m" and lines["protocol"] == "hand v1" and lines["failures"] == "0"
    assert lines["clips"] == "12 x 1 views x 8 dims, float32"
    assert lines["tokens"] == "12x1x8x8 float16 (grid 2x2x2, width 8)"
    assert lines["dense maps"] == "none" and lines["text"] == "none"
    with h5py.File(small, "r") as f:
        assert lines["extraction hash"] == f.attrs["extraction_hash"]
    assert lines["size"].endswith(f"({small.stat().st_size} bytes)")


def _truncated(path: Path, to: Path) -> None:
    to.write_bytes(path.read_bytes()[:4000])


def _attribute(key, value):
    def craft(path: Path, to: Path) -> None:
        to.write_bytes(path.read_bytes())
        with h5py.File(to, "r+") as f:
            f.attrs[key] = value

    return craft


@pytest.mark.parametrize("craft, needle", [
    (_truncated, "cannot be opened as HDF5"),
    (_attribute("complete", False), "file is not complete"),
    (_attribute("model", "evil\x1b[2J\nline"), None),
])
def test_info_of_a_crafted_file_is_one_line(small, tmp_path, craft, needle):
    crafted = tmp_path / "crafted.h5"
    craft(small, crafted)
    result = subprocess.run([sys.executable, "-m", "evalharness", "info", str(crafted)], capture_output=True, text=True,
                            timeout=120)
    assert "Traceback" not in result.stderr and "\x1b" not in result.stdout + result.stderr
    if needle is None:  # a hostile string is shown escaped on its own line
        honest = CliRunner().invoke(cli, ["info", str(small)]).output
        assert result.returncode == 0 and len(result.stdout.splitlines()) == len(honest.splitlines())
        assert "evil" in next(line for line in result.stdout.splitlines() if line.startswith("model: "))
    else:
        assert result.returncode == 1 and result.stdout == ""
        assert len(result.stderr.splitlines()) == 1 and needle in result.stderr and result.stderr.startswith("error: ")
