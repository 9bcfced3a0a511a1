"""evalharness: a fair evaluation harness for frozen video foundation models."""

__version__ = "0.1.0"
