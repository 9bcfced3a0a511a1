"""Shared fixtures: small synthetic benchmarks, cards for them, and the real clips beside the checkout."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from evalharness.datasets.synthetic import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread while a module's tiny models train: they run fastest so, and two threads on the two
    shared cores of CI wait on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not (REALDATA / "videos" / "labels.csv").is_file():
        pytest.skip("../shared/realdata is not present")
    return REALDATA


@pytest.fixture(scope="session")
def real_clips(realdata) -> list[dict]:
    with open(realdata / "videos" / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def write_card(folder: Path, name: str, **overrides) -> Path:
    """A synthetic classification card for a small benchmark; keyword overrides replace whole sections."""
    card = {
        "name": name, "version": 1, "task": "classification",
        "dataset": {"adapter": "synthetic", "seed": 0, "clips": 30, "label": "motion",
                    "train": "train", "val": "val", "test": "test"},
        "frames": {"count": 16, "sampling": "uniform"},
        "views": {"temporal": 1, "spatial": 1},
        "transform": {"resize_short": 64, "crop": 64},
        "probes": {"knn": {"k": [10, 20], "headline_k": 10}},
    }
    card.update(overrides)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def small_labelprop_card(folder: Path) -> Path:
    """A label-propagation card over every frame of the 30-clip benchmark's test clips."""
    return write_card(folder, "small-lp", task="label-propagation",
                      dataset={"adapter": "synthetic", "clips": 30, "test": "test"}, frames={"sampling": "all"},
                      transform={"resize_short": 64, "crop": None}, probes={"labelprop": {"context": 5}})


@pytest.fixture(scope="session")
def synth30(tmp_path_factory) -> Path:
    """A 30-clip synthetic benchmark (seed 0), generated once per test session."""
    root = tmp_path_factory.mktemp("synth30")
    generate(root, SynthConfig(seed=0, clips=30))
    return root


@pytest.fixture(scope="session")
def card30(tmp_path_factory) -> Path:
    return write_card(tmp_path_factory.mktemp("cards"), "small-motion")
