"""Tiny randomly initialised checkpoints saved the way their libraries save them (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

SIZE = 32
FRAMES = 4
MEAN = [0.4, 0.45, 0.5]
STD = [0.2, 0.25, 0.3]


def _vision(**extra) -> dict:
    return dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **extra)


def _char_tokenizer(folder: Path):
    """A CLIP BPE tokenizer with single-character tokens only (a real tokenizer class, a toy vocabulary)."""
    from transformers import CLIPTokenizer

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]  # GPT-2 byte alphabet
    vocab = {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def _processor(kind: str):
    import transformers

    crop = {"height": SIZE, "width": SIZE}
    if kind == "video":
        return transformers.VideoMAEImageProcessor(size={"shortest_edge": SIZE}, crop_size=crop, image_mean=MEAN, image_std=STD)
    return transformers.CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size=crop, image_mean=MEAN, image_std=STD)


def save_hf(kind: str, folder: Path) -> Path:
    """Save a tiny `kind` model (videomae, timesformer, vivit, vjepa2, x_clip, clip, siglip) with its processor;
    x_clip and clip get a tokenizer, siglip none (a vision-only use)."""
    import transformers as t

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=514,
                max_position_embeddings=32, bos_token_id=512, eos_token_id=513, pad_token_id=513)
    if kind == "videomae":
        model = t.VideoMAEModel(t.VideoMAEConfig(image_size=SIZE, patch_size=8, num_frames=FRAMES, tubelet_size=2, **_vision()))
    elif kind == "timesformer":
        model = t.TimesformerModel(t.TimesformerConfig(image_size=SIZE, patch_size=8, num_frames=FRAMES, **_vision()))
    elif kind == "vivit":
        model = t.VivitModel(t.VivitConfig(image_size=SIZE, num_frames=FRAMES, tubelet_size=[2, 8, 8], **_vision()))
    elif kind == "vjepa2":
        model = t.VJEPA2Model(t.VJEPA2Config(crop_size=SIZE, frames_per_clip=FRAMES, patch_size=8, tubelet_size=2,
                                             hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2.0,
                                             pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=2))
    elif kind == "x_clip":
        model = t.XCLIPModel(t.XCLIPConfig(
            text_config=text, projection_dim=16, prompt_layers=1, prompt_num_attention_heads=2, prompt_attention_heads=2,
            vision_config=_vision(image_size=SIZE, patch_size=8, num_frames=FRAMES, mit_hidden_size=16,
                                  mit_intermediate_size=32, mit_num_hidden_layers=1, mit_num_attention_heads=2)))
    elif kind == "clip":
        model = t.CLIPModel(t.CLIPConfig(text_config=text, vision_config=_vision(image_size=SIZE, patch_size=8),
                                         projection_dim=16))
    elif kind == "siglip":
        model = t.SiglipModel(t.SiglipConfig(text_config=text, vision_config=_vision(image_size=SIZE, patch_size=8)))
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    _processor("video" if kind in ("videomae", "timesformer", "vivit", "vjepa2") else "image").save_pretrained(folder)
    if kind in ("x_clip", "clip"):
        _char_tokenizer(folder).save_pretrained(folder)
    return folder
