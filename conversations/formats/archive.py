"""Zip archives holding transcript files of any supported format, and gzip-compressed files.

Safety before convenience: every member name is checked before a single byte is
decompressed (no absolute paths, no `..` components: nothing is ever extracted to disk, but
a name like that means a hostile or broken archive), and the total uncompressed size the
central directory declares must fit `max_bytes`. Headers can lie, so the byte budget is
enforced again while members stream (sources.Meter), and zipfile itself stops a member at
its declared size and checks its CRC. A member (or gzip file) may expand at most
`max_ratio` times its compressed size: checked up front on a zip's declared sizes, and on
the bytes actually decompressed (sources.expand_limit), so a bomb never runs to the byte
budget. Symbolic links are refused; member names are shown with control characters
replaced (errors.printable). Directories, `__MACOSX/` and Finder/Windows debris are
skipped. Nested archives are refused: one level only, and the user is told which member to
extract.
"""

from __future__ import annotations

import gzip
import re
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, cast

from .errors import ParseError, printable
from .sources import Source, expand_limit, file_source, open_metered, ratio_error

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive
_DRIVE = re.compile(r"^[A-Za-z]:")
_DEBRIS = {".DS_Store", "Thumbs.db", "desktop.ini"}
# A ChatGPT data export: conversations.json, and files no other format ships.
_EXPORT_CONVERSATIONS = re.compile(r"conversations(-\d+)?\.json")
_EXPORT_COMPANIONS = {
    "chat.html",
    "message_feedback.json",
    "model_comparisons.json",
    "shared_conversations.json",
    "user.json",
}
_ASSET_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".heic", ".svg",
    ".wav", ".mp3", ".m4a", ".ogg", ".webm", ".mp4", ".pdf",
}  # fmt: skip


def is_zip(head: bytes) -> bool:
    return head[:4] in ZIP_MAGIC


