"""Serve plotly.min.js straight from the installed plotly wheel: no CDN, no copy in git."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_DIR = Path(plotly.__file__).resolve().parent / "package_data"
VENDOR_FILES = {"vendor/plotly.min.js": PLOTLY_DIR / "plotly.min.js"}


class VendorFinder(BaseFinder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.storage = FileSystemStorage(location=str(PLOTLY_DIR))
        self.storage.prefix = "vendor"  # type: ignore[attr-defined]

    def check(self, **kwargs: Any) -> list[Any]:
        return []

    def find(self, path: str, find_all: bool = False, **kwargs: Any) -> Any:
        match = VENDOR_FILES.get(path)
        if match is None:
            return [] if find_all else None
        return [str(match)] if find_all else str(match)

    def list(self, ignore_patterns: Any) -> Any:
        yield "plotly.min.js", self.storage
