"""Content digests that decide whether an upload was imported before."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

_READ = 1024 * 1024


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(_READ):
            digest.update(piece)
    return digest.hexdigest()


def combined_sha256(digests: Iterable[str]) -> str:
    """One digest for several files, whatever their order: a Batch input + output pair is
    the same content whichever file came first."""
    digests = list(digests)
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()


def files_sha256(paths: list[Path]) -> str:
    return combined_sha256(file_sha256(p) for p in paths)
