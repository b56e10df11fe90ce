"""A big JSONL export parses in bounded memory: nothing holds the file, only one line."""

import tracemalloc
from pathlib import Path

from conversations.formats import parse_files

MB = 1 << 20


def _write_chat_jsonl(path: Path, size: int) -> int:
    template = (
        '{"id": "c-%08d", "model": "gpt-4o-mini", "messages": ['
        '{"role": "system", "content": "You are a helpful assistant for a furniture shop."}, '
        '{"role": "user", "content": "%s"}, '
        '{"role": "assistant", "content": "%s"}]}\n'
    )
    question, answer = (
        "Which sofa fits a small flat? " * 8,
        "The two-seater Lisboa is 150 cm wide. " * 12,
    )
    lines = 0
    with path.open("w") as out:
        while out.tell() < size:
            block = "".join(template % (lines + i, question, answer) for i in range(1000))
            out.write(block)
            lines += 1000
    return lines


def test_it_parses_50_mb_of_jsonl_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    lines = _write_chat_jsonl(path, 50 * MB)
    size = path.stat().st_size

    tracemalloc.start()
    try:
        count = messages = 0
        for transcript in parse_files([path]):
            count += 1
            messages += len(transcript.messages)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (count, messages) == (lines, 3 * lines)
    # About 0.2 MB in practice (one line and one Transcript at a time); reading the file
    # whole would need 50 MB. Runs in about 6 s, most of it tracemalloc's own overhead.
    assert peak < 4 * MB, f"peak {peak / MB:.1f} MB for a {size / MB:.0f} MB file"
