"""Sliding snippets: the card keys, the integer formulas (hand-computed), and the streaming reader against an
independent PyAV demux of generated and real videos, in memory bounded by one window."""

import shutil
import subprocess
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from evalharness import video
from evalharness.cards import parse_protocol, shipped_cards
from evalharness.errors import DecodeError, ProtocolError
from evalharness.protocol import Frames
from evalharness.sampling import frame_indices, snippet_geometry, snippet_indices, snippet_windows
from evalharness.video import read_snippets

from helpers import decode_all, demuxed, write_timed

I3D = Frames("sliding", 16, 1, window_frames=16, overlap=0.75)  # ActionFormer's THUMOS features: 16 frames, hop 4
THUMOS = Frames("sliding", 8, window_seconds=0.5, overlap=0.75)  # TWLV-I's THUMOS14 geometry
ANET = Frames("sliding", 8, window_seconds=0.5, overlap=0.5)  # TWLV-I's ActivityNet geometry


def sliding_card(**frames) -> dict:
    card = yaml.safe_load(Path(str(shipped_cards()["synthetic-motion"])).read_text())
    card["frames"] = {"sampling": "sliding", "count": 16, **frames}
    return card


# ---- the card ----

def test_a_sliding_card_hashes_its_window_keys_with_defaults_filled():
    p = parse_protocol(sliding_card(stride=1, window_frames=16, overlap=0.75))
    assert p.frames == I3D
    assert p.to_dict()["frames"] == {"sampling": "sliding", "count": 16, "stride": 1, "window_frames": 16, "overlap": 0.75}
    implicit = parse_protocol(sliding_card(window_seconds=0.5))
    explicit = parse_protocol(sliding_card(window_seconds=0.50, overlap=0))
    assert implicit.extraction_hash == explicit.extraction_hash
    assert implicit.to_dict()["frames"] == {"sampling": "sliding", "count": 16, "window_seconds": 0.5, "overlap": 0.0}
    assert parse_protocol(sliding_card(window_seconds=0.5, overlap=0.5)).extraction_hash != implicit.extraction_hash
    assert Frames("dense", 16, 4).as_dict() == {"sampling": "dense", "count": 16, "stride": 4}  # no new keys elsewhere


@pytest.mark.parametrize("frames, needle", [
    ({}, "'frames.window_frames' or 'frames.window_seconds' (exactly one) is required with sampling 'sliding', got neither"),
    ({"window_frames": 16, "window_seconds": 0.5}, "got window_frames and window_seconds"),
    ({"window_frames": 0}, "'frames.window_frames' must be an integer in [1, 1000000], got 0"),
    ({"window_frames": 16.0}, "'frames.window_frames' must be an integer"),
    ({"window_frames": 15, "stride": 1}, "'frames.window_frames' (15) is shorter than the span of 16 frames at stride 1 (16)"),
    ({"window_seconds": 0}, "'frames.window_seconds' must be a number in (0, 3600], got 0"),
    ({"window_seconds": "0.5"}, "'frames.window_seconds' must be a number in (0, 3600], got '0.5'"),
    ({"window_seconds": float("nan")}, "'frames.window_seconds' must be a number"),
    ({"window_frames": 16, "overlap": 1}, "'frames.overlap' must be a number in [0, 1), got 1"),
    ({"window_frames": 16, "overlap": -0.25}, "'frames.overlap' must be a number in [0, 1), got -0.25"),
    ({"window_frames": 16, "overlap": True}, "'frames.overlap' must be a number in [0, 1), got True"),
    ({"window_frames": 16, "stride": 0}, "'frames.stride' must be an integer in [1, 1024], got 0"),
    ({"window_frames": 16, "hop": 4}, "'frames.hop' is unknown"),
])
def test_bad_sliding_keys_are_one_line_errors_naming_the_key(frames, needle):
    with pytest.raises(ProtocolError) as info:
        parse_protocol(sliding_card(**frames))
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("sampling, key", [("dense", "window_frames"), ("uniform", "overlap"), ("all", "window_seconds")])
def test_window_keys_are_meaningless_with_other_samplings(sampling, key):
    card = sliding_card()
    card["frames"] = {"sampling": sampling, **({"count": 8} if sampling != "all" else {}),
                      **({"stride": 2} if sampling == "dense" else {}), key: 1}
    with pytest.raises(ProtocolError, match=f"'frames.{key}' is meaningless with sampling '{sampling}'"):
        parse_protocol(card)


