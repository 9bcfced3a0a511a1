"""The shipped protocol cards (YAML), installed as package data of `evalharness.protocols`."""
