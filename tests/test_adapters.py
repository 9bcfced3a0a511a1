"""Dataset adapters against the official split files in ../shared/realdata/splits."""

import os
import shutil
import subprocess
import sys

import pytest

from evalharness.cards import load_protocol
from evalharness.datasets import resolve_manifest
from evalharness.errors import ManifestError


def splits(realdata):
    return realdata / "splits"


def test_ucf101_split1_counts(tmp_path, realdata):
    os.symlink(splits(realdata) / "ucf101", tmp_path / "ucfTrainTestlist")
    manifest = resolve_manifest(load_protocol("ucf101-s1-16x4"), tmp_path)
    assert len(manifest.split("train")) == 9537 and len(manifest.split("test")) == 3783
    assert len(manifest.classes) == 101 and manifest.classes[0] == "ApplyEyeMakeup"
    item = next(i for i in manifest.items if i.id == "v_SoccerJuggling_g23_c01")
    assert item.split == "train" and item.label == "SoccerJuggling"
    assert item.path == tmp_path / "UCF-101" / "SoccerJuggling" / "v_SoccerJuggling_g23_c01.avi"


def test_hmdb51_split1_counts(tmp_path, realdata):
    os.symlink(splits(realdata) / "hmdb51", tmp_path / "splits")
    manifest = resolve_manifest(load_protocol("hmdb51-s1-16x4"), tmp_path)
    assert len(manifest.split("train")) == 3570 and len(manifest.split("test")) == 1530 and len(manifest.classes) == 51


def test_kinetics400_val_counts_and_the_manifest_command(tmp_path, realdata):
    (tmp_path / "annotations").mkdir()
    shutil.copy(splits(realdata) / "kinetics" / "kinetics-400_val.csv", tmp_path / "annotations")
    header = "label,youtube_id,time_start,time_end,split,is_cc\n"
    (tmp_path / "annotations" / "kinetics-400_train.csv").write_text(header + "abseiling,aaaaaaaaaaa,0,10,train,0\n")
    video = tmp_path / "videos" / "val" / "using segway" / "R6llTwEh07w_000000_000010.mp4"
    video.parent.mkdir(parents=True)
    shutil.copy(realdata / "videos" / "R6llTwEh07w.mp4", video)
    manifest = resolve_manifest(load_protocol("k400-val-16x4"), tmp_path)
    assert len(manifest.split("val")) == 19906 and len({i.label for i in manifest.split("val")}) == 400
    result = subprocess.run([sys.executable, "-m", "evalharness", "manifest", "-p", "k400-val-16x4", "-d", str(tmp_path),
                             "-o", str(tmp_path / "m.csv")], capture_output=True, text=True)
    assert result.returncode == 0 and "19907 clips in 400 classes, 1 present, 19906 missing" in result.stderr
    assert "  train: 1 clips; abseiling 1" in result.stderr and "  val: 19906 clips; abseiling " in result.stderr
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0] == "id,path,label,split,present,group" and len(lines) == 19908  # the group decides validation
    assert any(line.startswith("R6llTwEh07w_000000_000010,") and line.endswith(",1,R6llTwEh07w") for line in lines)


def test_msrvtt_1ka_pairs(tmp_path, realdata):
    (tmp_path / "annotations").mkdir()
    shutil.copy(splits(realdata) / "msrvtt" / "MSRVTT_JSFUSION_test.csv", tmp_path / "annotations")
    manifest = resolve_manifest(load_protocol("msrvtt-1ka-u12"), tmp_path)
    assert len(manifest.items) == 1000 and sum(len(c) for c in manifest.captions.values()) == 1000
    assert manifest.captions["video9770"] == ["a person is connecting something to system"]


def test_ssv2_official_json_layout(tmp_path, realdata):
    """20BN's json files, with the 174 classes of the official label list (mmaction2's copy in splits/)."""
    import json

    classes = (splits(realdata) / "label_maps_mmaction2" / "sthv2_label_map.txt").read_text().splitlines()
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "something-something-v2-labels.json").write_text(json.dumps({c: str(i) for i, c in enumerate(classes)}))
    entries = {"train": [{"id": "1", "label": "pushing a cup from left to right",
                          "template": "Pushing [something] from left to right", "placeholders": ["a cup"]},
                         {"id": "2", "label": "putting a pen onto a box",
                          "template": "Putting [something] onto [something]", "placeholders": ["a pen", "a box"]}],
               "validation": [{"id": "3", "label": "x", "template": "Approaching [something] with your camera",
                               "placeholders": ["x"]}]}
    for split, rows in entries.items():
        (folder / f"something-something-v2-{split}.json").write_text(json.dumps(rows))
    manifest = resolve_manifest(load_protocol("ssv2-val-u16"), tmp_path)
    assert len(manifest.classes) == 174 and manifest.ids == ["1", "2", "3"]
    assert [i.label for i in manifest.items] == ["Pushing something from left to right", "Putting something onto something",
                                                 "Approaching something with your camera"]
    assert manifest.items[0].path == tmp_path / "20bn-something-something-v2" / "1.webm"
    assert sum(not item.path.exists() for item in manifest.items) == 3
    entries["train"][0]["template"] = "Juggling [something]"
    (folder / "something-something-v2-train.json").write_text(json.dumps(entries["train"]))
    with pytest.raises(ManifestError, match="unknown label 'Juggling something'"):
        resolve_manifest(load_protocol("ssv2-val-u16"), tmp_path)
    (folder / "something-something-v2-train.json").write_text("[{")
    with pytest.raises(ManifestError, match=r"something-something-v2-train.json: not valid JSON"):
        resolve_manifest(load_protocol("ssv2-val-u16"), tmp_path)


@pytest.mark.parametrize("card", ["ucf101-s1-16x4", "hmdb51-s1-16x4", "k400-val-16x4", "msrvtt-1ka-u12", "ssv2-val-u16"])
def test_missing_lists_are_a_clear_error(tmp_path, card):
    with pytest.raises(ManifestError, match="not found"):
        resolve_manifest(load_protocol(card), tmp_path)


def test_a_split_the_card_does_not_use_is_an_error_in_a_users_manifest(tmp_path):
    (tmp_path / "manifest.csv").write_text("id,path,label,split\na,a.mp4,x,train\nb,b.mp4,y,tset\nc,c.mp4,x,test\n")
    with pytest.raises(ManifestError, match=r"manifest.csv line 3: id 'b' is in split 'tset', which the card does not "
                                             r"use \(its splits: test, train\)"):
        resolve_manifest(load_protocol("manifest-16x4"), tmp_path)
