"""The procedural benchmark: real encoded videos (MPEG-4 in MP4) whose appearance and motion classes are independent.

An object (shape, colour, texture; shapes have equal area) slides horizontally across a textured background,
wrapping around the frame a whole number of times (speed) in one direction, while
spinning with growing angular speed (rotation; reversed playback makes the spin slow
down). Every clip covers whole laps, so the mean over time of any clip is the same
band whatever its motion class: an appearance-only model is at chance on motion.

The timeline (under `timeline/`) gives it a time axis: long videos in which the same object idles and performs
actions (the motion classes) in turn, annotated with segments for localization and segmentation. The object only
ever stands on `places` evenly spaced columns; an action slides it one or three places a frame (slow, fast) left or
right, and idling hops it around a fixed random tour of the places with jumps of more than a quarter of the frame.
Every run of `places` frames inside a stretch therefore shows the object once on each place, so a window of that
many frames has the same mean whatever is happening: only windows that straddle a change differ, and they do not
say what changed to.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ManifestError, ProtocolError
from ..protocol import ROLES
from .base import Adapter, CardValueError, Manifest, Segment, build_manifest, check_choice, check_types, read_csv_rows
from .csv_manifest import load_csv_manifest
from .temporal import frame_runs

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
TIMELINE = "timeline"  # the long videos' folder under a benchmark root
TIMELINE_TASKS = ("localization", "segmentation")
BACKGROUND = "background"  # idle frames' label, which MS-TCN's metrics form no segment of


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    clips: int = 360
    frames: int = 48
    size: int = 64
    fps: int = 24


@dataclass(frozen=True)
class TimelineConfig:
    """The timeline's size and pace: `clips` videos of `frames` frames, its stretches' lengths in frames."""

    seed: int = 0
    clips: int = 20
    frames: int = 192
    size: int = 64
    fps: int = 24
    places: int = 16  # columns the object stands on; a window of this many frames inside a stretch visits each once
    folds: int = 4
    idle: tuple[int, int] = (16, 32)  # frames of an idle stretch, fewest and most
    action: tuple[int, int] = (24, 48)  # frames of an action


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


@dataclass(frozen=True)
class _Look:
    """What stays fixed through a video: the object (shape, texture, colour, size, height) and the background."""

    shape: str
    texture: str
    colour: np.ndarray
    radius: float
    y: float
    background: np.ndarray

    def draw(self, x: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
        """One frame (H, W, 3) uint8 with the object centred at column x (wrapping around) turned by theta, and its mask."""
        size = self.background.shape[0]
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
        dx = (xx - x + size / 2) % size - size / 2
        dy = yy - self.y
        u = np.cos(theta) * dx + np.sin(theta) * dy
        v = -np.sin(theta) * dx + np.cos(theta) * dy
        mask = _shape_mask(self.shape, u, v, self.radius)
        shade = np.ones_like(u)
        if self.texture == "striped":
            shade = np.where(np.sin(u * 2 * np.pi / (self.radius * 0.6)) > 0, 1.0, 0.45)
        frame = self.background.copy()
        frame[mask] = self.colour * shade[mask, None]
        return frame.astype(np.uint8), mask


def _draw_look(factors: dict[str, str], size: int, rng: np.random.Generator) -> tuple[_Look, float, float]:
    """A video's look, its starting column and angle, drawn from its rendering seed in one fixed order."""
    radius = rng.uniform(0.15, 0.17) * size
    y0 = rng.uniform(0.3, 0.7) * size
    x0 = rng.uniform(0, size)
    theta0 = rng.uniform(0, 2 * np.pi)
    colour = np.clip(np.array(RGB[factors["colour"]]) + rng.normal(0, 12, 3), 0, 255)
    look = _Look(factors["shape"], factors["texture"], colour, radius, y0, _background(rng, size))
    return look, x0, theta0


