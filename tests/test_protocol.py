import json
from pathlib import Path

import pytest
import yaml

from evalharness.cards import load_protocol, parse_protocol, shipped_cards
from evalharness.checksum import canonical_json
from evalharness.errors import ProtocolError

GOLDEN = Path(__file__).parent / "golden" / "card_hashes.json"


def base_card() -> dict:
    return yaml.safe_load((Path(str(shipped_cards()["synthetic-motion"]))).read_text())


def test_every_shipped_card_loads_and_hashes_match_the_snapshot():
    golden = json.loads(GOLDEN.read_text())
    got = {}
    for name in shipped_cards():
        p = load_protocol(name)
        assert p.name == name
        got[name] = {"version": p.version, "extraction_hash": p.extraction_hash, "probe_hash": p.probe_hash}
    # A change to a card's frames, views, transform, dataset or probes must come with a version bump.
    assert got == golden


def test_extraction_hash_is_sha256_of_canonical_json_of_the_hashed_sections():
    import hashlib

    p = load_protocol("synthetic-motion")
    sections = {k: p.to_dict()[k] for k in ("name", "version", "task", "dataset", "frames", "views", "transform")}
    text = json.dumps(sections, sort_keys=True, separators=(",", ":"))
    assert p.extraction_hash == hashlib.sha256(text.encode()).hexdigest()
    assert p.probe_hash == hashlib.sha256(canonical_json(p.probes).encode()).hexdigest()


def test_key_order_and_defaults_do_not_change_hashes():
    raw = base_card()
    reordered = dict(reversed(list(raw.items())))
    assert parse_protocol(raw).extraction_hash == parse_protocol(reordered).extraction_hash
    explicit = base_card()
    implicit = base_card()
    del implicit["transform"]["interpolation"], implicit["transform"]["normalize"]
    assert parse_protocol(explicit).extraction_hash == parse_protocol(implicit).extraction_hash


def test_probe_settings_change_only_the_probe_hash():
    a, b = base_card(), base_card()
    b["probes"]["knn"]["temperature"] = 0.1
    pa, pb = parse_protocol(a), parse_protocol(b)
    assert pa.extraction_hash == pb.extraction_hash and pa.probe_hash != pb.probe_hash
    b["frames"]["count"] = 8
    assert parse_protocol(b).extraction_hash != pa.extraction_hash


@pytest.mark.parametrize("path, value, needle", [
    (("colour",), "red", "key 'card.colour' is unknown"),
    (("frames", "offset"), 3, "key 'frames.offset' is unknown"),
    (("dataset", "labels"), "x", "key 'dataset.labels' is unknown"),
    (("probes", "knn", "kk"), 3, "probes.knn': unknown setting 'kk'"),
    (("probes", "svm"), {}, "probes.svm': unknown probe"),
    (("frames", "count"), 0, "'frames.count' must be an integer"),
    (("frames", "sampling"), "random", "'frames.sampling' must be one of"),
    (("frames", "stride"), 2, "'frames.stride' is meaningless"),
    (("views", "spatial"), 2, "'views.spatial' must be 1"),
    (("transform", "crop"), 96, "'transform.crop' (96) cannot exceed"),
    (("task",), "detection", "'task' must be one of"),
    (("task",), "localization", "'frames.sampling' must be 'sliding' for localization"),
    (("dataset", "adapter"), "ucf999", "unknown adapter 'ucf999'"),
    (("probes", "knn", "headline_k"), 7, "headline_k 7 must be one of"),
    (("probes", "knn", "temperature"), -1, "temperature must be a positive number"),
    (("version",), True, "'version' must be an integer"),
    (("transform", "normalize"), {"mean": [0.5], "std": [1, 1, 1]}, "normalize.mean' must be a list of 3"),
])
def test_bad_cards_name_the_key(path, value, needle):
    raw = base_card()
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ProtocolError) as info:
        parse_protocol(raw)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_label_propagation_needs_all_frames():
    raw = base_card()
    raw["task"] = "label-propagation"
    raw.pop("probes")
    with pytest.raises(ProtocolError, match="must be 'all' for label-propagation"):
        parse_protocol(raw)


def test_unknown_card_name_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ProtocolError, match=r"shipped: .*synthetic-motion"):
        load_protocol("no-such-card")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ProtocolError, match="not valid YAML"):
        load_protocol(bad)


def test_literature_style_card_is_expressible():
    raw = {
        "name": "ucf101-s1-16x4", "version": 1, "task": "classification",
        "dataset": {"adapter": "manifest", "file": "ucf.csv", "train": "train", "test": "test"},
        "frames": {"count": 16, "sampling": "dense", "stride": 4},
        "views": {"temporal": 5, "spatial": 3},
        "transform": {"resize_short": 224, "crop": 224, "interpolation": "bilinear", "normalize": "model"},
        "probes": {"knn": {"k": [10, 20, 100, 200], "temperature": 0.07, "headline_k": 20}},
    }
    p = parse_protocol(raw)
    assert p.views.total == 15 and p.frames.stride == 4


def test_a_yaml_syntax_error_names_its_line_and_column(tmp_path):
    card = tmp_path / "bad.yaml"
    card.write_text("name: x\nversion: 1\ntask: [classification\nfoo: 1\n")
    with pytest.raises(ProtocolError, match=r"bad.yaml: not valid YAML at line 4, column 4: expected ',' or ']'"):
        load_protocol(card)