def zip_sources(
    path: Path,
    name: str,
    *,
    max_bytes: int | None,
    warn: Callable[[str], None] | None = None,
    max_ratio: float | None = None,
) -> list[Source]:
    """One Source per transcript member of the archive at `path` (shown to users as `name`).
    A ChatGPT data export yields its conversations file only; `warn` hears which other
    members were left out."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ParseError(f"not a readable zip archive ({exc})", file=name) from exc

    for info in infos:
        _check_name(info.filename, name)
    members = [info for info in infos if not _skipped(info)]
    if _is_chatgpt_export(members):
        members = _export_members(members, name, warn)
    for info in members:
        shown = f"{name}:{printable(info.filename)}"
        if info.flag_bits & 0x1:
            raise ParseError("encrypted archive members are not supported", file=shown)
        if stat.S_ISLNK(info.external_attr >> 16):
            # Nothing is extracted, so the link cannot escape; but its "content" is a path
            # on someone's machine, never a transcript.
            raise ParseError(
                "symbolic link members are not supported: put the file itself in the archive",
                file=shown,
            )
        if info.filename.lower().endswith(".zip"):
            raise ParseError(
                "nested archives are not supported: extract this member and upload its files",
                file=shown,
            )
        ceiling = expand_limit(info.compress_size, max_ratio)
        if max_ratio is not None and ceiling is not None and info.file_size > ceiling:
            raise ratio_error(shown, info.compress_size, max_ratio)
    declared = sum(info.file_size for info in members)
    if max_bytes is not None and declared > max_bytes:
        raise ParseError(
            f"the archive expands to {declared:,} bytes, over the limit of {max_bytes:,} bytes",
            file=name,
        )
    if not members:
        raise ParseError("the archive holds no transcript files", file=name)
    return [
        Source(
            name=f"{name}:{printable(info.filename)}",
            size=info.file_size,
            open=_opener(path, info),
            compressed_size=info.compress_size if info.compress_type else None,
            max_ratio=max_ratio,
        )
        for info in members
    ]


def _is_chatgpt_export(members: list[zipfile.ZipInfo]) -> bool:
    """A ChatGPT data export, as ChatGPT ships it: its conversations file beside at least
    one of the files only that export holds."""
    names = {PurePosixPath(info.filename).name.lower() for info in members}
    return any(_EXPORT_CONVERSATIONS.fullmatch(n) for n in names) and bool(
        names & _EXPORT_COMPANIONS
    )


def _export_members(
    members: list[zipfile.ZipInfo], name: str, warn: Callable[[str], None] | None
) -> list[zipfile.ZipInfo]:
    """The export's conversations file(s); its companions (the HTML view, feedback, user
    and sharing records) and the assets its messages point at are left out quietly, any
    other member by name in a warning."""
    kept: list[zipfile.ZipInfo] = []
    assets = 0
    other: list[str] = []
    for info in members:
        member = PurePosixPath(info.filename)
        if _EXPORT_CONVERSATIONS.fullmatch(member.name.lower()):
            kept.append(info)
        elif member.name.lower() in _EXPORT_COMPANIONS:
            continue
        elif member.suffix.lower() in _ASSET_SUFFIXES or "dalle-generations" in member.parts:
            assets += 1
        else:
            other.append(printable(info.filename))
    if warn is not None and assets:
        warn(f"{name}: ChatGPT export: {assets} image, audio or attachment file(s) not imported")
    if warn is not None and other:
        shown = ", ".join(other[:20]) + (f" and {len(other) - 20} more" if len(other) > 20 else "")
        warn(f"{name}: ChatGPT export: {len(other)} other member(s) skipped: {shown}")
    return kept


def _check_name(member: str, archive: str) -> None:
    parts = re.split(r"[/\\]", member)
    if member.startswith(("/", "\\")) or _DRIVE.match(member) or ".." in parts:
        raise ParseError(
            "unsafe member path (absolute, or with a '..' component); the archive was "
            "refused before anything was extracted",
            file=f"{archive}:{printable(member)}",
        )


def _skipped(info: zipfile.ZipInfo) -> bool:
    path = PurePosixPath(info.filename)
    return (
        info.is_dir()
        or path.parts[0] == "__MACOSX"
        or path.name in _DEBRIS
        or path.name.startswith("._")  # AppleDouble resource forks
    )


def _opener(path: Path, info: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
    def open_member() -> IO[bytes]:
        # The member keeps the archive's file handle alive after the ZipFile is closed.
        with zipfile.ZipFile(path) as archive:
            return archive.open(info)

    return open_member


GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(head: bytes) -> bool:
    return head[:2] == GZIP_MAGIC


def gzip_source(path: Path, name: str, *, max_ratio: float | None = None) -> Source:
    """A gzip-compressed file (a rotated `.jsonl.gz` log, say) read as its decompressed
    bytes. Its declared size is the gzip trailer's ISIZE (the uncompressed size modulo
    4 GiB, garbage when the file is cut off): it drives progress only; the byte budget is
    enforced on the bytes actually decompressed, so a lying trailer cannot pass. An honest
    trailer over the ratio refuses the file before anything is read: streaming up to the
    ratio would import (and roll back) all the records that fit in it."""
    try:
        with path.open("rb") as raw:
            raw.seek(-4, 2)
            declared = int.from_bytes(raw.read(4), "little")
        compressed = path.stat().st_size
    except OSError as exc:
        raise ParseError(f"not a readable gzip file ({exc.strerror or exc})", file=name) from exc
    ceiling = expand_limit(compressed, max_ratio)
    if max_ratio is not None and ceiling is not None and declared > ceiling:
        raise ratio_error(name, compressed, max_ratio)
    return Source(
        name=name,
        size=declared,
        open=lambda: _open_gzip(path),
        size_is_exact=False,
        compressed_size=compressed,
        max_ratio=max_ratio,
    )


def _open_gzip(path: Path) -> IO[bytes]:
    return cast(IO[bytes], gzip.open(path, "rb"))  # a GzipFile is a binary stream


def local_source(path: Path, name: str, *, max_ratio: float | None = None) -> Source:
    """The file at `path`, decompressed on the fly when it is gzip-compressed."""
    source = file_source(path, name)
    with open_metered(source, None) as stream:
        head = stream.read(2)
    return gzip_source(path, name, max_ratio=max_ratio) if is_gzip(head) else source
