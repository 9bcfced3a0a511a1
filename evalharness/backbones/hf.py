"""`hf:<model id or folder>[@revision]`: transformers video models and per-frame image towers, offline.

Weights come from a local folder or the Hugging Face cache only (nothing is
downloaded). Mean and std come from the checkpoint's own preprocessor config,
and the whole preprocessing block is recorded in the embedding file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checksum import sha256_files
from ..errors import HarnessError
from .base import InputSpec, ModuleBackbone
from .loading import require

# model_type -> how a clip becomes one vector
POOLING = {
    "videomae": "token-mean",
    "timesformer": "cls",
    "vivit": "cls",
    "vjepa2": "token-mean",
    "xclip": "projected-video",
    "clip": "frame-mean",
    "siglip": "frame-mean",
}
# model_type -> (tubelet, patch) of its token grid, from its config (video transformers give patch tokens)
TOKEN_GRIDS = {
    "videomae": lambda c: (int(c.tubelet_size), _square(c.patch_size)),
    "timesformer": lambda c: (1, _square(c.patch_size)),
    "vivit": lambda c: (int(c.tubelet_size[0]), int(c.tubelet_size[1])),
    "vjepa2": lambda c: (int(c.tubelet_size), _square(c.patch_size)),
}
# transformers 5 saves a multi-part processor (X-CLIP's, CLIP's with its tokenizer) as one processor_config.json,
# its image or video processor nested under that attribute's name
_PREPROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json")
_NESTED = ("image_processor", "video_processor")
_RECORDED = ("image_mean", "image_std", "do_normalize", "do_rescale", "rescale_factor", "size", "crop_size",
             "resample", "num_frames", "image_processor_type", "video_processor_type", "processor_class")


def _pooled(output: Any) -> torch.Tensor:
    """`get_*_features` return a tensor in transformers 4 and an output with `pooler_output` in 5."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _checkpoint_folder(ref: str, revision: str | None, spec: str) -> Path:
    """The checkpoint's folder: `ref` itself, or its snapshot in the Hugging Face cache."""
    if Path(ref).is_dir():
        folder = Path(ref)
    else:
        from transformers.utils import cached_file

        try:
            folder = Path(cached_file(ref, "config.json", revision=revision, local_files_only=True)).parent
        except OSError as exc:
            raise HarnessError(f"model '{spec}': not a local folder and not in the Hugging Face cache "
                               f"(nothing is downloaded): {str(exc).splitlines()[0]}") from None
    if not (folder / "config.json").is_file():
        raise HarnessError(f"model '{spec}': no config.json in {folder}")
    return folder


def _preprocessing(folder: Path, spec: str) -> dict:
    """The checkpoint's own preprocessor config (the fields that decide pixels)."""
    for name in _PREPROCESSOR_FILES:
        path = folder / name
        if path.is_file():
            raw = json.loads(path.read_text(encoding="utf-8"))
            raw = {**raw, **next((raw[k] for k in _NESTED if isinstance(raw.get(k), dict)), {})}
            return {"file": name, **{k: raw[k] for k in _RECORDED if k in raw}}
    raise HarnessError(f"model '{spec}': {folder} has no {' or '.join(_PREPROCESSOR_FILES)}, so its mean and std "
                       "are unknown; save the processor beside the model (processor.save_pretrained(folder))")


