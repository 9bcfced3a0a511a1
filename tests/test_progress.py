"""Progress where output is not a terminal: a plain line every 30 s or 10% of the total, whichever comes first, and
nothing with --quiet; the probes report through it."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from evalharness import progress
from evalharness.cli import cli
from evalharness.probes.labelprop import propagate
from evalharness.probes.labelprop_config import Config as LabelpropConfig

from helpers import build_file, clustered


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_tenth_of_the_total(capsys):
    clock = Clock()
    with progress.LogLines(90, "labelprop", "frame", clock=clock) as lines:
        for _ in range(40):
            clock.now += 0.25
            lines.update(1)
    out = capsys.readouterr().err.splitlines()
    assert out[:4] == [f"labelprop: {n}/90 frames, 4.0 frames/s, ETA {eta}"
                       for n, eta in ((9, "0:00:20"), (18, "0:00:18"), (27, "0:00:16"), (36, "0:00:14"))]
    assert out[4:] == ["labelprop: 40/90 frames, 4.0 frames/s, ETA 0:00:12"]  # the last line, on close


def test_a_line_every_30_seconds_when_a_tenth_takes_longer(capsys):
    clock = Clock()
    lines = progress.LogLines(1000, "linear: C sweep and refit", "fit", initial=500, clock=clock)
    for _ in range(3):
        clock.now += 12
        lines.update(1)
    assert capsys.readouterr().err == "linear: C sweep and refit: 503/1000 fits, 0.1 fits/s, ETA 1:39:24\n"
    lines.update(0)
    assert capsys.readouterr().err == ""
    lines.n = 1000  # as a caller that counts finished parts itself sets it
    lines.close()
    assert capsys.readouterr().err.endswith("1000/1000 fits, 13.9 fits/s, done\n")


def test_the_helper_logs_lines_when_stderr_is_no_terminal_and_is_silent_when_quiet(capsys):
    assert isinstance(progress.bar(5, "x", "batch"), progress.LogLines)
    with progress.bar(5, "x", "batch", quiet=True) as quiet:
        quiet.update(5)
    with progress.bar(5, "x", "batch") as logged:
        logged.update(5)
    assert capsys.readouterr().err.startswith("x: 5/5 batches, ")


@pytest.fixture(scope="module")
def linear_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    x, y = clustered(rng, 60, 8, 3, rng.normal(size=(3, 8)))
    probes = {"linear": {"c_grid": {"log10_min": -1, "log10_max": 1, "steps": 3}}}
    return build_file(tmp_path_factory.mktemp("progress"), x[:40], y[:40], x[40:], y[40:], probes=probes)


@pytest.mark.parametrize("quiet", [False, True])
def test_probe_on_the_command_line_logs_progress_unless_quiet(linear_file, tmp_path, quiet):
    path, _, root = linear_file
    result = CliRunner().invoke(cli, ["probe", "linear", str(path), "-p", str(path.with_suffix(".yaml")), "-d",
                                      str(root), "-o", str(tmp_path), *(["--quiet"] if quiet else [])])
    assert result.exit_code == 0, result.output
    assert ("C sweep and refit: 4/4 fits" in result.stderr) is not quiet


def test_label_propagation_counts_each_predicted_frame():
    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.normal(size=(6, 4, 4, 8)).astype(np.float32))
    first = torch.nn.functional.one_hot(torch.from_numpy(rng.integers(0, 2, (4, 4))), 2).float()
    counted = []
    propagate(features, first, LabelpropConfig(), counted.append)
    assert counted == [1] * 5


@pytest.mark.parametrize("quiet", [False, True])
def test_lines_a_confined_child_logs_are_relayed_cleaned_unless_quiet(tmp_path, capsys, quiet):
    log = tmp_path / "progress.log"
    with progress.relayed(log, quiet):
        log.write_text("linear: 1/4 fits, 2.0 fits/s, ETA 0:00:02\nevil \x1b[2J line\nno newline yet")
    err = capsys.readouterr().err
    assert err == ("" if quiet else "linear: 1/4 fits, 2.0 fits/s, ETA 0:00:02\nevil \\x1b[2J line\n")
