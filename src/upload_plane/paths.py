"""Locate the project's non-Python folders (migrations/, web-demo/) from a checkout or an image."""

from __future__ import annotations

from pathlib import Path


def project_path(name: str) -> Path:
    """``name`` under the working directory if present, else beside the source checkout."""
    here = Path.cwd() / name
    if here.exists():
        return here
    return Path(__file__).resolve().parents[2] / name
