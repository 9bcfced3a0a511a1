"""hf / timm / torchvision backbones on tiny random checkpoints saved to disk (nothing downloaded)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from evalharness.backbones import build_backbone
from evalharness.cards import load_protocol
from evalharness.cli import cli
from evalharness.errors import HarnessError
from evalharness.extract import ExtractConfig, extract
from evalharness.probes.common import video_vectors
from evalharness.store import EmbeddingFile

from conftest import small_labelprop_card, write_card
from helpers import probe
from tiny_models import FRAMES, MEAN, SIZE, STD, save_hf

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

HF_KINDS = ("videomae", "timesformer", "vivit", "vjepa2", "x_clip", "clip", "siglip")


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {kind: save_hf(kind, root / kind) for kind in HF_KINDS}


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """State dicts with classification heads, as a user's fine-tuned checkpoints would be."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    files = {"vit_tiny_patch16_224": timm.create_model("vit_tiny_patch16_224", num_classes=7),
             "r3d_18": torchvision.models.get_model("r3d_18", num_classes=7)}
    for name, model in files.items():
        torch.save(model.state_dict(), root / f"{name}.pth")
    return {name: root / f"{name}.pth" for name in files}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", HF_KINDS)
def test_hf_models_embed_with_their_own_preprocessing(hf_models, kind):
    model = build_backbone(f"hf:{hf_models[kind]}")
    assert model.input.mean == tuple(MEAN) and model.input.std == tuple(STD)
    fixed = kind in ("videomae", "timesformer", "vivit", "x_clip")
    assert (model.input.frames, model.input.size) == ((FRAMES, SIZE) if fixed else (None, None))
    config = model.config()
    assert config["preprocessing"]["image_mean"] == MEAN and config["model_type"] in kind.replace("_", "")
    assert model.weights_sha256 == sha256(hf_models[kind] / "model.safetensors")
    # a local folder is named by its folder's name and weights, never by a path on this machine
    assert model.name == f"hf:{hf_models[kind].name}" and model.revision == f"local-{model.weights_sha256[:12]}"
    clips = torch.randn(3, FRAMES, 3, SIZE, SIZE)
    with torch.inference_mode():
        out = model.embed(clips)
        again = model.embed(clips[1:2])
    assert out.ndim == 2 and out.shape[0] == 3 and torch.isfinite(out).all()
    torch.testing.assert_close(out[1:2], again, rtol=1e-4, atol=1e-5)  # no batch coupling
    assert model.has_text == (kind in ("x_clip", "clip"))


def test_hf_pooling_is_what_each_family_uses(hf_models):
    clips = torch.randn(2, FRAMES, 3, SIZE, SIZE)
    with torch.inference_mode():
        videomae = build_backbone(f"hf:{hf_models['videomae']}")
        expected = transformers.VideoMAEModel.from_pretrained(hf_models["videomae"])(pixel_values=clips).last_hidden_state.mean(1)
        torch.testing.assert_close(videomae.embed(clips), expected)
        clip = build_backbone(f"hf:{hf_models['clip']}")
        reference = transformers.CLIPModel.from_pretrained(hf_models["clip"])
        per_frame = [reference.get_image_features(pixel_values=clips[:, t]).pooler_output for t in range(FRAMES)]
        torch.testing.assert_close(clip.embed(clips), torch.stack(per_frame, 1).mean(1))


