import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conversations.engine.types import Transcript
from conversations.formats import ParseError

Parse = Callable[..., list[Transcript]]
MakeZip = Callable[..., Path]
CHAT = (
    b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of archive members opened for reading."""
    names: list[str] = []
    original = zipfile.ZipFile.open

    def spy(self: zipfile.ZipFile, name: Any, mode: Any = "r", **kwargs: Any) -> Any:
        if mode == "r":  # building the fixture archive writes through open() too
            names.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return original(self, name, mode, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    return names


@pytest.mark.parametrize(
    "evil",
    [
        "../evil.jsonl",
        "data/../../evil.jsonl",
        "/etc/evil.jsonl",
        "..\\evil.jsonl",
        "C:/evil.jsonl",
    ],
)
def test_it_refuses_unsafe_member_paths_before_reading_anything(
    make_zip: MakeZip, parse: Parse, opened: list[str], evil: str
) -> None:
    archive = make_zip({"good.jsonl": CHAT, evil: CHAT})
    with pytest.raises(ParseError) as caught:
        parse(archive)
    assert caught.value.file == f"upload.zip:{evil}"
    assert "unsafe member path" in caught.value.message
    assert opened == []


def test_it_refuses_an_archive_declaring_more_than_max_bytes(
    make_zip: MakeZip, parse: Parse, opened: list[str]
) -> None:
    archive = make_zip({"bomb.jsonl": b" " * 2_000_000 + CHAT})
    assert archive.stat().st_size < 10_000  # compresses to almost nothing
    with pytest.raises(ParseError) as caught:
        parse(archive, max_bytes=1_000_000)
    assert str(caught.value) == (
        "upload.zip: the archive expands to 2,000,090 bytes, over the limit of 1,000,000 bytes"
    )
    assert opened == []


def test_it_stops_a_member_whose_header_understates_its_size(
    make_zip: MakeZip, parse: Parse
) -> None:
    archive = make_zip({"liar.jsonl": b" " * 2_000_000 + CHAT})
    data = bytearray(archive.read_bytes())
    # Uncompressed size: offset 22 of the local header, 24 of the central directory entry.
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, 100)
    struct.pack_into("<I", data, central + 24, 100)
    archive.write_bytes(bytes(data))
    with pytest.raises(ParseError) as caught:
        parse(archive, max_bytes=1_000)
    assert caught.value.file == "upload.zip:liar.jsonl"


def test_it_refuses_nested_archives(make_zip: MakeZip, parse: Parse, tmp_path: Path) -> None:
    inner = make_zip({"a.jsonl": CHAT}, name="inner.zip")
    renamed = tmp_path / "inner.bin"
    renamed.write_bytes(inner.read_bytes())
    for member in ("inner.zip", "inner.bin"):  # by name, and by magic bytes
        archive = make_zip({"a.jsonl": CHAT, member: renamed}, name="outer.zip")
        with pytest.raises(ParseError) as caught:
            parse(archive)
        assert caught.value.file == f"outer.zip:{member}"
        assert "nested archives are not supported" in caught.value.message


def test_it_joins_a_batch_pair_inside_one_archive(
    make_zip: MakeZip, parse: Parse, oracles: Path
) -> None:
    archive = make_zip(
        {
            "batch/": b"",
            "batch/output.jsonl": oracles / "litellm_batch_output_sample.jsonl",
            "batch/input.jsonl": oracles / "litellm_batch_input_furniture.jsonl",
            "__MACOSX/batch/._input.jsonl": b"\x00\x05\x16\x07 resource fork",
            "batch/.DS_Store": b"\x00\x00\x00\x01Bud1",
        }
    )
    transcripts = parse(archive)
    assert [t.external_id for t in transcripts] == ["request-1", "request-2"]
    assert transcripts[0].location == "upload.zip:batch/input.jsonl line 1"
    assert transcripts[0].calls is not None and transcripts[0].calls[0].usage is not None
    assert transcripts[0].calls[0].usage.prompt_tokens == 20


def test_it_detects_each_member_and_names_members_in_errors(
    make_zip: MakeZip, parse: Parse, oracles: Path, samples: Path
) -> None:
    archive = make_zip(
        {
            "chats.jsonl": CHAT,
            "sharegpt.json": oracles / "fastchat_dummy_conversation_sharegpt.json",
            "export/conversations.json": oracles / "mitkury_example-conversation.json",
        }
    )
    transcripts = parse(archive, display_names={archive: "team-export.zip"})
    assert len(transcripts) == 1 + 500 + 1
    assert transcripts[-1].location == "team-export.zip:export/conversations.json record 1"

    broken = make_zip({"ok.jsonl": CHAT, "sub/bad.jsonl": samples / "chat_unknown_role.jsonl"})
    with pytest.raises(ParseError) as caught:
        parse(broken)
    assert str(caught.value).startswith("upload.zip:sub/bad.jsonl line 3, field messages[2].role")


def test_it_says_when_an_archive_holds_nothing_to_import(make_zip: MakeZip, parse: Parse) -> None:
    archive = make_zip({"docs/": b"", "__MACOSX/x": b"junk"})
    with pytest.raises(ParseError, match=r"upload\.zip: the archive holds no transcript files"):
        parse(archive)


def test_it_refuses_a_plain_file_named_as_zip(samples: Path, parse: Parse) -> None:
    with pytest.raises(ParseError, match="not a zip archive"):
        parse(samples / "chat_records.json", format="zip")


def test_it_reports_a_corrupt_archive(tmp_path: Path, parse: Parse) -> None:
    path = tmp_path / "torn.zip"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(ParseError, match=r"torn\.zip: not a readable zip archive"):
        parse(path)


def test_it_reads_a_chatgpt_export_as_shipped(
    make_zip: MakeZip, parse: Parse, oracles: Path
) -> None:
    archive = make_zip(
        {
            "conversations.json": oracles / "mitkury_example-conversation.json",
            "chat.html": b"<html><body>the same conversations, as a page</body></html>",
            "message_feedback.json": b"[]",
            "model_comparisons.json": b"[]",
            "user.json": b'{"id": "user-1", "email": "a@example.com"}',
            "shared_conversations.json": b"[]",
            "file-AbC123-photo.png": b"\x89PNG\r\n\x1a\n",
            "dalle-generations/file-xyz.webp": b"RIFF....WEBP",
            "6800a1b2/audio/file_00000000.wav": b"RIFF....WAVE",
            "notes from support.txt": b"hello",
            "sora.json": b"{}",
        }
    )
    warnings: list[str] = []
    transcripts = parse(archive, on_warning=warnings.append)
    assert len(transcripts) == 1
    assert transcripts[0].location == "upload.zip:conversations.json record 1"
    assert warnings == [
        "upload.zip: ChatGPT export: 3 image, audio or attachment file(s) not imported",
        "upload.zip: ChatGPT export: 2 other member(s) skipped: notes from support.txt, sora.json",
    ]


def test_it_reads_an_export_with_nothing_else_to_say_quietly(
    make_zip: MakeZip, parse: Parse, oracles: Path
) -> None:
    archive = make_zip(
        {"conversations.json": oracles / "mitkury_example-conversation.json", "chat.html": b"x"}
    )
    warnings: list[str] = []
    assert len(parse(archive, on_warning=warnings.append)) == 1
    assert warnings == []


def test_it_refuses_a_member_past_the_ratio_before_reading_it(
    make_zip: MakeZip, parse: Parse
) -> None:
    archive = make_zip({"ok.jsonl": CHAT, "bomb.jsonl": CHAT * 100_000})
    with pytest.raises(ParseError) as caught:
        parse(archive, max_ratio=50)
    assert caught.value.file == "upload.zip:bomb.jsonl"
    assert "more than 50 times its compressed size" in str(caught.value)
    assert len(parse(archive)) == 100_001


def test_it_refuses_a_symlink_member(tmp_path: Path, parse: Parse) -> None:
    import stat

    path = tmp_path / "links.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("chat.jsonl", CHAT)
        link = zipfile.ZipInfo("secrets.jsonl")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(ParseError) as caught:
        parse(path)
    assert caught.value.file == "links.zip:secrets.jsonl"
    assert "symbolic link members are not supported" in str(caught.value)


def test_it_shows_member_names_without_control_characters(make_zip: MakeZip, parse: Parse) -> None:
    archive = make_zip({"a\x1b[2J\u202eb.jsonl": b"not json\n"})
    with pytest.raises(ParseError) as caught:
        parse(archive)
    assert caught.value.file == "upload.zip:a?[2J?b.jsonl"
