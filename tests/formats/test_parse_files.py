"""The entry point the import service and the commands call."""

from collections.abc import Callable
from pathlib import Path

import pytest

from conversations.engine.types import Transcript
from conversations.formats import ParseError, parse_files
from conversations.formats.records import read_records
from conversations.formats.sources import Meter, Source

Parse = Callable[..., list[Transcript]]


def test_it_names_the_users_file_not_the_temp_path(
    samples: Path, parse: Parse, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp8f2k1q"
    temp.write_bytes((samples / "chat_unknown_role.jsonl").read_bytes())
    with pytest.raises(ParseError) as caught:
        parse(temp, display_names={temp: "support-chats.jsonl"})
    assert caught.value.file == "support-chats.jsonl"


def test_it_is_lazy_until_iterated(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    transcripts = parse_files([missing])  # no error yet: a generator
    with pytest.raises(ParseError, match=r"missing\.jsonl: cannot read the file"):
        next(transcripts)


def test_it_reports_progress_up_to_the_total(tmp_path: Path, parse: Parse) -> None:
    line = b'{"messages": [{"role": "user", "content": "' + b"x" * 1000 + b'"}]}\n'
    path = tmp_path / "big.jsonl"
    path.write_bytes(line * 3000)  # about 3 MB
    calls: list[tuple[int, int]] = []
    transcripts = parse(path, on_progress=lambda done, total: calls.append((done, total)))
    assert len(transcripts) == 3000
    size = path.stat().st_size
    assert len(calls) >= 3
    assert calls[-1] == (size, size)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_it_refuses_files_over_max_bytes_up_front(samples: Path, parse: Parse) -> None:
    with pytest.raises(ParseError, match="over the limit of 100 bytes"):
        parse(samples / "chat_records.json", max_bytes=100)


def test_it_enforces_max_bytes_while_reading_too(samples: Path) -> None:
    path = samples / "chat_records.json"
    liar = Source(name="liar.json", size=10, open=lambda: path.open("rb"))
    with pytest.raises(ParseError, match=r"liar\.json: more than the limit of 500 bytes read"):
        list(read_records(liar, Meter(total=10, max_bytes=500)))


def test_it_refuses_an_unknown_format_name(samples: Path, parse: Parse) -> None:
    with pytest.raises(ParseError, match="unknown format 'csv' \\(expected one of chat_json, "):
        parse(samples / "chat_records.json", format="csv")


def test_it_lets_a_named_format_read_either_container(
    samples: Path, oracles: Path, parse: Parse
) -> None:
    from_array = parse(samples / "chat_records.json", format="chat_jsonl")
    assert [t.external_id for t in from_array] == ["support-17", "18"]
    from_lines = parse(oracles / "openai_cookbook_toy_chat_fine_tuning.jsonl", format="chat_json")
    assert len(from_lines) == 5


def test_it_yields_per_file_formats_before_grouped_logs(
    samples: Path, oracles: Path, parse: Parse
) -> None:
    transcripts = parse(
        samples / "api_log_prefix.jsonl", oracles / "openai_cookbook_toy_chat_fine_tuning.jsonl"
    )
    assert len(transcripts) == 5 + 2
    assert all(t.calls is None for t in transcripts[:5])
    assert all(t.calls is not None for t in transcripts[5:])


def test_it_refuses_a_directory(tmp_path: Path, parse: Parse) -> None:
    with pytest.raises(ParseError, match="is a directory"):
        parse(tmp_path)
