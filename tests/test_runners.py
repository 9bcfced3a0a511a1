"""Many processes, one file: --shard auto under torchrun and Slurm, the last shard joins, and Ray tasks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from evalharness.distributed import device_for_rank
from evalharness.errors import HarnessError
from evalharness.extract import shard_from_env

from test_extract import arrays

BASE = ["-m", "builtin:stats", "--chunk-size", "3", "--workers", "0", "--quiet"]


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "evalharness", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("env,expected", [
    ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}, (3, 8)),
    ({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "4"}, (2, 4)),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, (0, 2)),
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "6"}, (5, 6)),
])
def test_shard_auto_reads_the_launcher(env, expected):
    assert shard_from_env(env) == expected


def test_engine_and_shard_options_do_not_mix(tmp_path, synth30, card30):
    both = run("extract", *BASE, "-p", card30, "-d", synth30, "-o", tmp_path / "x.h5", "--engine", "ray", "--shard", "0/2")
    assert both.returncode == 1 and "use --shards N instead of --shard" in both.stderr
    local = run("extract", *BASE, "-p", card30, "-d", synth30, "-o", tmp_path / "x.h5", "--shards", "2")
    assert local.returncode == 1 and "--shards is for --engine ray" in local.stderr and not list(tmp_path.iterdir())


def test_shard_auto_without_a_launcher_is_a_clear_error():
    with pytest.raises(HarnessError, match="found no RANK/WORLD_SIZE"):
        shard_from_env({})
    with pytest.raises(HarnessError, match="SLURM_ARRAY_TASK_COUNT is not set"):
        shard_from_env({"SLURM_ARRAY_TASK_ID": "1"})
    assert device_for_rank("cuda", {"LOCAL_RANK": "3"}) == "cuda:3" and device_for_rank("cpu", {"LOCAL_RANK": "3"}) == "cpu"


@pytest.fixture(scope="module")
def single(tmp_path_factory, synth30, card30):
    out = tmp_path_factory.mktemp("single") / "single.h5"
    assert run("extract", *BASE, "-p", card30, "-d", synth30, "-o", out).returncode == 0
    return out


@pytest.mark.slow
def test_slurm_array_tasks_on_one_disk_the_last_joins_the_file(tmp_path, synth30, card30, single):
    out = tmp_path / "x.h5"
    for task in ("7", "8"):
        result = run("extract", *BASE, "-p", card30, "-d", synth30, "-o", out, "--shard", "auto",
                     env={"SLURM_ARRAY_TASK_ID": task, "SLURM_ARRAY_TASK_MIN": "7", "SLURM_ARRAY_TASK_COUNT": "2"})
        assert result.returncode == 0, result.stderr
        assert out.exists() == (task == "8"), result.stdout
    assert arrays(out) == arrays(single) and not (tmp_path / "x.h5.parts").exists()


@pytest.mark.slow
def test_torchrun_ranks_equal_one_run(tmp_path, synth30, card30, single):
    out = tmp_path / "x.h5"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
                             "-m", "evalharness", "extract", *BASE, "-p", str(card30), "-d", str(synth30), "-o", str(out),
                             "--shard", "auto"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert arrays(out) == arrays(single)


@pytest.mark.slow
def test_a_ray_run_equals_a_local_run(tmp_path, synth30, card30, single):
    pytest.importorskip("ray")
    out = tmp_path / "x.h5"
    result = run("extract", *BASE, "-p", card30, "-d", synth30, "-o", out, "--engine", "ray", "--shards", "3",
                 env={"RAY_ADDRESS": "local"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "clips embedded" in result.stdout and str(out) in result.stdout
    assert arrays(out) == arrays(single)


def test_shards_with_another_autocast_are_not_mixed_into_one_file(tmp_path, synth30, card30):
    from evalharness.cards import load_protocol
    from evalharness.extract import ExtractConfig, extract
    from evalharness.store import Header

    protocol, out = load_protocol(card30), tmp_path / "x.h5"
    extract("builtin:pixels", protocol, synth30, out, ExtractConfig(chunk_size=10, workers=0, quiet=True, shard=(0, 2)))
    with pytest.raises(HarnessError, match=r"part of another run \(part -> this run: autocast: 'none' -> 'bfloat16'\)"):
        extract("builtin:pixels", protocol, synth30, out,
                ExtractConfig(chunk_size=10, workers=0, quiet=True, shard=(1, 2), autocast="bfloat16"))
    parts = '{"parts": [{"autocast": "bfloat16", "platform": "a"}, {"autocast": "bfloat16", "platform": "b"}]}'
    header = Header(*["x"] * 5, 1, *["x"] * 4, environment=parts)
    assert header.autocast == "bfloat16" and header.identity()["autocast"] == "bfloat16"
    assert Header(*["x"] * 5, 1, *["x"] * 4, environment="not json").autocast == "unknown"
