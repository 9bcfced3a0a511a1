"""Decoding speed against FFmpeg's own decoder, and peak memory, clip by clip.

    python benchmarks/decode.py [--videos ../shared/realdata/videos] [--work /tmp/evalharness-decode] [--repeat 5]
        [--sampling uniform --count 16 --stride 4 --views 1]

Clips: the real ones in --videos (when the folder exists) and generated ones, made once with
ffmpeg under --work: 720p and 1080p H.264 (300 frames), and 640x360 at 200 and 2000 frames
(peak memory must not grow with length). Ours is `read_sampled` with one decoding thread under
the given frame rule; FFmpeg is `ffmpeg -threads 1 -i F -an -f null -`, timed by its own
`-benchmark` (its decoding loop, without the process start-up that would dwarf a short clip).

The speed ratio is FFmpeg's loop time over our whole read, opening and probing the file
included; the loop ratios take our opening (timed alone) off, for a loop-to-loop comparison,
in wall time and in CPU time (user + system: the steadier figure on a loaded machine). Runs
alternate and each figure is the median of --repeat. Peak memory is how far one read raises
the peak RSS of a fresh subprocess over its RSS after imports (Linux: /proc/self/clear_refs,
VmHWM). `passes` counts decoding passes (2 when the frame count hint was wrong and the frames
kept did not hold the true count's picks). Prints one markdown table.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

from evalharness import video
from evalharness.protocol import Frames
from evalharness.sampling import frame_indices

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "videos"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")
# name -> (width, height, frames) of generated H.264 clips with temporal noise (so they do not compress to nothing)
GENERATED = {"gen-720p": (1280, 720, 300), "gen-1080p": (1920, 1080, 300),
             "gen-360p-200": (640, 360, 200), "gen-360p-2000": (640, 360, 2000)}
PEAK = """
import sys
from pathlib import Path
from evalharness.protocol import Frames
from evalharness.sampling import frame_indices
from evalharness.video import read_sampled
def kib(key):
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(key + ":")))
rule = Frames(sys.argv[2], None if sys.argv[3] == "None" else int(sys.argv[3]), int(sys.argv[4]) or None)
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the current RSS
before = kib("VmRSS")
read_sampled(sys.argv[1], lambda n: frame_indices(rule, int(sys.argv[5]), n), threads=1)
print(kib("VmHWM") - before)
"""


def generate(work: Path) -> list[Path]:
    """The generated clips, encoded once into `work` (kept between runs)."""
    work.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (width, height, frames) in GENERATED.items():
        path = work / f"{name}.mp4"
        if not path.is_file():
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                            f"testsrc2=size={width}x{height}:rate=30", "-vf", "noise=alls=8:allf=t+u", "-frames:v",
                            str(frames), "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
                            str(path)], check=True)
        paths.append(path)
    return paths


def ffmpeg_seconds(path: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of FFmpeg's single-threaded decoding loop over the video stream, as -benchmark reports them
    (the file is opened and probed before that loop starts)."""
    out = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-benchmark", "-threads", "1", "-i", str(path), "-an",
                          "-f", "null", "-"], capture_output=True, text=True, errors="replace", check=True).stderr
    times = dict(re.findall(r"(utime|stime|rtime)=([0-9.]+)s", out))
    return float(times["rtime"]), float(times["utime"]) + float(times["stime"])


def timed(work) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def read(path: Path, rule: Frames, views: int) -> tuple[int, np.ndarray, np.ndarray]:
    return video.read_sampled(path, lambda n: frame_indices(rule, views, n), threads=1)


def passes(path: Path, rule: Frames, views: int) -> tuple[int, int]:
    """(decoded frame count, decoding passes) of one read, counted by wrapping the decoder's frame generator."""
    calls = []
    plain = video._frames

    def counted(*args):
        calls.append(1)
        return plain(*args)

    video._frames = counted
    try:
        n, _, _ = read(path, rule, views)
    finally:
        video._frames = plain
    return n, len(calls)


def peak_mb(path: Path, rule: Frames, views: int) -> float:
    """How far one read raises the peak RSS (MB) of a fresh interpreter over its RSS after imports (Linux)."""
    out = subprocess.run([sys.executable, "-c", PEAK, str(path), rule.sampling, str(rule.count), str(rule.stride or 0),
                          str(views)], capture_output=True, text=True, check=True).stdout
    return int(out) / 1024


def row(path: Path, rule: Frames, views: int, repeat: int) -> dict:
    """One clip's medians: our read, our opening of the file alone, FFmpeg's decoding loop; passes, hint, peak."""
    runs = []
    for _ in range(repeat):
        opening = timed(lambda: av.open(str(path), metadata_errors="ignore").close())
        runs.append((*timed(lambda: read(path, rule, views)), *opening, *ffmpeg_seconds(path)))
    wall, cpu, open_wall, open_cpu, ffmpeg_wall, ffmpeg_cpu = (statistics.median(t) for t in zip(*runs, strict=True))
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        size = f"{stream.codec_context.width}x{stream.codec_context.height}"
    n, count = passes(path, rule, views)
    return {"clip": path.name, "size": size, "frames": n, "hint": video.count_hint(path), "passes": count,
            "ours": wall, "open": open_wall, "ffmpeg": ffmpeg_wall, "speed": ffmpeg_wall / wall,
            "loop": ffmpeg_wall / (wall - open_wall), "cpu": ffmpeg_cpu / (cpu - open_cpu), "peak": peak_mb(path, rule, views)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, default=REALDATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/evalharness-decode"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sampling", default="uniform", choices=["uniform", "dense", "all"])
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--views", type=int, default=1)
    args = parser.parse_args()
    rule = Frames(args.sampling, None if args.sampling == "all" else args.count,
                  args.stride if args.sampling == "dense" else None)
    real = sorted(p for p in args.videos.glob("*") if p.suffix in VIDEO_SUFFIXES) if args.videos.is_dir() else []
    rows = [row(path, rule, args.views, args.repeat) for path in real + generate(args.work)]
    print(f"rule {rule.as_dict()} x {args.views} views, one decoding thread, medians of {args.repeat}")
    print("| clip | size | frames | hint | passes | ours s | of which opening | ffmpeg loop s | speed ratio | loop speed "
          "ratio | loop CPU ratio | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clip']} | {r['size']} | {r['frames']} | {r['hint']} | {r['passes']} | {r['ours']:.3f} | "
              f"{r['open']:.3f} | {r['ffmpeg']:.3f} | {r['speed']:.2f} | {r['loop']:.2f} | {r['cpu']:.2f} | "
              f"{r['peak']:.1f} |")
    if real:
        ours, theirs = sum(r["ours"] for r in rows[:len(real)]), sum(r["ffmpeg"] for r in rows[:len(real)])
        print(f"\nreal clips together: speed ratio {theirs / ours:.2f}; second passes on "
              f"{sum(r['passes'] > 1 for r in rows[:len(real)])} of {len(real)}")


if __name__ == "__main__":
    main()
