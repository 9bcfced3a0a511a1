import shutil
import subprocess

import av
import numpy as np
import pytest
import torch

from evalharness import video
from evalharness.errors import DecodeError
from evalharness.protocol import Frames, Transform
from evalharness.sampling import frame_indices
from evalharness.video import count_hint, make_views, normalization, read_sampled

from helpers import decode_all


def harness_count(path) -> int:
    """The frame count the harness sees (what its sampling formulas take as n)."""
    return read_sampled(path, lambda n: np.zeros((1, 1), np.int64))[0]


def test_synthetic_video_counts_and_indexed_frames(synth30):
    path = synth30 / "videos" / "synth00003.mp4"
    everything = decode_all(path)
    picks = np.array([0, 5, 5, 17, 47])
    n, _indices, frames = read_sampled(path, lambda n: picks)
    assert n == len(everything) == 48 and np.array_equal(frames, everything[np.unique(picks)])


def picture_packets(path) -> int:
    """Packets that carry a picture: the container's count less AVI 'dropped frame' markers (1-byte packets)."""
    with av.open(str(path), metadata_errors="ignore") as container:
        return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size > 1)


def test_real_clips_frame_counts_equal_the_container_count(realdata, real_clips):
    for row in real_clips:
        path = realdata / "videos" / row["path"]
        n = harness_count(path)
        assert n == picture_packets(path), row["path"]
        assert count_hint(path) == n, row["path"]  # so every real clip is decoded once
        # the DivX AVIs from HMDB51 carry one dropped-frame marker, which FFmpeg decodes to no picture
        drops = 1 if "HMDB51" in row["dataset"] else 0
        assert n == int(row["nb_frames"]) - drops, row["path"]


@pytest.mark.parametrize("frames, views", [(Frames("dense", 16, 4), 3), (Frames("uniform", 8), 2)])
def test_real_clips_sampled_frames_equal_a_full_sequential_decode(realdata, real_clips, frames, views):
    for row in real_clips:
        path = realdata / "videos" / row["path"]
        n, indices, got = read_sampled(path, lambda n: frame_indices(frames, views, n), threads=2)
        everything = decode_all(path)
        assert n == len(everything)
        assert indices.tolist() == frame_indices(frames, views, n).tolist()
        assert np.array_equal(got, everything[np.unique(indices)]), row["path"]


def test_short_real_clip_repeats_its_last_frame(realdata):
    path = realdata / "videos" / "TrumanShow_wave_f_nm_np1_fr_med_26.avi"
    n, indices, _ = read_sampled(path, lambda n: frame_indices(Frames("dense", 16, 4), 1, n))
    assert n == 48 and indices[0, -1] == 47 and indices[0, 12] == 47 and indices[0, 11] == 44


