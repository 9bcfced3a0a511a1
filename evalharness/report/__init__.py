"""Tables from result records: the leaderboard model, its renderers (markdown, csv, latex, json, html) and the CI gate."""

from .board import board, cell_text, model_name
from .details import details
from .tables import FORMATS, long_rows, render

__all__ = ["FORMATS", "board", "cell_text", "details", "long_rows", "model_name", "render"]
