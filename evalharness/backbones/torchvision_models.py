"""`torchvision:<name>`: torchvision's video classifiers with the classification head removed.

Weights: `--weights FILE` (a state dict), the checkpoint torchvision names for the
model if it is already in the torch hub cache, or `--weights random`. Mean and std
come from the model's Kinetics-400 weights preset and are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checksum import sha256_files
from ..errors import HarnessError
from .base import InputSpec, ModuleBackbone
from .loading import RANDOM, load_weights, read_state_dict, require

# name -> the attribute holding the classification head
HEADS = {"r3d_18": "fc", "mc3_18": "fc", "r2plus1d_18": "fc", "s3d": "classifier", "mvit_v1_b": "head",
         "mvit_v2_s": "head", "swin3d_t": "head", "swin3d_s": "head", "swin3d_b": "head"}


def _resnet_map(m: Any, x: torch.Tensor, _: bool) -> torch.Tensor:
    return m.layer4(m.layer3(m.layer2(m.layer1(m.stem(x))))).permute(0, 2, 3, 4, 1)


def _s3d_map(m: Any, x: torch.Tensor, _: bool) -> torch.Tensor:
    return m.features(x).permute(0, 2, 3, 4, 1)


def _swin_map(m: Any, x: torch.Tensor, after_norm: bool) -> torch.Tensor:
    x = m.features(m.pos_drop(m.patch_embed(x)))
    return m.norm(x) if after_norm else x


# name -> its last feature map before pooling, (B, t, h, w, C) from (B, C, T, H, W)
TOKEN_MAPS = {"r3d_18": _resnet_map, "mc3_18": _resnet_map, "r2plus1d_18": _resnet_map, "s3d": _s3d_map,
              **{name: _swin_map for name in ("swin3d_t", "swin3d_s", "swin3d_b")}}
# MViT's positional embeddings fix its input: 16 frames of 224 x 224
_FIXED = {"mvit_v1_b": (16, 224), "mvit_v2_s": (16, 224)}


@dataclass
class TorchvisionModel(ModuleBackbone):
    """A torchvision video classifier without its head; input (B, C, T, H, W)."""

    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model(clips.permute(0, 2, 1, 3, 4)).flatten(1)

    @property
    def has_tokens(self) -> bool:
        return self.extra["architecture"] in TOKEN_MAPS

    def tokens(self, clips: torch.Tensor, layer: int, norm: str) -> torch.Tensor:
        """The last feature map before pooling, (B, t, h, w, C): one token per cell (Swin's before or after its
        final norm; the CNNs have none)."""
        if not self.has_tokens:
            return super().tokens(clips, layer, norm)
        if layer != -1:
            raise ValueError(f"torchvision video models give their last feature map only (layer -1), not {layer}")
        return TOKEN_MAPS[self.extra["architecture"]](self.model, clips.permute(0, 2, 1, 3, 4), norm == "after")


def _weights_file(preset: Any, weights: str | None, spec: str) -> Path:
    if weights is not None:
        return Path(weights)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / preset.url.rsplit("/", 1)[-1]
    if not cached.is_file():
        raise HarnessError(f"model '{spec}': no weights given and {cached} is not in the torch hub cache "
                           "(nothing is downloaded); give a weights file or weights 'random'")
    return cached


def build(name: str, weights: str | None) -> TorchvisionModel:
    """Build `torchvision:<name>` with its head replaced by the identity."""
    spec = f"torchvision:{name}"
    if name not in HEADS:
        raise HarnessError(f"model '{spec}': unknown torchvision video model (known: {', '.join(HEADS)})")
    models = require("torchvision.models", "torchvision", spec)
    model = models.get_model(name, weights=None)
    preset = models.get_model_weights(name).DEFAULT
    if weights == RANDOM:
        sha, revision, files = RANDOM, "random-init", []
    else:
        path = _weights_file(preset, weights, spec)
        load_weights(model, read_state_dict(path, spec), [HEADS[name] + "."], spec, path)
        sha, revision, files = sha256_files([path]), "file", [path.name]
    setattr(model, HEADS[name], torch.nn.Identity())
    model.eval()
    transforms = preset.transforms()
    frames, size = _FIXED.get(name, (None, None))
    return TorchvisionModel(
        name=spec, input=InputSpec(frames=frames, size=size, mean=tuple(transforms.mean), std=tuple(transforms.std)),
        revision=revision, weights_sha256=sha, model=model,
        extra={"architecture": name, "pooling": "head-removed",
               "preprocessing": {"preset": str(preset), "crop_size": list(transforms.crop_size),
                                 "resize_size": list(transforms.resize_size), "mean": list(transforms.mean),
                                 "std": list(transforms.std), "interpolation": transforms.interpolation.value},
               "weight_files": files},
    )
