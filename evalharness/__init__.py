"""evalharness: a fair evaluation harness for frozen video foundation models.

The Python API (`extract`, `score`, `score_arrays`, `run`, `load_results`, `leaderboard`) lives in `api` and is
imported on first use, so `import evalharness` and the command's start-up stay free of torch.
"""

from .version import __version__

API = ("RunOutcome", "extract", "leaderboard", "load_results", "run", "score", "score_arrays")


def __getattr__(name: str):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'evalharness' has no attribute {name!r}")


__all__ = ["__version__", *API]