def test_hf_normalisation_equals_the_checkpoint_processor(hf_models):
    """Our pixels for a model are what its own image processor gives for the same (already cropped) frames."""
    from evalharness.protocol import Transform
    from evalharness.video import normalization

    model = build_backbone(f"hf:{hf_models['videomae']}")
    frames = np.random.default_rng(0).integers(0, 256, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    processor = transformers.AutoImageProcessor.from_pretrained(hf_models["videomae"])
    theirs = processor(list(frames), do_resize=False, do_center_crop=False, return_tensors="pt").pixel_values[0]
    mean, std = normalization(Transform(SIZE, SIZE), model.input.mean, model.input.std)
    ours = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - mean[0]) / std[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_hf_text_and_dense_outputs(hf_models):
    clip = build_backbone(f"hf:{hf_models['clip']}")
    with torch.inference_mode():
        text = clip.embed_text(["a red square", "blue"])
        maps = clip.dense(torch.randn(3, 3, 48, 64))
        video = clip.embed(torch.randn(1, 2, 3, SIZE, SIZE))
    assert text.shape == (2, video.shape[1]) and maps.shape == (3, 6, 8, 32) and clip.dense_stride == 8
    xclip = build_backbone(f"hf:{hf_models['x_clip']}")
    with torch.inference_mode():
        assert xclip.embed_text(["one", "two", "three"]).shape == (3, 16)
    assert xclip.dense_stride is None
    siglip = build_backbone(f"hf:{hf_models['siglip']}")
    with torch.inference_mode():
        assert siglip.dense(torch.randn(2, 3, 40, 32)).shape == (2, 5, 4, 32)  # no CLS token to drop
    assert not siglip.has_text


def test_the_model_command_shows_what_a_spec_resolves_to(hf_models, weight_files):
    result = CliRunner().invoke(cli, ["model", f"hf:{hf_models['clip']}"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["text_tower"] and shown["dense_maps"] and shown["model_revision"].startswith("local-")
    assert "/" not in shown["model"]
    assert shown["model_config"]["preprocessing"]["image_std"] == STD
    result = CliRunner().invoke(cli, ["model", "torchvision:r3d_18", "--weights", str(weight_files["r3d_18"])])
    assert json.loads(result.output)["weights_sha256"] == sha256(weight_files["r3d_18"])
    result = CliRunner().invoke(cli, ["model", "timm:resnet18"])
    assert isinstance(result.exception, HarnessError) and "not in the Hugging Face cache" in str(result.exception)


def test_hf_errors_are_one_line_and_name_the_problem(hf_models, tmp_path):
    with pytest.raises(HarnessError, match="not a local folder and not in the Hugging Face cache"):
        build_backbone("hf:nobody/no-such-model")
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((hf_models["videomae"] / name).read_bytes())
    with pytest.raises(HarnessError, match=r"no preprocessor_config.json"):
        build_backbone(f"hf:{bare}")
    with pytest.raises(HarnessError, match="give no weights file"):
        build_backbone(f"hf:{hf_models['clip']}", "w.pth")
    config = json.loads((bare / "config.json").read_text())
    (bare / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(HarnessError, match="model type 'bert' is not supported"):
        build_backbone(f"hf:{bare}")


def test_a_card_the_model_cannot_take_fails_before_any_decoding(hf_models, weight_files, tmp_path, synth30):
    eight = load_protocol(write_card(tmp_path, "eight", frames={"count": 8, "sampling": "uniform"},
                                     transform={"resize_short": SIZE, "crop": SIZE}))
    with pytest.raises(HarnessError, match=f"takes {FRAMES} frames per clip but protocol eight feeds 8"):
        extract(f"hf:{hf_models['videomae']}", eight, synth30, tmp_path / "a.h5", ExtractConfig(workers=0, quiet=True))
    big = load_protocol(write_card(tmp_path, "big", frames={"count": FRAMES, "sampling": "uniform"},
                                   transform={"resize_short": 64, "crop": 64}))
    with pytest.raises(HarnessError, match=f"takes {SIZE}x{SIZE} crops but protocol big crops 64"):
        extract(f"hf:{hf_models['videomae']}", big, synth30, tmp_path / "b.h5", ExtractConfig(workers=0, quiet=True))
    with pytest.raises(HarnessError, match=r"torchvision:s3d cannot take clips of 4 frames at 64x64 .protocol big.: Runtime"):
        extract(build_backbone("torchvision:s3d", "random"), big, synth30, tmp_path / "c.h5",
                ExtractConfig(workers=0, quiet=True))
    assert not list(tmp_path.glob("*.h5*"))


def test_timm_weights_file_is_loaded_strictly_and_recorded(weight_files, tmp_path):
    path = weight_files["vit_tiny_patch16_224"]
    model = build_backbone("timm:vit_tiny_patch16_224", str(path))
    reference = timm.create_model("vit_tiny_patch16_224", num_classes=7, dynamic_img_size=True)
    reference.load_state_dict(torch.load(path))
    reference.reset_classifier(0)
    frames = torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(model.embed(frames.unsqueeze(0)), reference.eval()(frames).mean(0, keepdim=True))
        assert model.dense(torch.randn(2, 3, 48, 64)).shape == (2, 3, 4, 192)
    assert model.weights_sha256 == sha256(path) and model.dense_stride == 16
    assert model.config()["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    with pytest.raises(HarnessError, match="does not fit this architecture"):
        build_backbone("timm:resnet18", str(path))
    with pytest.raises(HarnessError, match="not in the Hugging Face cache"):
        build_backbone("timm:resnet18")
    with pytest.raises(HarnessError, match="weights file not found"):
        build_backbone("timm:resnet18", str(tmp_path / "missing.pth"))


def test_timm_local_dir_checkpoint(tmp_path):
    from timm.models import save_for_hf

    torch.manual_seed(0)
    original = timm.create_model("resnet18", num_classes=5).eval()
    save_for_hf(original, str(tmp_path / "ckpt"), safe_serialization=True)
    model = build_backbone(f"timm:local-dir:{tmp_path / 'ckpt'}")
    original.reset_classifier(0)
    frames = torch.randn(3, 3, SIZE, SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(model.embed(frames.unsqueeze(0)), original(frames).mean(0, keepdim=True))
    assert model.weights_sha256 == sha256(tmp_path / "ckpt" / "model.safetensors")
    assert model.name == "timm:local-dir:ckpt" and model.revision == f"local-{model.weights_sha256[:12]}"


@pytest.mark.parametrize("name,dim", [("r3d_18", 512), ("r2plus1d_18", 512), ("s3d", 1024), ("swin3d_t", 768),
                                      ("mvit_v2_s", 768)])
def test_torchvision_video_models_without_their_heads(name, dim):
    model = build_backbone(f"torchvision:{name}", "random")
    frames, size = (16, 224) if name in ("s3d", "mvit_v2_s") else (4, SIZE)
    with torch.inference_mode():
        out = model.embed(torch.randn(1, frames, 3, size, size))
    assert out.shape == (1, dim) and model.weights_sha256 == "random" and model.revision == "random-init"
    assert model.config()["preprocessing"]["crop_size"] in ([112, 112], [224, 224])


def test_torchvision_weights_file(weight_files):
    path = weight_files["r3d_18"]
    model = build_backbone("torchvision:r3d_18", str(path))
    reference = torchvision.models.get_model("r3d_18", num_classes=7)
    reference.load_state_dict(torch.load(path))
    reference.fc = torch.nn.Identity()
    clips = torch.randn(2, 4, 3, SIZE, SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(model.embed(clips), reference.eval()(clips.permute(0, 2, 1, 3, 4)))
    assert model.weights_sha256 == sha256(path) and model.input.mean == (0.43216, 0.394666, 0.37645)
    with pytest.raises(HarnessError, match="does not fit this architecture"):
        build_backbone("torchvision:r2plus1d_18", str(path))
    with pytest.raises(HarnessError, match="unknown torchvision video model"):
        build_backbone("torchvision:resnet50", str(path))


def _real_card(tmp_path, real_clips):
    rows = ["id,path,label,split"] + [f"{r['path'].replace('.', '_')},{r['path']},{r['label'] or 'unlabelled'},"
                                      f"{'train' if i % 2 else 'test'}" for i, r in enumerate(real_clips)]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    card = tmp_path / "real.yaml"
    card.write_text(yaml.safe_dump({
        "name": "real-tiny", "version": 1, "task": "classification",
        "dataset": {"adapter": "manifest", "file": str(tmp_path / "manifest.csv"), "train": "train", "test": "test"},
        "frames": {"count": FRAMES, "sampling": "dense", "stride": 4}, "views": {"temporal": 1, "spatial": 1},
        "transform": {"resize_short": SIZE, "crop": SIZE}, "probes": {"knn": {"k": [1, 3], "headline_k": 1}}}))
    return card


@pytest.mark.slow
def test_each_adapter_family_extracts_the_real_clips_and_the_probe_scores_them(tmp_path, realdata, real_clips,
                                                                                hf_models, weight_files):
    card = _real_card(tmp_path, real_clips)
    runs = {"hf": (f"hf:{hf_models['videomae']}", None), "hf-xclip": (f"hf:{hf_models['x_clip']}", None),
            "timm": ("timm:vit_tiny_patch16_224", weight_files["vit_tiny_patch16_224"]),
            "torchvision": ("torchvision:r3d_18", weight_files["r3d_18"])}
    for family, (spec, weights) in runs.items():
        out = tmp_path / f"{family}.h5"
        args = ["extract", "-m", spec, "-p", str(card), "-d", str(realdata / "videos"), "-o", str(out),
                "--batch-size", "4", "--quiet"] + (["--weights", str(weights)] if weights else [])
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        with EmbeddingFile(out) as f:
            assert f.shape[0] == len(real_clips) and np.isfinite(video_vectors(f)).all()
            header = f.header
        assert header.model == (f"hf:{Path(spec[3:]).name}" if family.startswith("hf") else spec)  # no local paths
        folder = hf_models["x_clip" if family == "hf-xclip" else "videomae"]
        assert header.weights_sha256 == (sha256(weights) if weights else sha256(folder / "model.safetensors"))
        assert "preprocessing" in json.loads(header.model_config)
        assert json.loads(header.environment)["autocast"] == "none"
        record = probe("knn", out, load_protocol(card), realdata / "videos")
        assert 0.0 <= record["metrics"]["top1@k1"]["value"] <= 1.0


@pytest.mark.slow
def test_xclip_captions_and_clip_dense_maps_reach_their_probes(tmp_path, synth30, hf_models):
    text = write_card(tmp_path, "text-tiny", task="text-retrieval", dataset={"adapter": "synthetic", "clips": 30, "test": "test"},
                      frames={"count": FRAMES, "sampling": "uniform"}, transform={"resize_short": SIZE, "crop": SIZE},
                      probes={"retrieval": {}})
    protocol = load_protocol(text)
    cfg = ExtractConfig(batch_size=8, workers=0, quiet=True, autocast="bfloat16")
    extract(f"hf:{hf_models['x_clip']}", protocol, synth30, tmp_path / "x.h5", cfg)
    with EmbeddingFile(tmp_path / "x.h5") as f:
        text = f.text()
        ids, vectors = text.ids, text.embeddings
        assert len(ids) == 18 and vectors.shape[1] == 16
        assert json.loads(f.header.environment)["autocast"] == "bfloat16"
    assert "t2v_R@1" in probe("retrieval", tmp_path / "x.h5", protocol, synth30)["metrics"]
    lp = load_protocol(small_labelprop_card(tmp_path))
    extract(f"hf:{hf_models['clip']}", lp, synth30, tmp_path / "lp.h5", ExtractConfig(batch_size=4, workers=0, quiet=True))
    record = probe("labelprop", tmp_path / "lp.h5", lp, synth30)
    assert 0.0 <= record["metrics"]["J&F"]["value"] <= 1.0


def test_models_come_from_the_caches_by_name_without_network(tmp_path, hf_models):
    """An id in the Hugging Face cache (hf:, timm:) and torchvision's file in the torch hub cache, offline."""
    import shutil
    import subprocess
    import sys

    from timm.models import save_for_hf

    hub, commits = tmp_path / "hub", {"tiny/videomae": "1" * 40, "timm/resnet18.a1_in1k": "2" * 40}
    for repo, commit in commits.items():
        folder = hub / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text(commit)
        if repo == "tiny/videomae":
            shutil.copytree(hf_models["videomae"], folder / "snapshots" / commit)
        else:
            save_for_hf(timm.create_model("resnet18", num_classes=3), str(folder / "snapshots" / commit), safe_serialization=True)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.get_model("r3d_18").state_dict(), checkpoints / "r3d_18-b3b3357e.pth")
    code = ("import json, sys; from evalharness.backbones import build_backbone; "
            "print(json.dumps([[m.revision, m.weights_sha256] for m in map(build_backbone, sys.argv[1:])]))")
    specs = ["hf:tiny/videomae", f"hf:tiny/videomae@{'1' * 40}", "timm:resnet18.a1_in1k", "torchvision:r3d_18"]
    result = subprocess.run([sys.executable, "-c", code, *specs], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_CACHE": str(hub), "TORCH_HOME": str(tmp_path / "torch")})
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout.splitlines()[-1])
    videomae = [commits["tiny/videomae"], sha256(hf_models["videomae"] / "model.safetensors")]
    snapshot = hub / "models--timm--resnet18.a1_in1k" / "snapshots" / commits["timm/resnet18.a1_in1k"]
    timm_sha = sha256(snapshot / "model.safetensors")
    assert got == [videomae, videomae, [commits["timm/resnet18.a1_in1k"], timm_sha],
                   ["file", sha256(checkpoints / "r3d_18-b3b3357e.pth")]]


@pytest.mark.parametrize("kind", ["videomae", "timesformer", "vivit", "vjepa2"])
def test_hf_tokens_are_the_patch_tokens_of_the_chosen_block(hf_models, kind):
    model = build_backbone(f"hf:{hf_models[kind]}")
    clips = torch.randn(2, FRAMES, 3, SIZE, SIZE)
    with torch.no_grad():
        vectors, tokens = model.encode(clips, -1, "after")
        kwargs = {"pixel_values_videos": clips, "skip_predictor": True} if kind == "vjepa2" else {"pixel_values": clips}
        reference = model.model(**kwargs, output_hidden_states=True)
        first = model.tokens(clips, 1, "before")
    tubelet = 1 if kind == "timesformer" else 2
    grid = (FRAMES // tubelet, SIZE // 8, SIZE // 8)
    assert tokens.shape == (2, *grid, 32) and model.token_patch == (8, 8) and model.token_tubelet == tubelet
    # the models' own sequence orders: (t, h, w), TimeSformer's (h, w, t)
    flat = (lambda x: x.permute(0, 2, 3, 1, 4).reshape(2, -1, 32)) if kind == "timesformer" else (lambda x: x.reshape(2, -1, 32))
    last = reference.last_hidden_state  # after the final norm; the class token first where there is one
    assert torch.allclose(flat(tokens), last[:, last.shape[1] - tokens[0, ..., 0].numel():], atol=1e-6)
    assert torch.allclose(vectors, model.embed(clips), atol=1e-6)
    hidden = reference.hidden_states[1]
    assert torch.allclose(flat(first), hidden[:, hidden.shape[1] - first[0, ..., 0].numel():], atol=1e-6)


def test_timm_and_torchvision_tokens_are_the_maps_before_pooling(weight_files):
    vit = build_backbone("timm:vit_tiny_patch16_224", str(weight_files["vit_tiny_patch16_224"]))
    frames = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        tokens = vit.tokens(frames, -1, "after")
        reference = vit.model.forward_features(frames.flatten(0, 1))[:, vit.model.num_prefix_tokens:]
    assert tokens.shape == (2, 3, 4, 4, 192) and vit.token_patch == (16, 16)
    assert torch.allclose(tokens.reshape(6, 16, 192), reference, atol=1e-5)
    r3d = build_backbone("torchvision:r3d_18", str(weight_files["r3d_18"]))
    clips = torch.randn(1, 8, 3, 64, 64)
    with torch.no_grad():
        maps = r3d.tokens(clips, -1, "after")
        assert torch.allclose(maps.mean((1, 2, 3)), r3d.embed(clips), atol=1e-5)  # the head pools exactly this map
    with pytest.raises(ValueError, match="layer -1"):
        r3d.tokens(clips, 2, "after")
    assert not build_backbone("torchvision:mvit_v1_b", "random").has_tokens


def test_a_model_without_tokens_is_refused_before_decoding(hf_models, tmp_path, synth30):
    card = load_protocol(write_card(tmp_path, "tok", frames={"count": FRAMES, "sampling": "uniform"},
                                    transform={"resize_short": SIZE, "crop": SIZE}, features={"tokens": {"layer": -1}}))
    with pytest.raises(HarnessError, match="gives no token features") as exc:
        extract(f"hf:{hf_models['clip']}", card, synth30, tmp_path / "t.h5", ExtractConfig(workers=0, quiet=True))
    assert "\n" not in str(exc.value) and not list(tmp_path.glob("t.h5*"))
