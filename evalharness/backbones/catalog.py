"""What `evalharness models` lists: each model family's description and the extra it needs, the builtin models, and
whether an extra is installed, found without importing torch or the family's library."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass

# builtin:<name> -> what it computes (the models `backbones.builtin` builds)
BUILTINS = {
    "pixels": "frames pooled to an 8x8 grid and averaged over time: appearance without motion",
    "stats": "colour histograms of the whole frame and of the moving pixels, plus block-matching motion histograms",
}


@dataclass(frozen=True)
class Family:
    """A model prefix: what it builds, how its models are named, the pip extra that installs its library and the
    module that library provides (None for both where it needs nothing beyond the harness)."""

    prefix: str
    description: str
    forms: tuple[str, ...]
    extra: str | None = None
    module: str | None = None


FAMILIES = {f.prefix: f for f in (
    Family("builtin", "weight-free baselines that run anywhere (the demo and the tests use them)",
           tuple(f"builtin:{name}" for name in BUILTINS)),
    Family("hf", "transformers video models (VideoMAE, TimeSformer, ViViT, V-JEPA 2, X-CLIP) and CLIP / SigLIP per "
                 "frame, from a folder or the Hugging Face cache", ("hf:<folder or id>[@revision]",), "hf",
           "transformers"),
    Family("timm", "any timm image model per frame, mean-pooled over time", ("timm:<name>", "timm:local-dir:<folder>"),
           "timm", "timm"),
    Family("torchvision", "torchvision's video classifiers (r3d_18, s3d, mvit_v2_s, swin3d_t, ...), head removed",
           ("torchvision:<name>",), "torchvision", "torchvision"),
)}


def install_hint(extra: str) -> str:
    """How to install an extra, as the README says."""
    return f"pip install -e '.[{extra}]' (from a checkout of evalharness)"


def installed(module: str) -> bool:
    """Whether a module could be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def family(prefix: str) -> Family:
    """The family of a registry prefix; one registered at run time is described as such."""
    return FAMILIES.get(prefix, Family(prefix, "registered at run time", (f"{prefix}:<name>",)))


def model_forms(prefixes: Iterable[str]) -> list[str]:
    """How the models of these registry prefixes (`backbones.FACTORIES`) are named: every builtin, each form."""
    return [form for prefix in prefixes for form in family(prefix).forms]


def listing(prefixes: Iterable[str]) -> list[str]:
    """`evalharness models`: per registry prefix (`backbones.FACTORIES`), its description, the models it names (each
    builtin with what it computes), and the extra it needs, installed or how to install it."""
    lines = []
    for prefix in prefixes:
        found = family(prefix)
        lines.append(f"{prefix}: {found.description}")
        width = max(len(form) for form in found.forms)
        lines += [f"  {form:{width}s}  {BUILTINS[form.removeprefix('builtin:')]}" if prefix == "builtin" else f"  {form}"
                  for form in found.forms]
        if found.extra is None:
            lines.append("  extra: none needed")
        elif found.module is not None and installed(found.module):
            lines.append(f"  extra: {found.extra}, installed")
        else:
            lines.append(f"  extra: {found.extra}, not installed: {install_hint(found.extra)}")
    return lines
