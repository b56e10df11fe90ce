"""Containers and byte-level faults: every error names the line, record or byte."""

from collections.abc import Callable
from pathlib import Path

import pytest

from conversations.engine.types import Transcript
from conversations.formats import ParseError

Parse = Callable[..., list[Transcript]]


def test_it_names_the_line_of_malformed_json(samples: Path, parse: Parse) -> None:
    with pytest.raises(ParseError) as caught:
        parse(samples / "chat_malformed_line3.jsonl")
    assert caught.value.line == 3
    assert str(caught.value).startswith("chat_malformed_line3.jsonl line 3: malformed JSON")


def test_it_names_the_line_of_invalid_utf8(samples: Path, parse: Parse) -> None:
    second_line = (samples / "chat_invalid_utf8.jsonl").read_bytes().splitlines()[1]
    with pytest.raises(ParseError) as caught:
        parse(samples / "chat_invalid_utf8.jsonl")
    assert caught.value.line == 2
    offset = second_line.index(b"\xe9")
    assert f"invalid UTF-8 at byte offset {offset} of the line" in str(caught.value)


def test_it_names_the_byte_offset_of_invalid_utf8_in_json(samples: Path, parse: Parse) -> None:
    offset = (samples / "chat_invalid_utf8.json").read_bytes().index(b"\xff")
    with pytest.raises(ParseError) as caught:
        parse(samples / "chat_invalid_utf8.json")
    assert caught.value.byte_offset == offset
    assert str(caught.value).startswith(
        f"chat_invalid_utf8.json: invalid UTF-8 at byte offset {offset}"
    )


@pytest.mark.parametrize("name", ["chat_deep_nesting.jsonl", "chat_deep_nesting.json"])
def test_it_refuses_json_nested_past_the_limit(samples: Path, parse: Parse, name: str) -> None:
    with pytest.raises(ParseError, match="nested deeper than 100 levels") as caught:
        parse(samples / name)
    assert caught.value.line == 1


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_it_turns_100k_nested_arrays_into_a_parse_error(
    tmp_path: Path, parse: Parse, suffix: str
) -> None:
    # stdlib json raises RecursionError here, and ijson.items would build quadratic prefixes.
    path = tmp_path / f"deep{suffix}"
    deep = "[" * 100_000 + "]" * 100_000
    body = f'{{"messages": [{{"role": "user", "content": {deep}}}]}}'
    path.write_text(body + "\n" if suffix == ".jsonl" else f"[{body}]")
    with pytest.raises(ParseError, match="nested deeper than 100 levels"):
        parse(path)


@pytest.mark.parametrize("name", ["empty.jsonl", "blank.json"])
def test_it_says_empty_file(samples: Path, parse: Parse, name: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(samples / name)
    assert str(caught.value) == f"{name}: empty file"


def test_it_counts_blank_lines_and_skips_a_bom(tmp_path: Path, parse: Parse) -> None:
    path = tmp_path / "bom.jsonl"
    good = b'{"messages": [{"role": "user", "content": "hi"}]}\n'
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\n\n" + good + b'{"messages": 3}\n')
    with pytest.raises(ParseError) as caught:
        parse(path)
    assert (caught.value.line, caught.value.field) == (5, "messages")


def test_it_reads_a_pretty_printed_single_object(tmp_path: Path, parse: Parse) -> None:
    path = tmp_path / "one.json"
    path.write_text('{\n  "messages": [\n    {"role": "user", "content": "hi"}\n  ]\n}\n')
    [transcript] = parse(path)
    assert transcript.messages == [{"role": "user", "content": "hi"}]
    assert transcript.location == "one.json"


def test_it_rejects_text_that_is_not_json(tmp_path: Path, parse: Parse) -> None:
    path = tmp_path / "export.csv"
    path.write_text("role,content\nuser,hi\n")
    with pytest.raises(ParseError, match="not JSON: the file starts with 'r'"):
        parse(path)


def test_it_reports_trailing_garbage_after_a_json_array(tmp_path: Path, parse: Parse) -> None:
    path = tmp_path / "tail.json"
    path.write_text('[{"messages": [{"role": "user", "content": "hi"}]}] oops')
    with pytest.raises(ParseError, match=r"malformed JSON .*trailing garbage"):
        parse(path, format="chat_json")


def test_it_names_the_record_of_a_malformed_json_array(tmp_path: Path, parse: Parse) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"messages": [{"role": "user", "content": "hi"}]},\n {"messages": [}]')
    with pytest.raises(ParseError) as caught:
        parse(path, format="chat_json")
    assert (caught.value.unit, caught.value.line) == ("record", 2)


_LINE = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
_BIG = b'{"messages": [{"role": "user", "content": "' + b"x" * 300_000 + b'"}]}'


@pytest.mark.parametrize(
    ("name", "data", "where"),
    [
        # JSONL: the third line is too long; the bounded readline never reads past it.
        (
            "lines.jsonl",
            _LINE + b"\n\n" + _BIG + b"\n" + _LINE + b"\n",
            "lines.jsonl line 3, field messages[0].content",
        ),
        ("first.jsonl", _BIG + b"\n", "first.jsonl line 1, field messages[0].content"),
        # A JSON array: the second item, counted while the parser pulls its bytes.
        (
            "array.json",
            b"[" + _LINE + b",\n" + _BIG + b"]",
            "array.json record 2, field messages[0].content",
        ),
        (
            "parts.json",
            b'[{"messages": [{"role": "user", "content": ["a", {"x": 1}, "' + b"z" * 300_000,
            "parts.json record 1, field messages[0].content[2]",
        ),
        # A scalar item gets no event until the parser holds it whole: counted from the
        # end of the item before it.
        ("scalar.json", b"[" + _LINE + b', "' + b"y" * 300_000 + b'"]', "scalar.json record 2"),
        # A pretty-printed single object is one record, the whole file.
        (
            "single.json",
            b'{\n "messages": [\n' + _BIG + b"]}",
            "single.json, field messages[0].messages[0].content: this JSON",
        ),
    ],
)
def test_it_refuses_a_line_or_record_over_the_limit_before_holding_it(
    parse: Parse, tmp_path: Path, name: str, data: bytes, where: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ParseError) as caught:
        parse(path, max_record_bytes=100_000)
    assert str(caught.value).startswith(where), str(caught.value)
    assert "over the limit of 100,000 bytes for one line or record" in str(caught.value)


def test_it_reads_records_just_under_the_limit(parse: Parse, tmp_path: Path) -> None:
    path = tmp_path / "fits.jsonl"
    path.write_bytes(_LINE + b"\n" + _LINE + b"\n")
    assert len(parse(path, max_record_bytes=len(_LINE))) == 2
    with pytest.raises(ParseError, match=r"fits\.jsonl line 1: this line is over"):
        parse(path, max_record_bytes=len(_LINE) - 1)


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16"), ("utf-16-be", "UTF-16"), ("utf-32", "UTF-32")],
)
def test_it_says_when_a_file_is_utf16_or_utf32(
    parse: Parse, tmp_path: Path, encoding: str, expected: str
) -> None:
    path = tmp_path / "windows.jsonl"
    path.write_bytes(_LINE.decode().encode(encoding))
    with pytest.raises(ParseError) as caught:
        parse(path)
    assert str(caught.value) == (
        f"windows.jsonl: the file is {expected} encoded; save it as UTF-8 and upload it again"
    )
