import numpy as np
import pytest
import torch

from evalharness.backbones import build_backbone
from evalharness.backbones.builtin import motion_histogram
from evalharness.errors import HarnessError


def test_registry_errors_name_the_model():
    with pytest.raises(HarnessError, match="model 'nope:x': unknown model prefix"):
        build_backbone("nope:x")
    with pytest.raises(HarnessError, match="unknown builtin"):
        build_backbone("builtin:resnet")


@pytest.mark.parametrize("name, dim", [("builtin:pixels", 192), ("builtin:stats", 75)])
def test_shapes(name, dim):
    model = build_backbone(name)
    clips = torch.randn(3, 8, 3, 64, 64)
    assert model.embed(clips).shape == (3, dim)
    maps = model.dense(clips[0])
    assert maps.shape[:3] == (8, 8, 8) and model.dense_stride == 8
    assert model.config()["input"]["mean"] == [0.485, 0.456, 0.406]


def moving_square(step: int) -> torch.Tensor:
    frames = torch.full((8, 24, 24), 0.5)
    for t in range(8):
        x = 4 + step * t if step > 0 else 18 + step * t
        frames[t, 8:14, x:x + 5] = 1.0
    return frames


def test_block_matching_motion_sees_direction_and_speed():
    right, left, fast = (motion_histogram(moving_square(step)) for step in (1, -1, 2))
    # bins: magnitude-major (3) x direction (8), direction bin 0 = +x, bin 4 = -x
    assert int(torch.argmax(right[:24]) % 8) == 0
    assert int(torch.argmax(left[:24]) % 8) == 4
    assert int(torch.argmax(right[:24]) // 8) == 1 and int(torch.argmax(fast[:24]) // 8) == 1
    assert float(fast[24]) > float(right[24]) * 1.0 - 1e-6


def test_pixels_ignores_frame_order_and_stats_does_not():
    torch.manual_seed(0)
    clip = torch.randn(1, 8, 3, 32, 32)
    reverse = clip.flip(1)
    pixels, stats = build_backbone("builtin:pixels"), build_backbone("builtin:stats")
    assert torch.allclose(pixels.embed(clip), pixels.embed(reverse), atol=1e-6)
    a = torch.zeros(1, 8, 3, 64, 64)
    for t in range(8):
        a[0, t, :, 20:30, 5 + 3 * t:15 + 3 * t] = 2.0
    assert not torch.allclose(stats.embed(a), stats.embed(a.flip(1)), atol=1e-3)
    assert np.isfinite(stats.embed(clip).numpy()).all()
