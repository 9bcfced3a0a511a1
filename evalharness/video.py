"""Decoding with PyAV by presented-frame index, and the spatial transforms of a card.

Frame i is the i-th frame the decoder presents, counted by decoding; nothing here
seeks by timestamp or average frame rate, which picks wrong frames on variable-rate
files.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import VideoReformatter
from PIL import Image

from .errors import DecodeError
from .protocol import Frames, Transform
from .sampling import crop_offsets, resized_size, snippet_geometry, snippet_offsets


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
            _check_size(path, target, rgb, kept.shape[1:])
            kept[filled] = rgb
            filled += 1
            target = next(targets, -1)
    return count, (kept[:filled] if kept is not None else np.empty((0, 0, 0, 3), np.uint8))


def _check_size(path: Path, index: int, rgb: np.ndarray, shape: tuple[int, ...]) -> None:
    """Refuse a frame whose size differs from the frames kept before it (a stream joined from two videos)."""
    if rgb.shape != shape:
        raise DecodeError(f"{path}: frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, not {shape[1]}x{shape[0]} like "
                          "the frames before it")


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


@dataclass(frozen=True)
class Snippet:
    """One sliding snippet: the frames it feeds (`indices`, (count,) int32), the [first, last] frames of its window,
    its centre time in seconds (float64: the mean of those two frames' presentation times, from the stream's first
    presented frame), and the RGB frames of its sorted unique indices (`frames[i]`, as `read_sampled` returns them)."""

    indices: np.ndarray
    window: tuple[int, int]
    centre: float
    frames: np.ndarray


def read_snippets(path: str | os.PathLike, frames: Frames, threads: int = 0) -> Iterator[Snippet]:
    """Yield a sliding card's snippets in order as the video decodes, holding at most one window of frames.

    Needs no frame count: snippet t is yielded once frame t*H + W - 1 is decoded, and at the
    end of the stream a video shorter than one window yields its one snippet (the last
    frame repeated). Only frames some snippet feeds are held, each converted to RGB once,
    when the first snippet feeding it is yielded; they are dropped as soon as the window
    passes them. A decoding error raises `DecodeError` after the snippets before it."""
    path = Path(path)
    if path.is_dir():
        raise DecodeError(f"{path}: sliding snippets need a video's timestamps, not a folder of frames")
    container, stream = _open(path, threads)
    with container:
        try:
            window, hop = snippet_geometry(frames, stream.average_rate)
        except DecodeError as exc:
            raise DecodeError(f"{path}: {exc}") from None
        yield from _slide(path, _frames(path, container, stream), window, hop, snippet_offsets(frames, window))


def _slide(path: Path, decoded: Iterator[av.VideoFrame], window: int, hop: int,
           offsets: np.ndarray) -> Iterator[Snippet]:
    """The snippets of a stream of decoded frames (see `read_snippets`): `held` keeps [index, decoded frame or its
    RGB] of the fed frames from the next snippet's first frame on, `times` the presentation times of all of them."""
    fed = _fed_mask(window, hop, offsets)
    held: deque[list] = deque()
    times: deque[Fraction] = deque()
    convert = _Converter(path)
    origin: Fraction | None = None
    emitted = count = 0
    for count, frame in enumerate(decoded, start=1):
        index = count - 1
        times.append(_seconds(path, index, frame))
        origin = times[-1] if origin is None else origin
        if _is_fed(fed, hop, index):
            held.append([index, frame])
        first = emitted * hop
        if index == first + window - 1:
            yield convert.snippet(held, first + offsets, (first, index), (times[0] + times[-1]) / 2 - origin)
            emitted += 1
            for _ in range(hop):
                times.popleft()
            while held and held[0][0] < emitted * hop:
                held.popleft()
    if count == 0:
        raise DecodeError(f"{path}: no decodable video frames")
    if emitted == 0:
        if not held or held[-1][0] != count - 1:
            held.append([count - 1, frame])
        yield convert.snippet(held, np.minimum(offsets, count - 1), (0, count - 1), (times[0] + times[-1]) / 2 - origin)


def _fed_mask(window: int, hop: int, offsets: np.ndarray) -> np.ndarray:
    """Whether frame j < W is fed by a snippet (one starting at a multiple of H at most j); frame i >= W is fed as
    frame i - H is, since the same snippets' offsets reach both."""
    mask = np.zeros(window, bool)
    for start in range(0, window, hop):
        mask[start + offsets[start + offsets < window]] = True
    return mask


def _is_fed(mask: np.ndarray, hop: int, index: int) -> bool:
    """Whether frame `index` is fed by a snippet, by `_fed_mask` of the window (length W): frames from W on as the
    frame in [W - H, W - 1] a multiple of H before them."""
    window = len(mask)
    return bool(mask[index if index < window else window - 1 - (window - 1 - index) % hop])


def _seconds(path: Path, index: int, frame: av.VideoFrame) -> Fraction:
    """A decoded frame's presentation time in seconds, exactly."""
    if frame.pts is None or frame.time_base is None:
        raise DecodeError(f"{path}: frame {index} has no presentation timestamp")
    return frame.pts * Fraction(frame.time_base)


class _Converter:
    """Turns held decoded frames into RGB, each once, by one converter for the whole video, all of one size."""

    def __init__(self, path: Path):
        self.path, self.reformatter, self.shape = path, VideoReformatter(), None

    def snippet(self, held: deque[list], indices: np.ndarray, window: tuple[int, int], centre: Fraction) -> Snippet:
        """The snippet feeding `indices` from the held frames, converting those not yet RGB (in place, dropping the
        decoded frame)."""
        entries = {entry[0]: entry for entry in held}
        unique = np.unique(indices).tolist()
        for index in unique:
            entry = entries[index]
            if not isinstance(entry[1], np.ndarray):
                entry[1] = _rgb(entry[1], self.reformatter)
                self.shape = self.shape or entry[1].shape
                _check_size(self.path, index, entry[1], self.shape)
        return Snippet(indices.astype(np.int32), window, float(centre), np.stack([entries[i][1] for i in unique]))


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
