"""The shared contract of every registered probe, dataset adapter and backbone factory (in the manner of
scikit-learn's test_common): a new one that breaks the contract fails here, not in a user's run."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from evalharness.backbones import FACTORIES, build_backbone
from evalharness.cards import load_protocol, parse_protocol
from evalharness.datasets import ADAPTERS, resolve_manifest
from evalharness.errors import HarnessError, ManifestError, ProtocolError
from evalharness.probes import PROBES, build_config, resolve_config
from evalharness.protocol import Task
from evalharness.scoring import score
from evalharness.store import Chunk, DenseMaps, Header

from helpers import build_file, clustered, write_file

VOLATILE = ("timings", "created_utc", "environment")


def _stable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in VOLATILE}


# ----------------------------------------------------------------------------------------------- probes


@pytest.fixture(scope="module")
def classification_file(tmp_path_factory):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 8))
    train, train_y = clustered(rng, 60, 8, 3, centres, views=2)
    test, test_y = clustered(rng, 30, 8, 3, centres, views=2)
    probes = {"knn": {"k": [5, 10], "headline_k": 5}, "linear": {"c_grid": {"log10_min": -2, "log10_max": 2, "steps": 3}},
              "retrieval": {}, "attentive": {"num_heads": 2, "epochs": 2, "batch_size": 16, "lrs": [0.01, 0.001]}}
    tokens = tuple(x[:, :, None, None, None, :] + rng.normal(scale=0.1, size=(len(x), 2, 2, 2, 2, 8)) for x in (train, test))
    return build_file(tmp_path_factory.mktemp("contract"), train, train_y, test, test_y, probes=probes, tokens=tokens)


@pytest.fixture(scope="module")
def labelprop_file(tmp_path_factory):
    """Three 5-frame videos with random 4x5 feature maps (stride 8) and two-object masks, as the label-propagation
    card of a user's own data (manifest adapter with a masks column) would give."""
    tmp = tmp_path_factory.mktemp("contract-lp")
    rng = np.random.default_rng(5)
    rows, dense = ["id,path,split,masks"], {}
    for i in range(3):
        vid = f"v{i}"
        folder = tmp / "masks" / vid
        folder.mkdir(parents=True)
        for t in range(5):
            mask = np.zeros((32, 40), np.uint8)
            mask[4 + t:20 + t, 8:24] = 1
            mask[24:32, 30:40] = 2
            Image.fromarray(mask, mode="L").convert("P").save(folder / f"{t:05d}.png")
        rows.append(f"{vid},{vid},test,masks/{vid}")
        dense[vid] = DenseMaps(rng.normal(size=(5, 4, 5, 6)).astype(np.float16), 8, (32, 40))
    (tmp / "manifest.csv").write_text("\n".join(rows) + "\n")
    card = tmp / "lp.yaml"
    card.write_text(yaml.safe_dump({"name": "lp", "version": 1, "task": "label-propagation",
                                    "dataset": {"adapter": "manifest", "test": "test"}, "frames": {"sampling": "all"},
                                    "transform": {"resize_short": 32, "crop": None},
                                    "probes": {"labelprop": {"context": 2, "topk": 3}}}))
    protocol = load_protocol(card)
    manifest = resolve_manifest(protocol, tmp)
    header = Header(model="m", model_revision="", weights_sha256="", model_config="{}", protocol="lp",
                    protocol_version=1, extraction_hash=protocol.extraction_hash, protocol_json="{}",
                    manifest_hash=manifest.hash, harness_version="0", environment="{}")
    ids = manifest.ids
    chunk = Chunk(ids, rng.normal(size=(3, 1, 6)).astype(np.float32), np.tile(np.arange(5, dtype=np.int32), (3, 1, 1)),
                  dense)
    return write_file(tmp / "lp.parts", header, tmp / "lp.h5", [chunk]), protocol, tmp


def test_every_probe_is_covered_here():
    assert set(PROBES) == {"knn", "linear", "retrieval", "labelprop", "attentive", "localization", "segmentation"}