def test_a_sliding_card_has_one_temporal_view_and_no_clip_indices():
    card = sliding_card(window_frames=16)
    card["views"] = {"temporal": 2, "spatial": 1}
    with pytest.raises(ProtocolError, match=r"'views\.temporal' must be 1 with sampling 'sliding'"):
        parse_protocol(card)
    with pytest.raises(ProtocolError, match="use snippet_indices"):
        frame_indices(I3D, 1, 100)
    with pytest.raises(ProtocolError, match="sampling 'dense' has no snippets"):
        snippet_indices(100, Frames("dense", 16, 4))


# ---- the formulas, hand-computed ----

def test_window_and_hop_hand_computed():
    # W = round_half_up(seconds x fps), H = W - round_half_up(W x overlap)
    assert snippet_geometry(I3D) == (16, 4)  # 16 x 0.75 = 12
    assert snippet_geometry(THUMOS, Fraction(30)) == (15, 4)  # 15; 15 x 0.75 = 11.25 -> 11
    assert snippet_geometry(THUMOS, Fraction(25)) == (13, 3)  # 12.5 -> 13; 9.75 -> 10
    assert snippet_geometry(THUMOS, Fraction(30000, 1001)) == (15, 4)  # 14.985 -> 15
    assert snippet_geometry(ANET, Fraction(30)) == (15, 7)  # 7.5 -> 8 (half up)
    assert snippet_geometry(ANET, Fraction(25)) == (13, 6)  # 6.5 -> 7
    assert snippet_geometry(Frames("sliding", 1, window_seconds=0.1, overlap=0.0), Fraction(30)) == (3, 3)  # 1/10 exact
    assert snippet_geometry(Frames("sliding", 1, window_frames=1, overlap=0.5)) == (1, 1)  # H at least 1
    assert snippet_geometry(Frames("sliding", 4, window_frames=4, overlap=0.75)) == (4, 1)


def test_windows_and_indices_hand_computed():
    # I3D: n = 40 -> T = 1 + (40 - 16) // 4 = 7 windows [4t, 4t + 15]; 41..43 frames drop their tail, 44 adds one
    assert snippet_windows(40, I3D).tolist() == [[4 * t, 4 * t + 15] for t in range(7)]
    assert [len(snippet_windows(n, I3D)) for n in (41, 42, 43, 44)] == [7, 7, 7, 8]
    assert snippet_indices(40, I3D)[6].tolist() == list(range(24, 40))
    # 30 fps, 0.5 s, 8 frames spread evenly over W = 15 (segment centres (2j + 1) x 15 // 16), hop 4
    assert snippet_indices(23, THUMOS, Fraction(30)).tolist() == [[0, 2, 4, 6, 8, 10, 12, 14], [4, 6, 8, 10, 12, 14, 16, 18],
                                                                  [8, 10, 12, 14, 16, 18, 20, 22]]
    # 25 fps: W = 13, H = 3, centres (2j + 1) x 13 // 16 = 0, 2, 4, 5, 7, 8, 10, 12
    assert snippet_windows(20, THUMOS, Fraction(25)).tolist() == [[0, 12], [3, 15], [6, 18]]
    assert snippet_indices(20, THUMOS, Fraction(25))[1].tolist() == [3, 5, 7, 8, 10, 11, 13, 15]
    # a strided clip is centred in its window: 4 frames at stride 2 (span 7) in W = 15 start at (15 - 7) // 2 = 4
    strided = Frames("sliding", 4, 2, window_seconds=0.5, overlap=0.0)
    assert snippet_indices(30, strided, Fraction(30)).tolist() == [[4, 6, 8, 10], [19, 21, 23, 25]]
    # more frames than the window holds: segment centres repeat one, (2j + 1) x 15 // 32
    many = Frames("sliding", 16, window_frames=15, overlap=0.0)
    assert snippet_indices(15, many).tolist() == [[0, 1, 2, 3, 4, 5, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14]]


