"""What a benchmark ran on: CPU model, cores, the BLAS each library carries and its threads, torch's build, the GPU.

Ratios between libraries depend on these (numpy's OpenBLAS, torch's MKL and faiss's own OpenBLAS pick different
kernels on one CPU), so every benchmark prints them beside its numbers.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def sync(device: str) -> None:
    """Wait for the device's queued work, so that a timer read after it counts that work (no-op on the CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what platform knows."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _owner(path: str) -> str:
    """Which Python package a loaded native library came with (faiss bundles its own OpenBLAS and OpenMP)."""
    for package in ("faiss", "numpy", "scipy", "torch", "sklearn"):
        if f"/{package}" in path:
            return package
    return Path(path).name


def blas_libraries() -> list[str]:
    """Each BLAS and OpenMP runtime loaded in this process (after importing numpy, torch and faiss), with its
    version, kernel architecture and thread count, named by the package that carries it."""
    import faiss  # noqa: F401  (loaded so that its bundled BLAS is listed)
    import numpy  # noqa: F401
    import torch
    from threadpoolctl import threadpool_info

    out = []
    for lib in threadpool_info():
        arch = f" {lib['architecture']}" if lib.get("architecture") else ""
        version = f" {lib['version']}" if lib.get("version") else ""
        out.append(f"{_owner(lib['filepath'])}: {lib['internal_api']}{version}{arch}, {lib['num_threads']} threads")
    blas = next((part.split("=", 1)[1] for part in torch.__config__.show().replace(",", " ").split()
                 if part.startswith("BLAS_INFO=")), "unknown")
    out.append(f"torch matmul: {blas} (torch.get_num_threads() = {torch.get_num_threads()})")
    return out


def describe(device: str = "cpu") -> str:
    """Several lines: CPU, cores, python, torch and its build, the device, then one line per BLAS library."""
    import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    where = device + (f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else "")
    head = (f"{cpu_model()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}, torch {torch.__version__} ({build}), "
            f"device {where}")
    return "\n".join([head, *(f"  {line}" for line in blas_libraries())])


if __name__ == "__main__":
    print(describe(sys.argv[1] if len(sys.argv) > 1 else "cpu"))
