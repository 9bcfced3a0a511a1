"""`timm:<name>`: timm image models applied per frame (head removed), mean-pooled over time.

Weights: `--weights FILE`, a `local-dir:` folder saved by timm, the name's own
checkpoint in the Hugging Face cache, or `--weights random` (random init, recorded
as such; for throughput runs). Nothing is downloaded.
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


@dataclass
class TimmModel(ModuleBackbone):
    """A timm image model applied to every frame; clip vector = mean of the frame features."""

    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        b, t = clips.shape[:2]
        return self.model(clips.flatten(0, 1)).view(b, t, -1).mean(1)

    @property
    def has_tokens(self) -> bool:
        return self.dense_stride is not None

    def tokens(self, clips: torch.Tensor, layer: int, norm: str) -> torch.Tensor:
        """Each frame's feature map of block `layer` (prefix tokens dropped), optionally through the final norm:
        (B, frames, h, w, D)."""
        if not self.has_tokens:
            return super().tokens(clips, layer, norm)
        b, t = clips.shape[:2]
        try:
            maps = self.model.forward_intermediates(clips.flatten(0, 1), indices=[layer - 1 if layer > 0 else layer],
                                                    norm=norm == "after", intermediates_only=True, output_fmt="NCHW")
        except (IndexError, AssertionError):
            raise ValueError(f"layer {layer} is not one of the model's blocks") from None
        x = maps[-1].permute(0, 2, 3, 1)
        return x.reshape(b, t, *x.shape[1:])

    def dense(self, frames: torch.Tensor) -> torch.Tensor:
        if self.dense_stride is None:
            return super().dense(frames)
        maps = self.model.forward_intermediates(frames, indices=1, intermediates_only=True, output_fmt="NCHW")[-1]
        return maps.permute(0, 2, 3, 1)


def _cached_folder(hub_id: str, spec: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:
        raise HarnessError(f"model '{spec}': no weights given and {hub_id} is not in the Hugging Face cache "
                           f"(nothing is downloaded); give a weights file, a local-dir: folder, or weights 'random'") from None


def _hub_id(timm: Any, name: str, spec: str) -> str:
    """The Hugging Face repo timm names for `arch[.tag]`."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except (RuntimeError, ValueError, KeyError):
        cfg = None
    if cfg is None or not getattr(cfg, "hf_hub_id", None):
        raise HarnessError(f"model '{spec}': no weights given and timm knows no checkpoint for '{name}'; "
                           "give a weights file or weights 'random'")
    return cfg.hf_hub_id


def _create(timm: Any, name: str, spec: str, **kwargs: Any) -> Any:
    """create_model with a dynamic image size where the architecture supports it."""
    try:
        return timm.create_model(name, num_classes=0, dynamic_img_size=True, **kwargs)
    except TypeError:
        return timm.create_model(name, num_classes=0, **kwargs)
    except (RuntimeError, ValueError) as exc:
        raise HarnessError(f"model '{spec}': {str(exc).splitlines()[0]}") from None


def build(name: str, weights: str | None) -> TimmModel:
    """Build `timm:<name>` with weights from a file, a local folder, the HF cache, or random."""
    spec = f"timm:{name}"
    timm = require("timm", "timm", spec)
    if weights == RANDOM:
        model, sha, revision, files = _create(timm, name, spec, pretrained=False), RANDOM, "random-init", []
    elif weights is not None:
        path = Path(weights)
        model = _create(timm, name, spec, pretrained=False)
        heads = model.pretrained_cfg.get("classifier") or "head"
        load_weights(model, read_state_dict(path, spec), [h + "." for h in ([heads] if isinstance(heads, str) else heads)],
                     spec, path)
        sha, revision, files = sha256_files([path]), "file", [path.name]
    else:
        if name.startswith("local-dir:"):
            folder = Path(name.removeprefix("local-dir:"))
        else:
            hub_id = name.removeprefix("hf-hub:") if name.startswith("hf-hub:") else _hub_id(timm, name, spec)
            folder = _cached_folder(hub_id, spec)
        files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        if not (folder / "config.json").is_file() or not files:
            raise HarnessError(f"model '{spec}': {folder} is not a timm checkpoint folder (config.json + weights)")
        model = _create(timm, f"local-dir:{folder}", spec, pretrained=True)
        sha = sha256_files(files)
        revision = folder.name if folder.parent.name == "snapshots" else f"local-{sha[:12]}"
        files = [f.name for f in files]
        if name.startswith("local-dir:"):  # named by the folder's name and weights, never by a path on this machine
            spec = f"timm:local-dir:{folder.resolve().name}"
    model.eval()
    data = timm.data.resolve_model_data_config(model)
    stride = None
    if hasattr(model, "forward_intermediates") and getattr(model, "feature_info", None):
        stride = int(model.feature_info[-1]["reduction"])
    return TimmModel(
        name=spec, input=InputSpec(mean=tuple(data["mean"]), std=tuple(data["std"])), revision=revision,
        weights_sha256=sha, dense_stride=stride, model=model, token_patch=(stride or 0, stride or 0), token_tubelet=1,
        extra={"architecture": model.default_cfg.get("architecture", type(model).__name__),
               "pooling": "frame-mean", "preprocessing": {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()},
               "weight_files": files},
    )