def _normalization(pre: dict, spec: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if pre.get("do_rescale", True) is False or abs(float(pre.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise HarnessError(f"model '{spec}': preprocessor rescales pixels by {pre.get('rescale_factor')} "
                           f"(do_rescale={pre.get('do_rescale')}); only 1/255 (pixels in [0, 1]) is supported")
    if pre.get("do_normalize", True) is False:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean, std = pre.get("image_mean"), pre.get("image_std")
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3):
        raise HarnessError(f"model '{spec}': preprocessor config has no 3-channel image_mean / image_std")
    return tuple(map(float, mean)), tuple(map(float, std))


def _square(value: Any) -> int:
    return int(value if isinstance(value, int) else value[0])


def _input(config: Any, kind: str) -> tuple[int | None, int | None]:
    """Frames per clip and crop size the architecture requires (None = any)."""
    if kind in ("videomae", "timesformer", "vivit"):
        return int(config.num_frames), _square(config.image_size)
    if kind == "xclip":
        return int(config.vision_config.num_frames), _square(config.vision_config.image_size)
    return None, None


@dataclass
class HFModel(ModuleBackbone):
    """A transformers model with the pooling its family uses (see POOLING)."""

    kind: str = ""
    tokenizer: Any = None
    patch: int = 0
    prefix_tokens: int = 0
    max_text_tokens: int = 77

    def _video(self, clips: torch.Tensor, hidden: bool = False) -> Any:
        if self.kind == "vjepa2":
            return self.model(pixel_values_videos=clips, skip_predictor=True, output_hidden_states=hidden)
        return self.model(pixel_values=clips, output_hidden_states=hidden)

    def _pool(self, output: Any) -> torch.Tensor:
        last = output.last_hidden_state
        return last[:, 0] if self.kind in ("timesformer", "vivit") else last.mean(1)

    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        m, kind = self.model, self.kind
        if kind in TOKEN_GRIDS:
            return self._pool(self._video(clips))
        if kind == "xclip":
            return _pooled(m.get_video_features(pixel_values=clips))
        b, t = clips.shape[:2]
        frames = _pooled(m.get_image_features(pixel_values=clips.flatten(0, 1), interpolate_pos_encoding=True))
        return frames.view(b, t, -1).mean(1)

    def dense(self, frames: torch.Tensor) -> torch.Tensor:
        if self.dense_stride is None:
            return super().dense(frames)
        tokens = self.model.vision_model(pixel_values=frames, interpolate_pos_encoding=True).last_hidden_state
        h, w = frames.shape[-2] // self.patch, frames.shape[-1] // self.patch
        return tokens[:, self.prefix_tokens:].reshape(frames.shape[0], h, w, -1)

    @property
    def has_tokens(self) -> bool:
        return self.kind in TOKEN_GRIDS

    def tokens(self, clips: torch.Tensor, layer: int, norm: str) -> torch.Tensor:
        return self.encode(clips, layer, norm)[1] if self.has_tokens else super().tokens(clips, layer, norm)

    def encode(self, clips: torch.Tensor, layer: int, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass: the pooled clip vector and the patch tokens (B, t, h, w, D) of block `layer`, before or
        after the encoder's final norm (models without one give the same tokens either way)."""
        if not self.has_tokens:
            return super().encode(clips, layer, norm)
        output = self._video(clips, hidden=True)
        states = output.hidden_states  # the embeddings, then the output of each block
        blocks = len(states) - 1
        if not (1 <= layer <= blocks or -blocks <= layer <= -1):
            raise ValueError(f"the model has {blocks} blocks, so layer {layer} does not exist")
        x = states[layer if layer > 0 else blocks + 1 + layer]
        final = self.model.encoder.layernorm if self.kind == "vjepa2" else getattr(self.model, "layernorm", None)
        if norm == "after" and final is not None:
            x = final(x)
        b, t = clips.shape[:2]
        grid = (t // self.token_tubelet, clips.shape[-2] // self.token_patch[0], clips.shape[-1] // self.token_patch[1])
        patches = x[:, x.shape[1] - grid[0] * grid[1] * grid[2]:]
        if self.kind == "timesformer":  # its sequence is space-major: (h, w, t)
            return self._pool(output), patches.reshape(b, *grid[1:], grid[0], -1).permute(0, 3, 1, 2, 4)
        return self._pool(output), patches.reshape(b, *grid, x.shape[-1])

    @property
    def has_text(self) -> bool:
        return self.tokenizer is not None

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        if self.tokenizer is None:
            return super().embed_text(texts)
        padding = "max_length" if self.kind.startswith("siglip") else True
        tokens = self.tokenizer(texts, padding=padding, truncation=True, max_length=self.max_text_tokens,
                                return_tensors="pt")
        device = next(self.model.parameters()).device
        return _pooled(self.model.get_text_features(**{k: v.to(device) for k, v in tokens.items()}))


def build(name: str, weights: str | None) -> HFModel:
    """Load `hf:<id or folder>[@revision]` from disk only."""
    spec = f"hf:{name}"
    if weights is not None:
        raise HarnessError(f"model '{spec}': hf models load their weights from their folder or the cache; give no weights file")
    ref, _, revision = name.partition("@")
    transformers = require("transformers", "hf", spec)
    transformers.utils.logging.disable_progress_bar()
    folder = _checkpoint_folder(ref, revision or None, spec)
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    kind = config.model_type
    if kind not in POOLING:
        raise HarnessError(f"model '{spec}': model type '{kind}' is not supported (supported: {', '.join(sorted(POOLING))})")
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise HarnessError(f"model '{spec}': no weight files (*.safetensors, *.bin) in {folder}")
    pre = _preprocessing(folder, spec)
    mean, std = _normalization(pre, spec)
    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    frames, size = _input(config, kind)
    tokenizer = None
    if hasattr(model, "get_text_features") and (folder / "tokenizer_config.json").is_file():
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    per_frame = POOLING[kind] == "frame-mean"
    vision = config.vision_config if per_frame else None
    weights_sha = sha256_files(files)
    local = Path(ref).is_dir()  # named by its folder's name and weights, never by a path on this machine
    revision_id = folder.name if folder.parent.name == "snapshots" else (
        f"local-{weights_sha[:12]}" if local else revision or "local")
    text_config = getattr(config, "text_config", None)
    tubelet, patch = TOKEN_GRIDS[kind](config) if kind in TOKEN_GRIDS else (0, 0)
    return HFModel(
        name=f"hf:{folder.resolve().name}" if local else spec,
        input=InputSpec(frames=frames, size=size, mean=mean, std=std), revision=revision_id,
        token_patch=(patch, patch), token_tubelet=tubelet,
        weights_sha256=weights_sha, dense_stride=vision.patch_size if per_frame else None,
        model=model, kind=kind, tokenizer=tokenizer, patch=vision.patch_size if per_frame else 0,
        prefix_tokens=1 if kind == "clip" else 0,
        max_text_tokens=getattr(text_config, "max_position_embeddings", 77),
        extra={"architecture": type(model).__name__, "model_type": kind, "pooling": POOLING[kind],
               "preprocessing": pre, "weight_files": [f.name for f in files]},
    )