def render_clip(factors: dict[str, str], cfg: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 and object masks (T, H, W) bool, in display order."""
    size, n = cfg.size, cfg.frames
    reverse = factors["playback"] == "reversed"
    direction = (1 if factors["direction"] == "right" else -1) * (-1 if reverse else 1)
    spin = (-1 if factors["rotation"] == "cw" else 1) * (-1 if reverse else 1)
    look, x0, theta0 = _draw_look(factors, size, rng)
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    for t in range(n):
        x = x0 + direction * LAPS[factors["speed"]] * size * t / n
        theta = theta0 + spin * 2 * np.pi * (t / n) ** 2
        frames[t], masks[t] = look.draw(x, theta)
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


def timeline_schedule(cfg: TimelineConfig, rng: np.random.Generator) -> list[str]:
    """Per-frame labels: idle stretches (background) and actions of one motion class each in turn, idle first and last."""
    motions = label_classes("motion")
    labels: list[str] = []
    while True:
        labels += [BACKGROUND] * int(rng.integers(cfg.idle[0], cfg.idle[1] + 1))
        length = int(rng.integers(cfg.action[0], cfg.action[1] + 1))
        if len(labels) + length + cfg.idle[0] > cfg.frames:
            return (labels + [BACKGROUND] * cfg.frames)[:cfg.frames]
        labels += [motions[int(rng.integers(len(motions)))]] * length


def action_step(label: str) -> int:
    """Places an action moves the object each frame: LAPS of its speed, signed by its direction."""
    direction, speed = label.split("-")
    return LAPS[speed] * (1 if direction == "right" else -1)


def _apart(a: int, b: int, places: int) -> int:
    """Places between two places around the wrapping frame."""
    return min((a - b) % places, (b - a) % places)


def idle_tour(rng: np.random.Generator, places: int) -> list[int]:
    """A random order of every place whose hops (the last back to the first too) all jump more than a quarter of the
    frame: idling goes nowhere and never slides the way an action does."""
    far = places // 4 + 1

    def extend(path: list[int]) -> list[int] | None:
        if len(path) == places:
            return path if _apart(path[-1], path[0], places) >= far else None
        for place in rng.permutation(places).tolist():
            if place not in path and _apart(place, path[-1], places) >= far:
                found = extend(path + [place])
                if found is not None:
                    return found
        return None

    return extend([0])


def timeline_places(labels: list[str], tour: list[int], start: int) -> np.ndarray:
    """The place of the object in each frame: an action moves it `action_step` places, idling hops along the tour."""
    after = dict(zip(tour, tour[1:] + tour[:1], strict=True))
    out = [start]
    for label in labels[1:]:
        out.append(after[out[-1]] if label == BACKGROUND else (out[-1] + action_step(label)) % len(tour))
    return np.array(out)


def assign_timelines(cfg: TimelineConfig) -> list[tuple[dict[str, str], list[str], int]]:
    """Per video: its look (shape, colour, texture, each balanced over videos), its frame labels, its rendering seed."""
    rng = np.random.default_rng(cfg.seed)
    looks = {name: _balanced(rng, FACTORS[name], cfg.clips) for name in ("shape", "colour", "texture")}
    seeds = rng.integers(0, 2**63 - 1, size=(cfg.clips, 2))
    return [({name: str(column[i]) for name, column in looks.items()},
             timeline_schedule(cfg, np.random.default_rng(seeds[i, 0])), int(seeds[i, 1])) for i in range(cfg.clips)]


def render_timeline(factors: dict[str, str], labels: list[str], cfg: TimelineConfig,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 and masks (T, H, W) bool of a long video: one look throughout, placed as `labels` say."""
    look, x0, theta = _draw_look(factors, cfg.size, rng)
    tour = idle_tour(rng, cfg.places)
    drawn = [look.draw(x0 + p * cfg.size / cfg.places, theta) for p in range(cfg.places)]
    places = timeline_places(labels, tour, int(rng.integers(cfg.places)))
    return np.stack([drawn[p][0] for p in places]), np.stack([drawn[p][1] for p in places])


def generate_timeline(out: str | Path, cfg: TimelineConfig = TimelineConfig(), progress=None) -> Path:
    """Write the long videos, manifest.csv (split and fold of each), segments.csv (every run of frames with its label)
    and synthetic.json under `out`/timeline; same seed, same files."""
    base = Path(out) / TIMELINE
    (base / "videos").mkdir(parents=True, exist_ok=True)
    rows, runs = [], []
    for i, (factors, labels, seed) in enumerate(assign_timelines(cfg)):
        vid = f"timeline{i:05d}"
        frames, _ = render_timeline(factors, labels, cfg, np.random.default_rng(seed))
        encode_video(base / "videos" / f"{vid}.mp4", frames, cfg.fps)
        rows.append({"id": vid, "path": f"videos/{vid}.mp4", "split": SPLIT_OF_DECILE[i % 10],
                     "fold": f"fold{i % cfg.folds + 1}", **factors})
        runs += [{"id": vid, "first": int(s.start), "last": int(s.end), "label": s.label} for s in frame_runs(labels)]
        if progress is not None:
            progress(1)
    _write_csv(base / "manifest.csv", rows)
    _write_csv(base / "segments.csv", runs)
    (base / "synthetic.json").write_text(json.dumps({"generator_version": GENERATOR_VERSION, **asdict(cfg)}, indent=2) + "\n")
    return base


def _check(dataset: dict) -> None:
    check_types(dataset, {"seed": int, "clips": int, "label": str, "timeline": str})
    check_choice(dataset, "label", "appearance", LABELS)
    if dataset.get("clips", SynthConfig.clips) < 10:
        raise CardValueError("clips", f"must be at least 10 (one per split decile), got {dataset['clips']}")
    if "timeline" in dataset:
        _check_timeline(dataset)
    for role in ROLES:
        if dataset.get(role) == "all" and dataset.get("timeline") != "segmentation":
            raise CardValueError(role, "names split 'all', which only the segmentation timeline has (its videos in "
                                       "folds); the others have train, val and test")


def _check_timeline(dataset: dict) -> None:
    """A timeline card names its task, no clip label (its segments are the labels), and for segmentation split 'all'."""
    check_choice(dataset, "timeline", None, TIMELINE_TASKS)
    if "label" in dataset:
        raise CardValueError("label", "a timeline has no clip label (its segments are the labels); remove it")
    if dataset["timeline"] == "segmentation":
        for role in ROLES:
            if role in dataset and dataset[role] != "all":
                raise CardValueError(role, f"names split {dataset[role]!r}, but the segmentation timeline has one "
                                           "split, 'all' (its folds are in the videos' groups)")


def _check_meta(folder: Path, dataset: dict, clips: int, missing: str) -> dict:
    """The generator's synthetic.json under `folder`, refused unless it has the version, seed and clips the card pins."""
    meta_path = folder / "synthetic.json"
    if not meta_path.is_file():
        raise ProtocolError(missing)
    meta = json.loads(meta_path.read_text())
    want = {"generator_version": GENERATOR_VERSION, "seed": dataset.get("seed", 0), "clips": dataset.get("clips", clips)}
    for key, value in want.items():
        if meta.get(key) != value:
            raise ProtocolError(f"{meta_path}: {key} is {meta.get(key)!r} but the card needs {value!r}; "
                                f"regenerate it with seed {want['seed']} and {want['clips']} clips")
    return meta


def _resolve(root: Path, dataset: dict, splits: list[str], require_labels: bool, require_files: bool) -> Manifest:
    """The generated manifest, checked against the seed and size the card pins."""
    if "timeline" in dataset:
        return _resolve_timeline(root, dataset, splits, require_files)
    label = dataset.get("label", "appearance")
    _check_meta(root, dataset, SynthConfig.clips, f"{root}: not a synthetic benchmark (no synthetic.json); "
                                                  "generate one there first")
    spec = {"file": "manifest.csv", "label_column": label, "captions": "captions.csv", "classes": label_classes(label)}
    return load_csv_manifest(root, spec, splits, require_labels, require_files)


def _runs(path: Path) -> dict[str, list[Segment]]:
    """segments.csv's runs of frames (first, last, label) per video, in file order."""
    runs: dict[str, list[Segment]] = {}
    for row in read_csv_rows(path, ("id", "first", "last", "label")):
        if not (row["first"].isdigit() and row["last"].isdigit() and int(row["first"]) <= int(row["last"])):
            raise ManifestError(f"{path} line {row['line']}: first and last must be frame numbers, first <= last")
        runs.setdefault(row["id"], []).append(Segment(int(row["first"]), int(row["last"]), row["label"]))
    return runs


def _resolve_timeline(root: Path, dataset: dict, splits: list[str], require_files: bool) -> Manifest:
    """The timeline's videos with their segments: the actions in seconds (localization, splits by decile), or every
    run of frames, idling as background (segmentation, one split 'all', the fold in each video's group)."""
    base = root / TIMELINE
    meta = _check_meta(base, dataset, TimelineConfig.clips, f"{root}: no synthetic timeline (no {TIMELINE}/synthetic."
                                                            "json); generate one there first (evalharness demo does)")
    runs = _runs(base / "segments.csv")
    frames = dataset["timeline"] == "segmentation"
    rows = []
    for row in read_csv_rows(base / "manifest.csv", ("id", "path", "split", "fold")):
        found = runs.get(row["id"], [])
        if frames:
            rows.append({**row, "split": "all", "group": row["fold"], "segments": tuple(found)})
        else:
            rows.append({**row, "segments": tuple(Segment(s.start / meta["fps"], (s.end + 1) / meta["fps"], s.label)
                                                  for s in found if s.label != BACKGROUND)})
    classes = label_classes("motion") + ([BACKGROUND] if frames else [])
    return build_manifest(base, rows, str(base / "manifest.csv"), splits, classes, None, False, require_files)


ADAPTER = Adapter("synthetic", frozenset({"seed", "clips", "label", "timeline"}), _resolve,
                  tuple(dict.fromkeys(SPLIT_OF_DECILE)) + ("all",), _check)
