"""Installed package versions, as run records (run.json, ONNX metadata, _summary.json) keep
them: what produced a file, so a result can be traced to the code behind it."""

from __future__ import annotations

from collections.abc import Iterable


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """Each installed distribution's version; ``unknown`` where it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in packages:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out
