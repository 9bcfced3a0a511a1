"""Decoding with PyAV by presented-frame index, and the spatial transforms of a card.

Frame i is the i-th frame the decoder presents, counted by decoding; nothing here
seeks by timestamp or average frame rate, which picks wrong frames on variable-rate
files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import DecodeError
from .protocol import Transform
from .sampling import crop_offsets, resized_size


def _open(path: Path, threads: int):
    if not path.exists():
        raise DecodeError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DecodeError(f"{path}: file is empty (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise DecodeError(f"{path}: not a readable video ({_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise DecodeError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    return container, stream


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).splitlines()[0] if text else type(exc).__name__


def _frames(path: Path, threads: int):
    """Yield decoded frames in presentation order, closing the container however iteration ends."""
    container, stream = _open(path, threads)
    count = 0
    try:
        for frame in container.decode(stream):
            yield frame
            count += 1
    except av.FFmpegError as exc:
        raise DecodeError(f"{path}: decoding failed after {count} frames ({_reason(exc)})") from None
    finally:
        container.close()


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _image_files(path: Path) -> list[Path]:
    """A folder of frames (DAVIS layout): its images in name order, one per presented frame."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DecodeError(f"{path}: folder holds no .jpg or .png frames")
    return files


def _load_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DecodeError(f"{path}: not a readable image ({exc})") from None


def _rgb(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def read_sampled(path: str | os.PathLike, choose: Callable[[int], np.ndarray],
                 threads: int = 0) -> tuple[int, np.ndarray, np.ndarray]:
    """Decode once, then pick frames by a rule of the frame count.

    `choose(n)` returns the index array for a video of n frames. Frames stay in the
    decoder's own format until n is known; only the chosen ones become RGB. Returns
    (n, indices, frames) with frames[i] the RGB frame of the i-th unique index.
    """
    path = Path(path)
    if path.is_dir():
        files = _image_files(path)
        indices = choose(len(files))
        return len(files), indices, np.stack([_load_image(files[int(i)]) for i in np.unique(indices)])
    decoded = list(_frames(path, threads))
    n = len(decoded)
    if n == 0:
        raise DecodeError(f"{path}: no decodable video frames")
    indices = choose(n)
    unique = np.unique(indices)
    frames = np.stack([_rgb(decoded[int(i)]) for i in unique])
    return n, indices, frames


def to_float(frames: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (F, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)


def resize_short(frames: torch.Tensor, short: int, interpolation: str) -> torch.Tensor:
    """Antialiased resize of (F, 3, H, W) so the short side is `short`."""
    h, w = frames.shape[-2:]
    size = resized_size(h, w, short)
    if size == (h, w):
        return frames
    out = F.interpolate(frames, size=size, mode=interpolation, align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)


def spatial_views(frames: torch.Tensor, crop: int | None, views: int) -> torch.Tensor:
    """(F, 3, H, W) -> (S, F, 3, crop, crop): the card's crops, or the whole frame when crop is None."""
    if crop is None:
        return frames.unsqueeze(0)
    h, w = frames.shape[-2:]
    return torch.stack([frames[..., top:top + crop, left:left + crop] for top, left in crop_offsets(h, w, crop, views)])


def normalization(transform: Transform, model_mean: Sequence[float],
                  model_std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std the card asks for: the model's own, or the card's fixed values."""
    if transform.normalize == "model":
        mean, std = model_mean, model_std
    else:
        mean, std = transform.normalize["mean"], transform.normalize["std"]
    return (torch.tensor(mean, dtype=torch.float32).view(1, 1, 3, 1, 1),
            torch.tensor(std, dtype=torch.float32).view(1, 1, 3, 1, 1))


def make_views(indices: np.ndarray, frames: np.ndarray, transform: Transform, n_spatial: int,
               mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Clip views (Vt * S, k, 3, h, w), temporal-major, from the unique decoded frames and the index grid."""
    unique = np.unique(indices)
    resized = resize_short(to_float(frames), transform.resize_short, transform.interpolation)
    crops = spatial_views(resized, transform.crop, n_spatial)
    position = np.searchsorted(unique, indices)
    views = [crops[s, torch.from_numpy(position[v])] for v in range(indices.shape[0]) for s in range(crops.shape[0])]
    return (torch.stack(views) - mean) / std