def test_edge_cases():
    # shorter than a window: one snippet over what there is, the last frame repeated
    assert snippet_windows(5, I3D).tolist() == [[0, 4]]
    assert snippet_indices(5, I3D).tolist() == [[0, 1, 2, 3, 4] + [4] * 11]
    assert snippet_indices(1, I3D).tolist() == [[0] * 16]
    # exactly one window
    assert snippet_windows(16, I3D).tolist() == [[0, 15]] and snippet_indices(16, I3D).tolist() == [list(range(16))]
    # overlap 0: windows side by side, the tail (frames 8, 9) feeds nothing
    side = Frames("sliding", 2, 3, window_frames=4, overlap=0.0)
    assert snippet_windows(10, side).tolist() == [[0, 3], [4, 7]] and snippet_indices(10, side).tolist() == [[0, 3], [4, 7]]
    # hop 1: every start
    every = Frames("sliding", 4, 1, window_frames=4, overlap=0.75)
    assert snippet_windows(6, every).tolist() == [[0, 3], [1, 4], [2, 5]]
    assert snippet_indices(6, every).dtype == np.int32


@pytest.mark.parametrize("n, frames, fps, needle", [
    (0, I3D, None, "no decodable frames"),
    (30, THUMOS, None, "no average frame rate to turn 0.5 s into frames"),
    (30, THUMOS, Fraction(0), "no average frame rate"),
    (30, Frames("sliding", 1, window_seconds=0.01), Fraction(30), "a window of 0.01 s is under half a frame at 30 fps"),
    (30, Frames("sliding", 16, 1, window_seconds=0.5), Fraction(25),
     "a window of 13 frames (0.5 s at 25 fps) is shorter than 16 frames at stride 1 (span 16)"),
])
def test_impossible_windows_are_decode_errors(n, frames, fps, needle):
    with pytest.raises(DecodeError) as info:
        snippet_indices(n, frames, fps)
    assert needle in str(info.value)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 3000), window=st.integers(1, 64), quarters=st.integers(0, 3), count=st.integers(1, 32),
       strided=st.booleans())
