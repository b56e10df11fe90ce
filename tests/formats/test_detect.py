import gzip
from pathlib import Path

import pytest

from conversations.formats import FORMATS, ParseError, detect_format


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fastchat_dummy_conversation_sharegpt.json", "sharegpt"),
        ("openai_cookbook_toy_chat_fine_tuning.jsonl", "chat_jsonl"),
        ("mitkury_example-conversation.json", "chatgpt_export"),
        ("litellm_batch_input_furniture.jsonl", "batch"),
        ("litellm_batch_output_sample.jsonl", "batch"),
        ("openai_apiref_batch_output_example.jsonl", "batch"),
    ],
)
def test_it_detects_the_oracle_files(oracles: Path, name: str, expected: str) -> None:
    assert detect_format(oracles / name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("chat_records.json", "chat_json"),
        ("chat_unknown_role.jsonl", "chat_jsonl"),
        ("api_log_prefix.jsonl", "api_log"),
        ("api_log_variants.jsonl", "api_log"),
        ("sharegpt_variants.jsonl", "sharegpt"),
        ("chatgpt_export_features.json", "chatgpt_export"),
    ],
)
def test_it_detects_by_content(samples: Path, tmp_path: Path, name: str, expected: str) -> None:
    # Uploads arrive as temp files: the name must not matter.
    anonymous = tmp_path / "upload.tmp"
    anonymous.write_bytes((samples / name).read_bytes())
    assert detect_format(anonymous) == expected
    assert expected in FORMATS


def test_it_detects_a_zip_by_magic_bytes(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "no-extension"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.jsonl", "{}")
    assert detect_format(path) == "zip"


def test_it_says_which_keys_it_could_not_place(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "hi", "completion": "hello"}\n')
    with pytest.raises(ParseError) as caught:
        detect_format(path)
    assert caught.value.line == 1
    assert "cannot tell the format from the keys (completion, prompt)" in str(caught.value)


def test_it_detects_the_content_of_a_gzip_file_and_refuses_gzip_twice(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"messages": []}\n{"messages": []}\n'))
    assert detect_format(path) == "chat_jsonl"
    twice = tmp_path / "chats.jsonl.gz.gz"
    twice.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(ParseError, match="gzip-compressed data inside a gzip"):
        detect_format(twice)


def test_it_says_empty_file(samples: Path) -> None:
    with pytest.raises(ParseError, match="empty file"):
        detect_format(samples / "empty.jsonl")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # One chat written on one line is one JSON document, as it is indented.
        ('{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}', "chat_json"),
        ('{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}\n', "chat_json"),
        ('{"model": "gpt-4o",\n "messages": [{"role": "user", "content": "hi"}]}', "chat_json"),
        # A second line, even a broken one (the parse names it), makes it JSONL.
        ('{"messages": [{"role": "user", "content": "a"}]}\n{"messages": []}\n', "chat_jsonl"),
        ('{"messages": [{"role": "user", "content": "a"}]}\n{broken\n', "chat_jsonl"),
    ],
)
def test_a_file_of_one_line_is_one_document(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "upload.tmp"
    path.write_text(text)
    assert detect_format(path) == expected