def _frames(task: Task) -> dict:
    """Frames a card of this task may take: every frame for label propagation, sliding snippets for the temporal
    tasks, a few uniform frames otherwise."""
    if task == Task.LABEL_PROPAGATION:
        return {"sampling": "all"}
    return {"count": 4, "sampling": "sliding", "window_frames": 8} if task.temporal else {"count": 4, "sampling": "uniform"}


@pytest.mark.parametrize("name", sorted(PROBES))
def test_probe_config_round_trips_through_card_and_record(name):
    task = min(PROBES[name].tasks)
    resolved = resolve_config(name, {}, task)
    config = build_config(name, json.loads(json.dumps(resolved)))  # as a record or a stored card gives it back
    assert json.dumps(asdict(config), sort_keys=True) == json.dumps(resolved, sort_keys=True)
    assert build_config(name, asdict(config)) == config
    card = {"name": "c", "version": 1, "task": task.value, "dataset": {"adapter": "manifest", "test": "test"},
            "frames": _frames(task), "transform": {"resize_short": 32},
            "probes": {name: yaml.safe_load(yaml.safe_dump(resolved))}}
    assert parse_protocol(card).probes[name] == resolved


@pytest.mark.parametrize("name", sorted(PROBES))
def test_probe_refuses_a_task_it_does_not_serve_and_unknown_settings(name):
    spec = PROBES[name]
    for task in set(Task) - spec.tasks:
        with pytest.raises(ValueError, match=f"does not apply to task {task.value}"):
            resolve_config(name, {}, task)
    with pytest.raises(ValueError, match="unknown setting 'no_such_knob'"):
        resolve_config(name, {"no_such_knob": 1}, min(spec.tasks))
    with pytest.raises(ValueError, match="settings must be a mapping"):
        resolve_config(name, [1, 2], min(spec.tasks))


# the temporal probes train heads for seconds: they run end to end once, in tests/test_temporal_probes.py
@pytest.mark.parametrize("name", sorted(set(PROBES) - {"localization", "segmentation"}))
def test_probe_is_deterministic_and_returns_a_complete_record(name, classification_file, labelprop_file):
    path, protocol, root = labelprop_file if name == "labelprop" else classification_file
    first, second = (score(path, protocol, [name], data_root=root)[0] for _ in range(2))
    assert _stable(first) == _stable(second)
    head = first["metrics"][first["headline"]]
    assert head["ci_low"] <= head["value"] <= head["ci_high"] and isinstance(head["higher_is_better"], bool)
    assert first["conforming"] and first["probe"] == name and first["config"] == protocol.probes[name]
    n = len(first["predictions"]["ids"])
    assert n == head["n"] and len(first["predictions"]["value"]) == n


# ----------------------------------------------------------------------------------------------- adapters

# one value each adapter must refuse when the card is loaded, and the key the error names
IMPOSSIBLE = {
    "ucf101": ({"split_set": 4}, "dataset.split_set"),
    "hmdb51": ({"split_set": 0}, "dataset.split_set"),
    "kinetics": ({"naming": "by_title"}, "dataset.naming"),
    "ssv2": ({"test": "test"}, "dataset.test"),
    "msrvtt": ({"train": "train"}, "dataset.train"),
    "davis": ({"year": 2019}, "dataset.year"),
    "synthetic": ({"label": "size"}, "dataset.label"),
    "manifest": ({"classes": "a,b"}, "dataset.classes"),
    "activitynet": ({"test": "testing"}, "dataset.test"),
    "thumos14": ({"videos_test": 3}, "dataset.videos_test"),
    "tas": ({"name": "salads"}, "dataset.name"),
}
VALID = {"ucf101": {"train": "train", "test": "test"}, "hmdb51": {"train": "train", "test": "test"},
         "kinetics": {"test": "val"}, "ssv2": {"test": "validation"}, "msrvtt": {"test": "test"},
         "davis": {"test": "val"}, "synthetic": {"test": "test"}, "manifest": {"test": "test"},
         "activitynet": {"train": "training", "test": "validation"},
         "thumos14": {"train": "validation", "test": "test"}, "tas": {"name": "gtea", "test": "all"}}