def test_windows_are_every_full_window_at_multiples_of_the_hop(n, window, quarters, count, strided):
    stride = max(1, (window - 1) // max(1, count - 1)) if strided else None
    count = min(count, window) if strided else count
    frames = Frames("sliding", count, stride, window_frames=window, overlap=quarters / 4)
    _, hop = snippet_geometry(frames)
    full = [[s, s + window - 1] for s in range(0, n, hop) if s + window <= n]
    assert snippet_windows(n, frames).tolist() == (full or [[0, n - 1]])
    got = snippet_indices(n, frames)
    assert got.shape == (len(full) or 1, count) and got.min() >= 0 and got.max() < n
    assert (np.diff(got, axis=1) >= 0).all()
    if full:
        assert (got >= np.array(full)[:, :1]).all() and (got <= np.array(full)[:, 1:]).all()


# ---- the streaming reader against an independent demux ----

def assert_follows_the_formulas(path: Path, frames: Frames, pixels: bool = True) -> int:
    """read_snippets yields snippet_indices / snippet_windows for the decoded count, centre times from the demuxed
    PTS and (with `pixels`) the frames a full decode has at those indices; returns the number of snippets."""
    times, fps = demuxed(path)
    n = len(times)
    snippets = list(read_snippets(path, frames))
    assert np.array_equal(np.stack([s.indices for s in snippets]), snippet_indices(n, frames, fps)), path.name
    assert [list(s.window) for s in snippets] == snippet_windows(n, frames, fps).tolist()
    assert [s.centre for s in snippets] == [float((times[a] + times[b]) / 2 - times[0]) for a, b in
                                           snippet_windows(n, frames, fps).tolist()]
    if pixels:
        everything = decode_all(path)
        for s in snippets:
            assert np.array_equal(s.frames, everything[np.unique(s.indices)])
    return len(snippets)


@pytest.fixture(scope="module")
def timed(tmp_path_factory) -> dict[str, Path]:
    """Constant 25 fps (MP4), variable rate starting at 0.7 s (Matroska, ms ticks), B-frames reordered (H.264 in
    MP4 starting at 2 s), and a short one."""
    folder = tmp_path_factory.mktemp("timed")
    rng = np.random.default_rng(0)
    gaps = rng.choice([20, 33, 40, 67], size=90)
    return {
        "cfr": write_timed(folder / "cfr.mp4", list(range(70)), Fraction(1, 25)),
        "vfr": write_timed(folder / "vfr.mkv", (700 + np.concatenate([[0], np.cumsum(gaps[:-1])])).tolist(),
                           Fraction(1, 1000)),
        "bframes": write_timed(folder / "bframes.mp4", list(range(50, 110)), Fraction(1, 25), codec="libx264"),
        "short": write_timed(folder / "short.mp4", list(range(9)), Fraction(1, 25)),
    }


@pytest.mark.parametrize("name", ["cfr", "vfr", "bframes", "short"])
@pytest.mark.parametrize("frames", [I3D, THUMOS, ANET, Frames("sliding", 4, 3, window_frames=10, overlap=0.0),
                                    Frames("sliding", 3, 2, window_frames=5, overlap=0.8),  # hop 1
                                    Frames("sliding", 12, window_frames=7, overlap=0.5)])  # more frames than the window
def test_generated_videos_yield_the_formulas_and_the_demuxed_times(timed, name, frames):
    assert assert_follows_the_formulas(timed[name], frames) >= 1


def test_the_variable_rate_video_times_are_its_own_not_the_average_rate(timed):
    times, fps = demuxed(timed["vfr"])
    assert times[0] == Fraction(7, 10) and len({b - a for a, b in pairwise(times)}) == 4
    first = next(read_snippets(timed["vfr"], I3D))
    assert first.centre == float((times[15] - times[0]) / 2) != float(Fraction(15, 2) / fps)


@pytest.mark.parametrize("threads", [1, 0])
def test_a_video_cut_short_yields_the_snippets_of_what_decodes(tmp_path, threads):
    whole = write_timed(tmp_path / "whole.mp4", list(range(80)), Fraction(1, 25), options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    decoded = 0
    with av.open(str(cut)) as container, pytest.raises(av.FFmpegError):
        for _ in container.decode(container.streams.video[0]):
            decoded += 1
    got, error = [], None
    try:
        got.extend(read_snippets(cut, I3D, threads))
    except DecodeError as exc:
        error = str(exc)
    # the snippets of the frames before the cut; single-threaded decoding then names the file (frame threads end quietly)
    assert 16 <= decoded < 80 and [list(s.window) for s in got] == snippet_windows(decoded, I3D).tolist()
    assert error == f"{cut}: decoding failed after {decoded} frames (Invalid data found when processing input)" or (
        threads == 0 and error is None)


@pytest.mark.parametrize("name, needle", [
    ("empty.mp4", "file is empty"),
    ("text.mp4", "not a readable video"),
    ("missing.mp4", "file not found"),
])
def test_unreadable_files_raise_a_one_line_error_naming_the_file(tmp_path, name, needle):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(DecodeError) as info:
        list(read_snippets(tmp_path / name, I3D))
    assert name in str(info.value) and needle in str(info.value) and "\n" not in str(info.value)


def test_a_window_the_video_cannot_hold_and_a_size_change_name_the_file(tmp_path, timed):
    with pytest.raises(DecodeError, match=r"cfr.mp4: a window of 13 frames \(0.5 s at 25 fps\) is shorter than 16"):
        next(read_snippets(timed["cfr"], Frames("sliding", 16, 1, window_seconds=0.5)))
    joined = tmp_path / "joined.ts"
    first = write_timed(tmp_path / "a.ts", list(range(10)), Fraction(1, 25)).read_bytes()
    joined.write_bytes(first + write_timed(tmp_path / "b.ts", list(range(10)), Fraction(1, 25), size=(16, 12)).read_bytes())
    with pytest.raises(DecodeError, match=r"joined.ts: frame 1[0-9] is 16x12, not 32x24 like the frames before it"):
        list(read_snippets(joined, Frames("sliding", 2, 1, window_frames=4, overlap=0.5)))
    # a raw stream has no timestamps, so no snippet times: refused rather than guessed from the rate
    raw = write_timed(tmp_path / "raw.h264", list(range(10)), Fraction(1, 25), codec="libx264")
    with pytest.raises(DecodeError, match=r"raw\.h264: frame 0 has no presentation timestamp"):
        next(read_snippets(raw, Frames("sliding", 2, 1, window_frames=4)))
    with pytest.raises(DecodeError, match="not a folder of frames"):
        next(read_snippets(tmp_path, I3D))


# ---- real clips ----

REAL = {"SOX5yA1l24A.mp4": 332, "mmaction2_test.avi": 164, "imageio_realshort.mp4": 36}


@pytest.mark.parametrize("frames", [THUMOS, I3D])
def test_real_clips_follow_the_formulas_over_ffmpegs_count_and_timestamps(realdata, frames):
    for name, count in REAL.items():
        path = realdata / "videos" / name
        times, fps = demuxed(path)
        assert len(times) == count
        pixels = frames is THUMOS and name != "SOX5yA1l24A.mp4"
        assert assert_follows_the_formulas(path, frames, pixels) == len(snippet_windows(count, frames, fps))


def test_real_clips_snippet_times_are_ffprobes(realdata):
    """FFmpeg's own command-line tool (not our PyAV) decodes each real MP4 clip: its frame count gives the windows and
    its frames' presentation times (its best-effort timestamps) the centres, to its printed 6 decimals. (The AVI
    clip's frames carry no presentation time in FFmpeg, which falls back on decoding times there.)"""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("ffprobe not installed")
    for name in (name for name in REAL if name.endswith(".mp4")):
        path = realdata / "videos" / name
        out = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
                              "frame=best_effort_timestamp_time",
                              "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
        pts = [float(line.strip().rstrip(",")) for line in out.splitlines() if line.strip()]
        rate = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=avg_frame_rate",
                               "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
        windows = snippet_windows(len(pts), THUMOS, Fraction(rate.strip().rstrip(",")))
        snippets = list(read_snippets(path, THUMOS))
        assert [list(s.window) for s in snippets] == windows.tolist(), name
        expected = [(pts[a] + pts[b]) / 2 - pts[0] for a, b in windows.tolist()]
        assert np.allclose([s.centre for s in snippets], expected, rtol=0, atol=1e-6), name


# ---- memory ----

class Held:
    """A decoded frame, wrapped to count how many are alive (attributes pass through to it)."""

    alive = peak = 0

    def __init__(self, frame):
        self.frame = frame
        Held.alive += 1
        Held.peak = max(Held.peak, Held.alive)

    def __getattr__(self, name):
        return getattr(self.frame, name)

    def __del__(self):
        Held.alive -= 1


class Measured(video.deque):
    """The reader's deques, recording the longest any of them grew."""

    longest = 0

    def append(self, item):
        super().append(item)
        Measured.longest = max(Measured.longest, len(self))


def test_a_long_video_holds_at_most_one_window_and_converts_only_fed_frames(tmp_path, monkeypatch):
    path = write_timed(tmp_path / "long.mp4", list(range(4000)), Fraction(1, 25), size=(16, 16))
    frames = Frames("sliding", 4, 2, window_frames=24, overlap=0.5)  # W = 24, H = 12, frames 9, 11, 13, 15 fed
    plain, rgb, converted = video._frames, video._rgb, []
    monkeypatch.setattr(video, "_frames", lambda *args: map(Held, plain(*args)))
    monkeypatch.setattr(video, "_rgb", lambda held, *args: converted.append(1) or rgb(held.frame, *args))
    monkeypatch.setattr(video, "deque", Measured)
    Held.alive = Held.peak = Measured.longest = 0
    count = sum(1 for _ in read_snippets(path, frames))
    expected = snippet_indices(4000, frames)
    assert count == len(expected) == 1 + (4000 - 24) // 12
    # at most one window (the times of its 24 frames; its fed decoded frames), never the video; 4 of every 12 frames
    # are fed, each converted once, and the tail's fed frames (no full window) never
    assert Measured.longest <= 24 and Held.peak <= 24
    assert len(converted) == len(np.unique(expected)) == 4 * count
