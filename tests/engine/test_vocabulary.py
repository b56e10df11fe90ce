"""Vocabularies: tiktoken's files from the bpe-openai wheel, offline and hash-checked."""

from __future__ import annotations

import gzip
import socket
from pathlib import Path

import pytest
import tiktoken.load

from conversations.engine import vocabulary
from conversations.engine.vocabulary import get_encoding

from .conftest import cookbook


def test_it_encodes_the_cookbook_example_ids(oracles: Path) -> None:
    printed = cookbook(oracles)["other_printed_outputs"]
    for name in ("o200k_base", "cl100k_base"):
        expected = printed[f"{name} encode('tiktoken is great!')"]
        assert get_encoding(name).encode("tiktoken is great!") == expected
        for text, ids in printed["token_ids"].items():
            if name in ids:
                assert get_encoding(name).encode(text) == ids[name]


def test_it_loads_vocabularies_without_the_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network was touched")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for name in ("cl100k_base", "o200k_base"):
        fresh = get_encoding.__wrapped__(name)  # bypass the cache: really load again
        assert fresh.encode("tiktoken is great!")[-1] == 0
    assert list(tmp_path.iterdir()) == []


def test_it_refuses_a_vocabulary_whose_hash_differs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    forged = tmp_path / "cl100k_base.tiktoken.gz"
    forged.write_bytes(gzip.compress(b"IQ== 0\n"))
    monkeypatch.setattr(vocabulary, "_vocabulary_path", lambda name: forged)
    with pytest.raises(vocabulary.VocabularyError, match="sha256"):
        get_encoding.__wrapped__("cl100k_base")
