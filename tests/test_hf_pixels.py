"""An `hf:` checkpoint sees the pixels its own processor gives it: VideoMAE, X-CLIP and CLIP.

A card with `normalize: model` and the processor's geometry (short side to 224, centre crop 224, the processor's
filter) builds views as `extract` does: `read_sampled`, then `make_views` with the mean and std the `hf:` adapter
reads from what the processor's own `save_pretrained` wrote. The processor, set as its hub checkpoint's config sets
it, runs on the same decoded frames (torchvision backend, the default of transformers 5; PIL, the only one of
transformers 4, `*Pil` in 5, gives the same numbers).

Measured (transformers 5.24, torch 2.14, Pillow 13) on 1280x720 (generated), 640x360 and 432x240 (real) frames,
|ours - theirs| in 0-255 units of the input (normalised units x std x 255):

    filter                       largest (normalised)  over 1.5   mean   where it comes from
    bilinear (VideoMAE, X-CLIP)  1.00 (0.0174)         none       0.29   the processor rounds its resized image to
                                                                         uint8 (0.5) and PIL resamples in fixed point
    bicubic (CLIP)               7.0 (0.0995)          0.02 %     0.30   besides: PIL (and torchvision on uint8) clamp
                                                                         to 0-255 between the horizontal and the
                                                                         vertical pass, cutting the kernel's overshoot
                                                                         at saturated edges; ours filters floats once

The filters are one family (torch's antialiased bilinear / bicubic is PIL's, a = -0.5) and both sides crop at
floor((H - crop) / 2). The rule that differs is the long side: ours rounds half up, the processor floors
(`get_resize_output_image_size`, as torchvision's Resize), so we resize 320x240, 340x256, 560x240 and 854x480
frames one pixel longer and the content lies up to 0.9 source pixels apart at the crop's far edge: largest 60-187,
mean 1.9-5.4 on those frames; with the processor's floor in our resize, within the tolerances above.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from evalharness import video
from evalharness.backbones import hf
from evalharness.datasets.synthetic import encode_video
from evalharness.protocol import Frames, Transform
from evalharness.sampling import crop_offsets, frame_indices, resized_size
from evalharness.video import make_views, normalization, read_sampled

from tiny_models import _char_tokenizer

transformers = pytest.importorskip("transformers")

SIZE = 224
FILTERS = {"videomae": "bilinear", "x_clip": "bilinear", "clip": "bicubic"}  # each hub config's `resample`
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
# Tolerances, 0-255 units. ROUNDING: one uint8 step of the processor's rounding and fixed-point slack, measured 1.00.
# LARGEST bicubic: where the processor clamps between its passes, the error is at most the kernel's deepest negative
# tap, 255 x 0.074 = 19 (a = -0.5 at x = 4/3), plus rounding; measured 10.7 (7.6 on real frames). Such pixels are
# few (SHARE, measured 0.06 % at most), so another filter (4-30 % over ROUNDING) still fails.
ROUNDING = 1.5
LARGEST = {"bilinear": ROUNDING, "bicubic": 20.0}
SHARE = 0.001
MEAN = 0.5  # measured 0.21-0.30
# Frames of each size: generated (height, width), or real clips and frame folders under ../shared/realdata.
SOURCES = {
    "generated-1280x720": (720, 1280),
    "generated-320x240": (240, 320),
    "hmdb-432x240": "videos/TrumanShow_wave_f_nm_np1_fr_med_26.avi",
    "davis-854x480": "davis2016/JPEGImages/480p/blackswan",
}


def generated_frames(height: int, width: int, count: int = 3) -> np.ndarray:
    """Colour ramps, noise and saturated blocks (sharp edges, where a shifted crop or another filter shows)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    frames = []
    for t in range(count):
        frame = np.stack([128 + 100 * np.sin(9 * x + t), 128 + 100 * np.cos(7 * y - t), 255 * (x + y) / 2], -1)
        frame += rng.normal(0, 12, frame.shape)
        for _ in range(12):
            top, left = rng.integers(0, height * 7 // 8), rng.integers(0, width * 7 // 8)
            frame[top:top + height // 8, left:left + width // 8] = rng.choice([0, 255], 3)
        frames.append(frame.clip(0, 255).astype(np.uint8))
    return np.stack(frames)


@functools.cache
def decoded(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Indices and unique frames as extraction reads them (3 uniform frames, one view), decoded once per file."""
    _, indices, frames = read_sampled(path, lambda n: frame_indices(Frames("uniform", 3), 1, n))
    return indices, frames


@pytest.fixture
def clip(request, tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """The decoded frames of the source the test names (real ones skip when ../shared/realdata is absent)."""
    source = SOURCES[request.param]
    if isinstance(source, tuple):
        path = tmp_path_factory.getbasetemp() / f"{request.param}.mp4"
        if not path.exists():
            encode_video(path, generated_frames(*source), fps=25)
    else:
        path = request.getfixturevalue("realdata") / source
    return decoded(path)


def hub_processor(kind: str, backend: str, folder: Path):
    """The processor a hub checkpoint's config builds: MCG-NJU/videomae-base (class defaults: short side 224, crop
    224, bilinear, 1/255; ImageNet mean and std, not the class's 0.5), microsoft/xclip-base-patch32 (the same image
    processor in an XCLIPProcessor, with a tokenizer) and openai/clip-vit-base-patch32 (class defaults: bicubic,
    CLIP mean and std). `backend` "" is the class the config names, "Pil" its PIL variant in transformers 5."""
    name = ("CLIPImageProcessor" if kind == "clip" else "VideoMAEImageProcessor") + backend
    if not hasattr(transformers, name):
        pytest.skip(f"transformers {transformers.__version__} has no {name}")
    image = getattr(transformers, name)(**({} if kind == "clip" else IMAGENET))
    return transformers.XCLIPProcessor(image_processor=image, tokenizer=_char_tokenizer(folder)) if kind == "x_clip" else image


def adapter_normalization(processor, folder: Path, transform: Transform) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as extraction gets them: saved by the processor (transformers 5 nests X-CLIP's in
    processor_config.json), read by the two functions `hf.build` reads them with, then the card's `normalization`."""
    processor.save_pretrained(folder)
    spec = f"hf:{folder}"
    mean, std = hf._normalization(hf._preprocessing(folder, spec), spec)
    return normalization(transform, mean, std)


def processor_views(processor, indices: np.ndarray, frames: np.ndarray) -> torch.Tensor:
    """The processor's pixel_values for the frames of the one view, in our (views, frames, 3, h, w) layout."""
    picked = frames[np.searchsorted(np.unique(indices), indices[0])]
    return processor(list(picked), return_tensors="pt").pixel_values.reshape(1, len(picked), 3, SIZE, SIZE)


def compare(kind: str, backend: str, clip: tuple[np.ndarray, np.ndarray], folder: Path):
    """Our views and the processor's for one clip, with the card's transform and the adapter's mean and std."""
    transform = Transform(SIZE, SIZE, FILTERS[kind], "model")
    processor = hub_processor(kind, backend, folder)
    mean, std = adapter_normalization(processor, folder, transform)
    return make_views(*clip, transform, 1, mean, std), processor_views(processor, *clip), transform, mean, std


@dataclass(frozen=True)
class Gap:
    """|ours - theirs|: largest in normalised units, then in 0-255 units of the input, the share of values more
    than ROUNDING apart, and the mean."""

    normalised: float
    largest: float
    share: float
    mean: float

    def excess(self, interpolation: str) -> float:
        """The largest ratio of a measure to its tolerance: at most 1 when within."""
        return max(self.largest / LARGEST[interpolation], self.share / SHARE, self.mean / MEAN)


def gap(ours: torch.Tensor, theirs: torch.Tensor, std: torch.Tensor) -> Gap:
    diff = (ours - theirs).abs()
    pixels = diff * std * 255
    return Gap(float(diff.max()), float(pixels.max()), float((pixels > ROUNDING).float().mean()), float(pixels.mean()))


def processor_long_side(height: int, width: int, short: int, *_) -> tuple[int, int]:
    """`get_resize_output_image_size`'s size: the long side scaled and floored (int())."""
    return (short, short * width // height) if height <= width else (short * height // width, short)


CASES = [(kind, "", source) for kind in FILTERS for source in ("generated-1280x720", "hmdb-432x240")]
CASES += [("videomae", "Pil", "generated-1280x720"), ("clip", "Pil", "generated-1280x720")]


@pytest.mark.parametrize(("kind", "backend", "clip"), CASES, indirect=["clip"])
def test_our_views_are_the_processors_pixels(kind, backend, clip, tmp_path):
    ours, theirs, transform, mean, std = compare(kind, backend, clip, tmp_path)
    found, tolerance = gap(ours, theirs, std), LARGEST[transform.interpolation]
    assert found.largest <= tolerance and found.normalised <= tolerance / 255 / float(std.min()), found
    assert found.excess(transform.interpolation) <= 1, found
    other = Transform(SIZE, SIZE, "bicubic" if transform.interpolation == "bilinear" else "bilinear", "model")
    half = torch.full_like(mean, 0.5)
    wrong = {  # each at least 4 times past a tolerance, so the checks above can fail
        "crop 2 px to the right": gap(ours[..., 2:], theirs[..., :-2], std),
        "channels swapped": gap(ours.flip(2), theirs, std),
        "mean and std not applied": gap(ours * std + mean, theirs, std),
        "mean and std 0.5 (the VideoMAE class default)": gap((ours * std + mean - half) / half, theirs, std),
        f"{other.interpolation} resize": gap(make_views(*clip, other, 1, mean, std), theirs, std),
    }
    for name, bad in wrong.items():
        assert bad.excess(transform.interpolation) >= 4, (name, bad)


@pytest.mark.parametrize("clip", ("generated-320x240", "davis-854x480"), indirect=True)
@pytest.mark.parametrize("kind", ("videomae", "clip"))
def test_the_long_side_rounding_is_the_one_rule_that_differs(kind, clip, tmp_path, monkeypatch):
    """Where 224 x long / short has a fraction of one half or more, we resize one pixel longer than the processor:
    far outside the tolerances; with the processor's floor in our resize, within them."""
    ours, theirs, transform, _, std = compare(kind, "", clip, tmp_path)
    assert gap(ours, theirs, std).excess(transform.interpolation) >= 4
    monkeypatch.setattr(video, "resized_size", processor_long_side)
    ours, theirs, transform, _, std = compare(kind, "", clip, tmp_path)
    assert gap(ours, theirs, std).excess(transform.interpolation) <= 1


# (height, width) of real clips' frames -> the processor's long side at short side 224
LONG_SIDES = {(240, 320): 298, (256, 340): 297, (240, 560): 522, (240, 432): 403, (360, 640): 398, (480, 854): 398,
              (720, 1280): 398, (1080, 1920): 398, (320, 240): 298}


@pytest.mark.parametrize("backend", ("", "Pil"))
@pytest.mark.parametrize("kind", ("videomae", "clip"))
def test_resize_sizes_and_crop_offsets_against_the_processor(kind, backend, tmp_path):
    """The processor floors the long side where we round half up (one pixel longer where the fraction is one half or
    more: 320x240, 340x256, 560x240, 854x480), and both crop at floor((H - 224) / 2) of either size."""
    processor = hub_processor(kind, backend, tmp_path)
    rng = np.random.default_rng(0)
    for (height, width), long_side in LONG_SIDES.items():
        resized = processor(np.zeros((height, width, 3), np.uint8), do_center_crop=False, return_tensors="pt").pixel_values
        theirs, ours = tuple(resized.shape[-2:]), resized_size(height, width, SIZE)
        exact = SIZE * max(height, width) / min(height, width)
        assert theirs == processor_long_side(height, width, SIZE) and max(theirs) == long_side == int(exact)
        assert min(ours) == SIZE and max(ours) == int(exact + 0.5)
        for size in {ours, theirs}:
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            crop = processor(image, do_resize=False, do_rescale=False, do_normalize=False, return_tensors="pt").pixel_values
            top, left = crop_offsets(*size, SIZE, 1)[0]
            expected = torch.from_numpy(image[top:top + SIZE, left:left + SIZE]).permute(2, 0, 1).float()
            assert torch.equal(crop.reshape(3, SIZE, SIZE).float(), expected), (size, top, left)
