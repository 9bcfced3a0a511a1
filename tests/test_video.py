import shutil
import subprocess

import av
import numpy as np
import pytest
import torch

from evalharness.errors import DecodeError
from evalharness.protocol import Frames, Transform
from evalharness.sampling import frame_indices
from evalharness.video import make_views, normalization, read_sampled

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
