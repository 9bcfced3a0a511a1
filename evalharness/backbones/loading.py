"""Checkpoint plumbing shared by the adapters: optional imports, weight hashes, state dicts."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import torch

from ..errors import HarnessError
from .catalog import install_hint

RANDOM = "random"  # --weights random: random initialisation, recorded as such (throughput runs)


def require(module: str, extra: str, spec: str) -> ModuleType:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise HarnessError(f"model '{spec}' needs {module}, which is not importable ({exc}); "
                           f"install it with: {install_hint(extra)}") from None


def read_state_dict(path: Path, spec: str) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torch checkpoint (loaded with weights_only: no code runs)."""
    if not path.is_file():
        raise HarnessError(f"model '{spec}': weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HarnessError(f"model '{spec}': {path}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HarnessError(f"model '{spec}': {path}: holds no state dict of tensors")
    return state


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], head: Iterable[str], spec: str, path: Path) -> None:
    """Load a state dict that must cover every parameter but the classifier head's, which is ignored (any class count)."""
    heads = tuple(head)
    state = {k: v for k, v in ((k.removeprefix("module."), v) for k, v in state.items()) if not k.startswith(heads)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise HarnessError(f"model '{spec}': {path} does not fit this architecture "
                           f"({str(exc).splitlines()[-1].strip()})") from None
    missing = [k for k in result.missing_keys if not k.startswith(heads)]
    unexpected = result.unexpected_keys
    if missing or unexpected:
        what = (f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}" if missing else
                f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        raise HarnessError(f"model '{spec}': {path} does not fit this architecture ({what})")
