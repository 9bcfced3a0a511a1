"""What software and hardware produced a file or a score, recorded so numbers can be traced."""

from __future__ import annotations

import platform
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from .version import __version__


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def environment(device: str = "cpu", dtype: str = "float32", **extra) -> dict:
    """Versions of Python and the libraries that decide numbers, plus the device and dtype used."""
    import av
    import h5py
    import numpy
    import torch

    return {
        "harness": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "av": av.__version__,
        "ffmpeg": av.library_versions.get("libavcodec"),
        "device": device,
        "dtype": dtype,
        "executable": sys.executable,
        **_model_libraries(),
        **extra,
    }


def _model_libraries() -> dict:
    """Versions of the optional model libraries this process has loaded (they decide an adapter's numbers)."""
    found = {}
    for name in ("transformers", "timm", "torchvision", "safetensors"):
        if name in sys.modules:
            try:
                found[name] = version(name)
            except PackageNotFoundError:
                found[name] = getattr(sys.modules[name], "__version__", "unknown")
    return found
