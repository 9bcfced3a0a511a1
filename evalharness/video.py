"""Decoding with PyAV by presented-frame index, and the spatial transforms of a card.

Frame i is the i-th frame the decoder presents, counted by decoding; nothing here
seeks by timestamp or average frame rate, which picks wrong frames on variable-rate
files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import VideoReformatter
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


def _frames(path: Path, container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.VideoFrame]:
    """Yield the decoded frames of an opened video in presentation order, closing it however iteration ends."""
    count = 0
    try:
        for frame in container.decode(stream):
            yield frame
            count += 1
    except av.FFmpegError as exc:
        raise DecodeError(f"{path}: decoding failed after {count} frames ({_reason(exc)})") from None
    finally:
        container.close()


def _count_hint(path: Path, container: av.container.InputContainer, stream: av.VideoStream) -> int:
    """The frame count an opened video should decode to, without decoding: its packets that carry a picture, leaving
    out AVI's 1-byte dropped-frame markers and the frames an MP4 edit list cuts (both in the container's own count).
    Read from the container's index when it lists every packet (MP4, AVI), else from a second handle on the file,
    demuxed (Matroska, raw streams). Only a hint, which `read_sampled` checks against the decoded count; 0 when
    demuxing fails (decoding then reports the problem)."""
    entries = stream.index_entries
    if 0 < stream.frames == len(entries):
        return sum(map(_carries_picture, entries))
    counting, video = _open(path, 1)
    try:
        return sum(map(_carries_picture, counting.demux(video)))
    except av.FFmpegError:
        return 0
    finally:
        counting.close()


def _carries_picture(packet: av.Packet | av.index.IndexEntry) -> bool:
    return packet.size > 1 and not packet.is_discard


def count_hint(path: str | os.PathLike) -> int:
    """The frame count `read_sampled` expects a video to decode to before decoding it (see `_count_hint`)."""
    path = Path(path)
    container, stream = _open(path, 1)
    with container:
        return _count_hint(path, container, stream)


def _decode_keeping(path: Path, container: av.container.InputContainer, stream: av.VideoStream,
                    wanted: np.ndarray) -> tuple[int, np.ndarray]:
    """Decode an opened video to its end: the number of frames, and the RGB frames at the sorted indices `wanted`
    that exist (only those become RGB; every other frame is dropped as soon as it is decoded)."""
    targets = iter(wanted.tolist())
    target = next(targets, -1)
    reformatter = VideoReformatter()
    kept: np.ndarray | None = None
    filled = count = 0
    for count, frame in enumerate(_frames(path, container, stream), start=1):
        if count - 1 == target:
            rgb = _rgb(frame, reformatter)
            if kept is None:
                kept = np.empty((len(wanted), *rgb.shape), np.uint8)
            elif rgb.shape != kept.shape[1:]:
                raise DecodeError(f"{path}: frame {target} is {rgb.shape[1]}x{rgb.shape[0]}, not "
                                  f"{kept.shape[2]}x{kept.shape[1]} like the frames before it")
            kept[filled] = rgb
            filled += 1
            target = next(targets, -1)
    return count, (kept[:filled] if kept is not None else np.empty((0, 0, 0, 3), np.uint8))


def _covered(planned: np.ndarray, kept: int, unique: np.ndarray) -> np.ndarray | None:
    """Rows of `unique` among the first `kept` of `planned` (both sorted), or None when any is missing."""
    rows = np.searchsorted(planned[:kept], unique)
    if len(unique) and (rows.max() >= kept or not np.array_equal(planned[rows], unique)):
        return None
    return rows


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


def _rgb(frame: av.VideoFrame, reformatter: VideoReformatter) -> np.ndarray:
    """A decoded frame as RGB, by a converter kept for the whole video and run in this thread: a frame's own would set
    up swscale (and start its threads) again for every frame. Same pixels as `frame.to_ndarray(format="rgb24")`."""
    return reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()


def read_sampled(path: str | os.PathLike, choose: Callable[[int], np.ndarray],
                 threads: int = 0) -> tuple[int, np.ndarray, np.ndarray]:
    """Pick frames by a rule of the frame count, in memory bounded by the frames the rule keeps.

    `choose(n)` returns the index array for a video of n decodable frames. One pass
    keeps (as RGB) the frames `choose` picks for the count the packets promise
    (`count_hint`); the decoded count is checked at the end of the stream, and a second
    pass runs only when it differs and the kept frames do not hold the ones `choose`
    picks for the true count. Returns (n, indices, frames) with frames[i] the RGB frame
    of the i-th unique index.
    """
    path = Path(path)
    if path.is_dir():
        files = _image_files(path)
        indices = choose(len(files))
        return len(files), indices, np.stack([_load_image(files[int(i)]) for i in np.unique(indices)])
    container, stream = _open(path, threads)
    with container:
        hint = _count_hint(path, container, stream)
        planned = np.unique(choose(hint)) if hint > 0 else np.empty(0, np.int64)
        n, kept = _decode_keeping(path, container, stream, planned)
    if n == 0:
        raise DecodeError(f"{path}: no decodable video frames")
    indices = choose(n)
    unique = np.unique(indices)
    rows = _covered(planned, len(kept), unique)
    if rows is not None:
        return n, indices, kept if len(rows) == len(kept) else kept[rows]
    again, frames = _decode_keeping(path, *_open(path, threads), unique)
    if again != n:
        raise DecodeError(f"{path}: decoded to {n} frames once and {again} the next time")
    return n, indices, frames


def to_float(frames: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (F, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)


def resize_short(frames: torch.Tensor, short: int, interpolation: str, long_multiple: int | None = None) -> torch.Tensor:
    """Antialiased resize of (F, 3, H, W) so the short side is `short` (and the long side a multiple of
    `long_multiple`, floored, when given)."""
    h, w = frames.shape[-2:]
    size = resized_size(h, w, short, long_multiple)
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
    resized = resize_short(to_float(frames), transform.resize_short, transform.interpolation, transform.long_multiple)
    crops = spatial_views(resized, transform.crop, n_spatial)
    position = np.searchsorted(unique, indices)
    views = [crops[s, torch.from_numpy(position[v])] for v in range(indices.shape[0]) for s in range(crops.shape[0])]
    return (torch.stack(views) - mean) / std