TEMPORAL = {"activitynet": "localization", "thumos14": "localization", "tas": "segmentation"}


def _card(adapter: str, dataset: dict) -> dict:
    task = {"davis": "label-propagation", "msrvtt": "text-retrieval", **TEMPORAL}.get(adapter, "classification")
    frames = ({"sampling": "all"} if task == "label-propagation"
              else {"count": 4, "sampling": "sliding", "window_frames": 8} if adapter in TEMPORAL
              else {"count": 4, "sampling": "uniform"})
    return {"name": "c", "version": 1, "task": task, "dataset": {"adapter": adapter, **dataset}, "frames": frames,
            "transform": {"resize_short": 32}}


def test_every_adapter_is_covered_here():
    assert set(ADAPTERS) == set(IMPOSSIBLE) == set(VALID)


@pytest.mark.parametrize("adapter", sorted(IMPOSSIBLE))
def test_adapter_refuses_an_impossible_card_when_it_is_loaded(adapter):
    parse_protocol(_card(adapter, VALID[adapter]))
    bad, key = IMPOSSIBLE[adapter]
    with pytest.raises(ProtocolError) as info:
        parse_protocol(_card(adapter, {**VALID[adapter], **bad}))
    assert f"key '{key}'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ProtocolError, match=r"dataset\.no_such_key' is unknown"):
        parse_protocol(_card(adapter, {**VALID[adapter], "no_such_key": 1}))


@pytest.mark.parametrize("adapter", sorted(IMPOSSIBLE))
def test_adapter_on_an_empty_root_says_what_is_missing(adapter, tmp_path):
    protocol = parse_protocol(_card(adapter, VALID[adapter]))
    with pytest.raises((ManifestError, ProtocolError)) as info:
        resolve_manifest(protocol, tmp_path)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------- backbones

# how to build each family without downloading anything, and the module that must be importable for it
BUILDS = {"builtin": ("pixels", None, None), "timm": ("resnet18", "random", "timm"),
          "torchvision": ("r3d_18", "random", "torchvision.models"), "hf": (None, None, "transformers")}


def test_every_shipped_backbone_family_is_covered_here():
    shipped = {p for p, factory in FACTORIES.items() if factory.__module__.startswith("evalharness.")}
    assert shipped == set(BUILDS)


@pytest.mark.parametrize("prefix", sorted(BUILDS))
def test_backbone_factory_names_a_missing_optional_dependency(prefix, monkeypatch):
    name, weights, module = BUILDS[prefix]
    if module is None:
        pytest.skip("builtin backbones need nothing optional")
    monkeypatch.setitem(sys.modules, module, None)  # import of it now raises ImportError
    with pytest.raises(HarnessError) as info:
        FACTORIES[prefix](name or "some/model", weights)
    assert f"pip install -e '.[{prefix}]'" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("prefix", sorted(BUILDS))
def test_backbone_factory_refuses_an_unknown_name(prefix, tmp_path):
    pytest.importorskip(BUILDS[prefix][2] or "torch")
    with pytest.raises(HarnessError) as info:
        build_backbone(f"{prefix}:{tmp_path / 'no-such-model'}", BUILDS[prefix][1])
    assert "no-such-model" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("prefix", [p for p in sorted(BUILDS) if BUILDS[p][0]])
def test_backbone_is_deterministic_and_batch_independent(prefix):
    name, weights, module = BUILDS[prefix]
    pytest.importorskip(module or "torch")
    backbone = build_backbone(f"{prefix}:{name}", weights)
    torch.manual_seed(0)
    clips = torch.randn(3, backbone.input.frames or 4, 3, backbone.input.size or 32, backbone.input.size or 32)
    with torch.inference_mode():
        together, again = backbone.embed(clips), backbone.embed(clips)
        alone = torch.cat([backbone.embed(clips[i:i + 1]) for i in range(3)])
    assert together.shape[0] == 3 and torch.equal(together, again)
    # the builtins are exactly batch-independent (the README's resume claim rests on it); real models to rounding
    assert torch.equal(together, alone) if prefix == "builtin" else torch.allclose(together, alone, atol=1e-5)
