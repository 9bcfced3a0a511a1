"""`python -m evalharness` is the `evalharness` command."""

from .cli import main

main()
