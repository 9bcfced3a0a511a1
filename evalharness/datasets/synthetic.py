"""The procedural benchmark: real encoded videos (MPEG-4 in MP4) whose appearance and motion classes are independent.

An object (shape, colour, texture; shapes have equal area) slides horizontally across a textured background,
wrapping around the frame a whole number of times (speed) in one direction, while
spinning with growing angular speed (rotation; reversed playback makes the spin slow
down). Every clip covers whole laps, so the mean over time of any clip is the same
band whatever its motion class: an appearance-only model is at chance on motion.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ProtocolError
from .base import Adapter, CardValueError, Manifest, check_choice, check_types
from .csv_manifest import load_csv_manifest

GENERATOR_VERSION = 1
FACTORS = {
    "shape": ("circle", "square", "triangle"),
    "colour": ("red", "green", "blue"),
    "texture": ("solid", "striped"),
    "direction": ("left", "right"),
    "speed": ("slow", "fast"),
    "rotation": ("cw", "ccw"),
    "playback": ("forward", "reversed"),
}
LABELS = ("appearance", "motion") + tuple(FACTORS)
LAPS = {"slow": 1, "fast": 3}
RGB = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 70, 220)}
SPLIT_OF_DECILE = ("train",) * 6 + ("val",) + ("test",) * 3


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    clips: int = 360
    frames: int = 48
    size: int = 64
    fps: int = 24


def label_classes(label: str) -> list[str]:
    """Every class a synthetic label column can take."""
    if label == "appearance":
        return [f"{c}-{t}" for c in FACTORS["colour"] for t in FACTORS["texture"]]
    if label == "motion":
        return [f"{d}-{s}" for d in FACTORS["direction"] for s in FACTORS["speed"]]
    return list(FACTORS[label])


def _balanced(rng: np.random.Generator, values: tuple[str, ...], n: int) -> np.ndarray:
    """Each value equally often (up to one), in random order: independent of every other factor."""
    return rng.permutation(np.resize(np.array(values), n))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A static, low-contrast texture: blocky grey noise with fine grain and a slight random tint."""
    coarse = rng.uniform(0.35, 0.65, size=(size // 8, size // 8, 1))
    smooth = np.kron(coarse, np.ones((8, 8, 1)))
    fine = rng.normal(0.0, 0.03, size=(size, size, 1))
    tint = rng.uniform(0.9, 1.1, size=3)
    return np.clip((smooth * 0.5 + 0.25 + fine) * tint * 255.0, 0, 255)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """Shapes of equal area (that of the circle), so area says nothing about shape."""
    if shape == "circle":
        return u * u + v * v <= radius * radius
    if shape == "square":
        half = radius * np.sqrt(np.pi) / 2
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    inradius = radius * np.sqrt(np.pi / (3 * np.sqrt(3)))
    inside = np.ones_like(u, dtype=bool)
    for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
        inside &= u * np.cos(angle) + v * np.sin(angle) <= inradius
    return inside


def assign_factors(cfg: SynthConfig) -> list[tuple[dict[str, str], int]]:
    """Per clip: its factor values (each factor balanced and drawn independently) and its rendering seed."""
    rng = np.random.default_rng(cfg.seed)
    columns = {name: _balanced(rng, values, cfg.clips) for name, values in FACTORS.items()}
    seeds = rng.integers(0, 2**63 - 1, size=cfg.clips)
    return [({name: str(columns[name][i]) for name in FACTORS}, int(seeds[i])) for i in range(cfg.clips)]


def render_clip(factors: dict[str, str], cfg: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 and object masks (T, H, W) bool, in display order."""
    size, n = cfg.size, cfg.frames
    reverse = factors["playback"] == "reversed"
    direction = (1 if factors["direction"] == "right" else -1) * (-1 if reverse else 1)
    spin = (-1 if factors["rotation"] == "cw" else 1) * (-1 if reverse else 1)
    radius = rng.uniform(0.15, 0.17) * size
    y0 = rng.uniform(0.3, 0.7) * size
    x0 = rng.uniform(0, size)
    theta0 = rng.uniform(0, 2 * np.pi)
    colour = np.clip(np.array(RGB[factors["colour"]]) + rng.normal(0, 12, 3), 0, 255)
    background = _background(rng, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    for t in range(n):
        x = x0 + direction * LAPS[factors["speed"]] * size * t / n
        theta = theta0 + spin * 2 * np.pi * (t / n) ** 2
        dx = (xx - x + size / 2) % size - size / 2
        dy = yy - y0
        u = np.cos(theta) * dx + np.sin(theta) * dy
        v = -np.sin(theta) * dx + np.cos(theta) * dy
        mask = _shape_mask(factors["shape"], u, v, radius)
        shade = np.ones_like(u)
        if factors["texture"] == "striped":
            shade = np.where(np.sin(u * 2 * np.pi / (radius * 0.6)) > 0, 1.0, 0.45)
        frame = background.copy()
        frame[mask] = colour * shade[mask, None]
        frames[t] = frame.astype(np.uint8)
        masks[t] = mask
    if reverse:
        frames, masks = frames[::-1].copy(), masks[::-1].copy()
    return frames, masks


def rgb_to_yuv420(frame: np.ndarray) -> np.ndarray:
    """BT.601 limited-range planar YUV 4:2:0 (the layout PyAV takes for yuv420p), computed in numpy."""
    rgb = frame.astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    h, w = y.shape
    sub = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    planes = [np.rint(p).clip(0, 255).astype(np.uint8) for p in (y, sub(u), sub(v))]
    return np.concatenate([planes[0], planes[1].reshape(h // 4, w), planes[2].reshape(h // 4, w)])


def encode_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """MPEG-4 Part 2 in MP4, bytes depending only on the frames and the FFmpeg version.

    FFmpeg's own mpeg4 encoder, one thread, colour conversion done here: libx264 gave
    different bytes for the same frames from run to run when the machine was loaded
    (measured with one thread, with and without swscale), mpeg4 did not.
    """
    import av  # here, not at the top: reading a card that names this adapter needs no video library

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.thread_type = "NONE"
        stream.bit_rate = 2_000_000
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb_to_yuv420(frame), format="yuv420p")))
        container.mux(stream.encode())


def _captions(f: dict[str, str]) -> list[str]:
    solid = "" if f["texture"] == "solid" else " striped"
    return [
        f"a {f['colour']}{solid} {f['shape']} slides {f['direction']} {'quickly' if f['speed'] == 'fast' else 'slowly'}",
        f"a{'n' if f['colour'][0] in 'aeiou' else ''} {f['colour']} {f['shape']} spinning "
        f"{'clockwise' if f['rotation'] == 'cw' else 'anticlockwise'}",
    ]


def generate(out: str | Path, cfg: SynthConfig = SynthConfig(), progress=None) -> Path:
    """Write videos, masks, manifest.csv, captions.csv and synthetic.json under `out`; same seed, same files."""
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rows, captions = [], []
    for i, (factors, clip_seed) in enumerate(assign_factors(cfg)):
        vid = f"synth{i:05d}"
        frames, masks = render_clip(factors, cfg, np.random.default_rng(clip_seed))
        encode_video(out / "videos" / f"{vid}.mp4", frames, cfg.fps)
        mask_dir = out / "masks" / vid
        mask_dir.mkdir(parents=True, exist_ok=True)
        for t, mask in enumerate(masks):
            image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.astype(np.uint8).tobytes())
            image.putpalette([0, 0, 0, 255, 255, 255])
            image.save(mask_dir / f"{t:05d}.png", optimize=False)
        rows.append({"id": vid, "path": f"videos/{vid}.mp4", "split": SPLIT_OF_DECILE[i % 10], **factors,
                     "appearance": f"{factors['colour']}-{factors['texture']}",
                     "motion": f"{factors['direction']}-{factors['speed']}", "masks": f"masks/{vid}"})
        captions += [{"video_id": vid, "caption": c} for c in _captions(factors)]
        if progress is not None:
            progress(1)
    _write_csv(out / "manifest.csv", rows)
    _write_csv(out / "captions.csv", captions)
    (out / "synthetic.json").write_text(json.dumps({"generator_version": GENERATOR_VERSION, **asdict(cfg)}, indent=2) + "\n")
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _check(dataset: dict) -> None:
    check_types(dataset, {"seed": int, "clips": int, "label": str})
    check_choice(dataset, "label", "appearance", LABELS)
    if dataset.get("clips", SynthConfig.clips) < 10:
        raise CardValueError("clips", f"must be at least 10 (one per split decile), got {dataset['clips']}")


def _resolve(root: Path, dataset: dict, splits: list[str], require_labels: bool, require_files: bool) -> Manifest:
    """The generated manifest, checked against the seed and size the card pins."""
    label = dataset.get("label", "appearance")
    meta_path = root / "synthetic.json"
    if not meta_path.is_file():
        raise ProtocolError(f"{root}: not a synthetic benchmark (no synthetic.json); generate one there first")
    meta = json.loads(meta_path.read_text())
    want = {"generator_version": GENERATOR_VERSION, "seed": dataset.get("seed", 0),
            "clips": dataset.get("clips", SynthConfig.clips)}
    for key, value in want.items():
        if meta.get(key) != value:
            raise ProtocolError(f"{meta_path}: {key} is {meta.get(key)!r} but the card needs {value!r}; "
                                f"regenerate it with seed {want['seed']} and {want['clips']} clips")
    spec = {"file": "manifest.csv", "label_column": label, "captions": "captions.csv", "classes": label_classes(label)}
    return load_csv_manifest(root, spec, splits, require_labels, require_files)


ADAPTER = Adapter("synthetic", frozenset({"seed", "clips", "label"}), _resolve, tuple(dict.fromkeys(SPLIT_OF_DECILE)), _check)