@pytest.fixture()
def broken(tmp_path, synth30):
    good = (synth30 / "videos" / "synth00000.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    return tmp_path


@pytest.mark.parametrize("name, needle", [
    ("truncated.mp4", "not a readable video"),
    ("empty.mp4", "file is empty"),
    ("text.mp4", "not a readable video"),
    ("missing.mp4", "file not found"),
])
def test_broken_files_raise_a_one_line_error_naming_the_file(broken, name, needle):
    with pytest.raises(DecodeError) as info:
        read_sampled(broken / name, lambda n: frame_indices(Frames("uniform", 4), 1, n))
    message = str(info.value)
    assert name in message and needle in message and "\n" not in message


def test_views_are_resized_cropped_and_normalised():
    frames = np.zeros((3, 240, 320, 3), dtype=np.uint8)
    frames[:, :, :40] = 255  # a white band on the left edge
    indices = np.array([[0, 1], [1, 2]])
    transform = Transform(resize_short=112, crop=112)
    mean, std = normalization(transform, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    views = make_views(indices, frames, transform, 3, mean, std)
    assert views.shape == (6, 2, 3, 112, 112)
    # left crop sees the white band (normalised to (1 - 0.5) / 0.25 = 2), the right crop does not
    assert torch.isclose(views[0, 0, :, 50, 0], torch.tensor(2.0)).all()
    assert torch.isclose(views[2, 0, :, 50, -1], torch.tensor(-2.0)).all()
    fixed = Transform(resize_short=112, crop=None, normalize={"mean": [0, 0, 0], "std": [1, 1, 1]})
    mean, std = normalization(fixed, (0.5,) * 3, (0.25,) * 3)
    whole = make_views(indices[:1], frames, fixed, 1, mean, std)
    assert whole.shape == (1, 2, 3, 112, 149) and float(whole.max()) == 1.0


def test_frame_counts_equal_ffprobes_decoded_count(realdata, real_clips):
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("ffprobe not installed")
    for row in real_clips:
        path = realdata / "videos" / row["path"]
        out = subprocess.run([ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                              "stream=nb_read_frames", "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
        assert harness_count(path) == int(out.stdout.strip().rstrip(",")), row["path"]


def write_video(path, count, codec="mpeg4", size=(64, 48), options=None):
    """A small video whose frame i is a grey level and a bright column that both move with i (every frame differs)."""
    width, height = size
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(count):
            image = np.full((height, width, 3), (i * 7) % 200, np.uint8)
            image[:, i % width] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    """Videos whose container count is right (MP4), absent (Matroska, raw H.264) or wrong: an MP4 cut short, whose
    index at the front (faststart) still promises 60 frames, as a download cut off does; and (with the ffmpeg command)
    an MP4 trimmed without re-encoding, whose edit list hides the frames before the cut that its count includes."""
    folder = tmp_path_factory.mktemp("counts")
    cut = write_video(folder / "whole.mp4", 60, options={"movflags": "faststart"}).read_bytes()
    (folder / "cut.mp4").write_bytes(cut[: len(cut) * 6 // 10])
    videos = {"mp4": write_video(folder / "a.mp4", 45), "mkv": write_video(folder / "a.mkv", 37),
              "h264": write_video(folder / "a.h264", 30, codec="libx264"), "cut": folder / "cut.mp4"}
    if shutil.which("ffmpeg"):
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-ss", "0.6", "-i", videos["mp4"], "-c", "copy",
                        folder / "edit.mp4"], check=True)
        videos["edit"] = folder / "edit.mp4"
    return videos


RULES = [(Frames("uniform", 8), 2), (Frames("dense", 16, 4), 3), (Frames("dense", 4, 2), 3), (Frames("all"), 1)]


def passes_of(monkeypatch) -> list:
    """Counts the decoding passes of read_sampled (one entry a pass)."""
    calls, plain = [], video._frames
    monkeypatch.setattr(video, "_frames", lambda *args: calls.append(1) or plain(*args))
    return calls


def assert_like_a_full_decode(path, everything, monkeypatch) -> list[int]:
    """Each rule picks, from read_sampled, the frames a plain full decode has at the rule's indices for the true count;
    returns the decoding passes each took."""
    taken = []
    for frames, views in RULES:
        calls = passes_of(monkeypatch)
        n, indices, got = read_sampled(path, lambda n, frames=frames, views=views: frame_indices(frames, views, n))
        assert n == len(everything)
        assert indices.tolist() == frame_indices(frames, views, n).tolist()
        assert np.array_equal(got, everything[np.unique(indices)]), (path.name, frames)
        taken.append(len(calls))
    return taken


@pytest.mark.parametrize("name", ["mp4", "mkv", "h264", "cut", "edit"])
def test_sampled_frames_equal_a_full_decode_whatever_the_container_says(counted, name, monkeypatch):
    if name not in counted:
        pytest.skip("the ffmpeg command is not installed")
    path = counted[name]
    everything = decode_all(path)
    with av.open(str(path)) as container:
        declared = container.streams.video[0].frames
    assert declared == {"mp4": 45, "mkv": 0, "h264": 0, "cut": 60, "edit": 32}[name]
    assert len(everything) == {"mp4": 45, "mkv": 37, "h264": 30, "edit": 30}.get(name, len(everything)) < 60
    taken = assert_like_a_full_decode(path, everything, monkeypatch)
    # the hint (the index's pictures, or the packets' when there is no full index) is right: one pass. The cut file's
    # index promises too many: a second pass where the frames kept for 60 miss those picked for the true count
    assert taken == [1, 1, 1, 1] if name != "cut" else (2 in taken and taken[-1] == 1)


@pytest.mark.parametrize("error", [-20, -1, 1, 3, None])
def test_a_wrong_count_hint_costs_at_most_a_second_pass_never_other_frames(counted, error, monkeypatch):
    path = counted["mp4"]
    everything = decode_all(path)
    monkeypatch.setattr(video, "_count_hint", lambda *args: 0 if error is None else len(everything) + error)
    taken = assert_like_a_full_decode(path, everything, monkeypatch)
    assert set(taken) <= {1, 2} and (error is not None or set(taken) == {2})


class Tracked:
    """A decoded frame, wrapped to count how many are alive."""

    alive = peak = 0

    def __init__(self, frame):
        self.frame = frame
        Tracked.alive += 1
        Tracked.peak = max(Tracked.peak, Tracked.alive)

    def __del__(self):
        Tracked.alive -= 1


def test_decoding_holds_one_frame_at_a_time_and_converts_only_the_kept_ones(tmp_path, monkeypatch):
    path = write_video(tmp_path / "long.mp4", 300)
    plain, rgb, converted = video._frames, video._rgb, []
    monkeypatch.setattr(video, "_frames", lambda *args: map(Tracked, plain(*args)))
    monkeypatch.setattr(video, "_rgb", lambda tracked, *args: converted.append(1) or rgb(tracked.frame, *args))
    Tracked.alive = Tracked.peak = 0
    n, indices, frames = read_sampled(path, lambda n: frame_indices(Frames("dense", 8, 4), 3, n))
    # memory holds the kept RGB frames and at most two decoded ones, whatever the length (all 300 before)
    assert n == 300 and Tracked.peak <= 2
    assert len(converted) == len(frames) == len(np.unique(indices)) == 24


def test_a_frame_size_change_mid_stream_is_an_error_naming_the_frame(tmp_path):
    path = tmp_path / "joined.h264"
    first = write_video(tmp_path / "a.h264", 10, codec="libx264").read_bytes()
    path.write_bytes(first + write_video(tmp_path / "b.h264", 10, codec="libx264", size=(32, 24)).read_bytes())
    with pytest.raises(DecodeError, match=r"joined.h264: frame 1[0-9] is 32x24, not 64x48 like the frames before it"):
        read_sampled(path, lambda n: frame_indices(Frames("uniform", 4), 1, n))
