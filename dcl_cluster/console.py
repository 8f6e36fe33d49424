"""The ``dcl-cluster`` console script: ``recluster`` runs without Lightning (it starts in about
2 s instead of 7), every other subcommand goes to the LightningCLI of :mod:`dcl_cluster.cli`."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(args: list[str] | None = None) -> None:
    """Entry point of ``dcl-cluster`` (``args`` default to ``sys.argv[1:]``)."""
    given = sys.argv[1:] if args is None else list(args)
    if given[:1] == ["recluster"]:
        from dcl_cluster.recluster import main as recluster

        recluster(given[1:])
        return
    from dcl_cluster.cli import main as cli

    cli(args)  # None: LightningCLI reads sys.argv itself
