"""Content digests that decide whether an upload was imported before.

The digest is of the content, not the bytes: a gzip-compressed file is hashed as what it
decompresses to, a zip as its transcript members' contents (what the import reads), and
line endings are normalised (CRLF and CR count as LF). The same log gzipped, zipped or
saved on Windows is then the same upload, not three copies with inflated totals.

Reading stops at `max_bytes` of content, or when a compressed file passes `max_ratio`: past
either limit the import refuses the file anyway, and a decompression bomb must not keep the
request hashing (its raw bytes are hashed instead).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from .engine.types import Transcript
from .formats.archive import is_zip, local_source, zip_sources
from .formats.errors import ParseError
from .formats.sources import Source, open_metered

_READ = 1024 * 1024


def _source_sha256(source: Source, max_bytes: int | None) -> str:
    digest = hashlib.sha256()
    read = 0
    carry = b""  # a CR at the end of one chunk may start a CRLF in the next
    with open_metered(source, None) as stream:
        while piece := stream.read(_READ):
            read += len(piece)
            data = carry + piece
            carry = b"\r" if data.endswith(b"\r") else b""
            if carry:
                data = data[:-1]
            digest.update(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
            if max_bytes is not None and read > max_bytes:
                digest.update(b"\x00over the limit")
                return digest.hexdigest()
    if carry:
        digest.update(b"\n")
    return digest.hexdigest()


def file_sha256(path: Path, *, max_bytes: int | None = None, max_ratio: float | None = None) -> str:
    """The content digest of one uploaded file (see the module docstring)."""
    with path.open("rb") as handle:
        head = handle.read(4)
    try:
        if is_zip(head):
            sources = zip_sources(path, path.name, max_bytes=None, max_ratio=max_ratio)
            return combined_sha256(_source_sha256(s, max_bytes) for s in sources)
        return _source_sha256(local_source(path, path.name, max_ratio=max_ratio), max_bytes)
    except ParseError:
        # Unreadable as an archive or a gzip: its bytes are its content. The import will
        # say what is wrong with it.
        return _source_sha256(Source(path.name, 0, lambda: path.open("rb")), max_bytes)


def combined_sha256(digests: Iterable[str]) -> str:
    """One digest for several files, whatever their order: a Batch input + output pair is
    the same content whichever file came first."""
    digests = list(digests)
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()


def files_sha256(
    paths: list[Path], *, max_bytes: int | None = None, max_ratio: float | None = None
) -> str:
    return combined_sha256(file_sha256(p, max_bytes=max_bytes, max_ratio=max_ratio) for p in paths)


def transcript_sha256(transcript: Transcript) -> str:
    """The digest of one conversation as imported: its messages and, per call, what was
    sent, what came back and what the API reported. Where it was read from, its title and
    its warnings are not content: the same conversation from another file hashes alike."""
    calls = [
        {
            "request": call.request,
            "response": call.response,
            "model": call.model,
            "tools": call.tools,
            "response_format": call.response_format,
            "usage": call.usage.raw if call.usage is not None else None,
            "id": call.external_id,
            "at": call.started_at.isoformat() if call.started_at else None,
            "batch": call.batch,
            # only when set, so that digests taken before it was kept stay valid
            **({"tool_choice": call.tool_choice} if call.tool_choice else {}),
            # responses_api is left out: a Responses call differs already by its id and its
            # usage's keys, and leaving it out keeps valid the digests taken before it was kept
            # (a file of Responses calls imported then is still found a duplicate now).
        }
        for call in transcript.calls or []
    ]
    content = {
        "messages": transcript.messages,
        "calls": calls if transcript.calls is not None else None,
        "model": transcript.model,
    }
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
