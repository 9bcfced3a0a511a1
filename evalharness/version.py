"""The harness's version, recorded in every embedding file and result record."""

__version__ = "0.1.0"
