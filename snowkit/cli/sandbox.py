"""`snowkit sandbox` commands (not yet wired)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Nothing registered yet; the owning part of the library fills this in."""
