"""Offline tiktoken encodings (design.md 2.4).

Owns: the vocabularies (cl100k_base, o200k_base), read from the bpe-openai wheel, sha256-checked.

The vocabularies come from the `bpe-openai` wheel (`bpe_openai/data/<name>.tiktoken.gz`), never
from the network: deployments are air-gapped and tiktoken would otherwise download them. Only
the data files are read; bpe_openai's compiled bindings are never imported.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.util
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tiktoken
from tiktoken_ext import openai_public

ENCODINGS = ("cl100k_base", "o200k_base")


class VocabularyError(RuntimeError):
    """The packaged vocabulary is missing or is not the file tiktoken expects."""


def _vocabulary_path(name: str) -> Path:
    # find_spec locates the package without executing its __init__ (which loads the bindings).
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise VocabularyError("the bpe-openai package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"


def _parse_ranks(contents: bytes) -> dict[bytes, int]:
    """Parse tiktoken's format: one `<base64 token> <rank>` pair per line."""
    ranks: dict[bytes, int] = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _packaged_ranks(name: str, expected_hash: str | None) -> dict[bytes, int]:
    path = _vocabulary_path(name)
    try:
        contents = gzip.decompress(path.read_bytes())
    except OSError as exc:
        raise VocabularyError(f"cannot read {path}: {exc}") from exc
    actual = hashlib.sha256(contents).hexdigest()
    if expected_hash is None or actual != expected_hash:
        raise VocabularyError(f"{path}: sha256 {actual} is not tiktoken's {expected_hash}")
    return _parse_ranks(contents)


def _encoding_spec(name: str) -> dict[str, Any]:
    """Run tiktoken's own constructor for `name` with its loader swapped for ours.

    o200k_base's pattern only exists inside its constructor, so calling the constructor is the
    one way to reuse tiktoken's pat_str, special tokens and expected hash without copying them.
    A copy of the function with patched globals leaves tiktoken_ext itself untouched.
    """
    constructor = openai_public.ENCODING_CONSTRUCTORS[name]

    def load_packaged(_blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        return _packaged_ranks(name, expected_hash)

    patched_globals = {**vars(openai_public), "load_tiktoken_bpe": load_packaged}
    offline: Callable[[], dict[str, Any]] = types.FunctionType(
        constructor.__code__, patched_globals, constructor.__name__
    )
    return offline()


@functools.cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """cl100k_base or o200k_base, loaded from the packaged file and hash-checked."""
    if name not in ENCODINGS:
        raise ValueError(f"unknown encoding {name!r}; expected one of {', '.join(ENCODINGS)}")
    spec = _encoding_spec(name)
    return tiktoken.Encoding(
        name=spec["name"],
        pat_str=spec["pat_str"],
        mergeable_ranks=spec["mergeable_ranks"],
        special_tokens=spec["special_tokens"],
    )
