"""Run locks on an extraction's parts folder: a second run on the same output is refused naming the first, a killed
run's lock is taken over, shards of one count share the folder, and runs started together leave one run's arrays."""

import signal
import socket
import subprocess
import sys
from dataclasses import replace

import pytest

from evalharness.cards import load_protocol
from evalharness.errors import BusyError
from evalharness.extract import ExtractConfig, extract

from test_extract import arrays

CFG = ExtractConfig(batch_size=2, chunk_size=3, workers=0, quiet=True)
HOLD = """
import sys, time
from pathlib import Path
from evalharness.locking import run_lock
with run_lock(Path(sys.argv[1]), sys.argv[2], "a test holder", beside=lambda other: True):
    print("held", flush=True)
    time.sleep(300)
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synth30, card30):
    """The arrays of one uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "e.h5"
    extract("builtin:pixels", load_protocol(card30), synth30, out, CFG)
    return arrays(out)


def hold(folder, name) -> subprocess.Popen:
    """Another process holding the run lock `name` in `folder` until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), name], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_naming_the_first_and_a_killed_runs_lock_is_taken_over(tmp_path, synth30, card30,
                                                                                        reference):
    protocol, out = load_protocol(card30), tmp_path / "e.h5"
    holder = hold(tmp_path / "e.h5.parts", "shard-0-of-2")
    try:
        for shard in [(0, 2), (0, 1)]:  # the same shard, or one whose chunks overlap
            with pytest.raises(BusyError) as info:
                extract("builtin:pixels", protocol, synth30, out, replace(CFG, shard=shard))
            message = str(info.value)
            assert message.startswith(f"{tmp_path / 'e.h5.parts'}: another run is writing here (a test holder, "
                                      f"pid {holder.pid} on {socket.gethostname()}, since ") and "\n" not in message
        # a shard of the same count works beside it
        assert not extract("builtin:pixels", protocol, synth30, out, replace(CFG, shard=(1, 2))).finalized
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    heard = []
    summary = extract("builtin:pixels", protocol, synth30, out, replace(CFG, shard=(0, 2)), announce=heard.append)
    assert summary.finalized and len(heard) == 1 and f"a run that was killed (a test holder, pid {holder.pid}" in heard[0]
    assert arrays(out) == reference and not (tmp_path / "e.h5.parts").exists()


def test_runs_started_together_on_one_output_leave_one_runs_arrays(tmp_path, synth30, card30, reference):
    out = tmp_path / "e.h5"
    base = [sys.executable, "-m", "evalharness", "extract", "-m", "builtin:pixels", "-p", str(card30), "-d", str(synth30),
            "-o", str(out), "--chunk-size", "3", "--batch-size", "2", "--workers", "0", "--quiet"]
    # two shards of one count, and shard 0 started twice (a job started twice, or requeued while it still runs)
    procs = [subprocess.Popen([*base, "--shard", shard], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for shard in ["0/2", "1/2", "0/2"]]
    outcomes = []
    for proc in procs:
        err = proc.communicate(timeout=300)[1]
        outcomes.append((proc.pid, proc.returncode, err))
    assert outcomes[1][1] == 0, outcomes[1][2]
    first, _, third = outcomes
    assert 0 in (first[1], third[1])
    for (_, code, err), twin in [(first, third), (third, first)]:
        if code != 0:  # refused, in one line naming the twin that holds shard 0/2
            assert err.startswith(f"error: {tmp_path / 'e.h5.parts'}: another run is writing here (extract shard 0/2, "
                                  f"pid {twin[0]} on {socket.gethostname()}, since ") and err.count("\n") == 1, err
    assert arrays(out) == reference and not (tmp_path / "e.h5.parts").exists()
