"""Import benchmark: a large chat JSONL through the real import path, beside its floors.

    .venv/bin/python bench/import.py                 # 500 MB, SQLite under var/ by default
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/costlab_bench .venv/bin/python bench/import.py --size-mb 50

Generates the file once under bench/out/ (deterministic), imports it into a throwaway
organization with conversations.services.imports.import_path (parse -> tokenize -> cache
simulation -> price -> COPY on PostgreSQL / bulk_create elsewhere, one transaction), and prints
where the time went, rows per second and peak RSS (target < 300 MB), beside two floors:
- tokenizer: tiktoken encoding each message's text once (the least an exact count does);
- COPY (PostgreSQL): the rows the import wrote, as raw COPY bytes dumped from the tables,
  written back into the same tables (constraints and indexes included) and committed.
Target (issue 13): import <= 3 x the tokenizer floor + the COPY floor. `--orm` takes the ORM
path on PostgreSQL, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costlab.dev_settings")

WORDS = (
    "the a to of and in is for on with that this it as be are by from at or an not have "
    "cache prompt token model request history cost latency invoice summary context window "
    "customer support order refund policy shipping account password update report analysis "
    "quarter revenue forecast pipeline deploy service error retry timeout database index"
).split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(WORDS, k=words))


def generate(path: Path, size_mb: int, seed: int = 7) -> None:
    """Chat JSONL, one conversation per line: a shared system prompt and 6-30 messages."""
    rng = random.Random(seed)
    system = "You are ACME's assistant. " + _text(rng, 900)
    target = size_mb * 1024 * 1024
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("w") as handle:
        while written < target:
            messages = [{"role": "system", "content": system}]
            for _ in range(rng.randint(3, 15)):
                messages.append({"role": "user", "content": _text(rng, rng.randint(10, 120))})
                messages.append({"role": "assistant", "content": _text(rng, rng.randint(40, 400))})
            line = json.dumps({"model": "gpt-4o-mini", "messages": messages}) + "\n"
            handle.write(line)
            written += len(line)


TABLES = ("conversation", "message", "turn", "usagerecord")


def tokenizer_floor(path: Path, model: str = "gpt-4o-mini") -> tuple[float, int, int]:
    """Seconds to encode each message's text once (parsing untimed), messages, tokens."""
    from conversations.engine.profiles import default_profile
    from conversations.engine.vocabulary import get_encoding

    encoding = get_encoding(default_profile(model).encoding)
    with path.open() as handle:
        texts = [m["content"] for line in handle for m in json.loads(line)["messages"]]
    encoding.encode_ordinary(texts[0])  # first-use costs outside the count
    started = time.perf_counter()
    tokens = sum(len(encoding.encode_ordinary(text)) for text in texts)
    return time.perf_counter() - started, len(texts), tokens


def copy_floor(organization_id: int) -> float:
    """Seconds to COPY the organization's imported rows back, as raw bytes, and commit.
    The rows are dumped, deleted and written back with their own ids: the import's result
    is left as it was."""
    from django.db import connection, transaction

    from conversations import models

    tables = {name: getattr(models, name.title().replace("record", "Record")) for name in TABLES}
    owned = {
        "conversation": "organization_id = %s",
        "usagerecord": "organization_id = %s",
        "message": "conversation_id IN (SELECT id FROM conversations_conversation WHERE organization_id = %s)",
        "turn": "conversation_id IN (SELECT id FROM conversations_conversation WHERE organization_id = %s)",
    }
    dumps: dict[str, tuple[str, bytes]] = {}
    raw = connection.connection
    with raw.cursor() as cursor:
        for name, model in tables.items():
            columns = ", ".join(f'"{f.column}"' for f in model._meta.concrete_fields)
            where = owned[name].replace("%s", str(int(organization_id)))
            data = bytearray()
            query = f"COPY (SELECT {columns} FROM {model._meta.db_table} WHERE {where} ORDER BY id) TO STDOUT"
            with cursor.copy(query) as copy:
                for block in copy:
                    data += block
            dumps[name] = (f"COPY {model._meta.db_table} ({columns}) FROM STDIN", bytes(data))
    with transaction.atomic(), connection.cursor() as cursor:
        for name in reversed(TABLES):
            cursor.execute(
                f"DELETE FROM {tables[name]._meta.db_table} WHERE {owned[name]}", [organization_id]
            )
    # The import wrote into clean tables: without a vacuum the floor would step over the
    # dead copies of the same keys in every unique index, and look slower than it is.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM " + ", ".join(t._meta.db_table for t in tables.values()))
    started = time.perf_counter()
    with transaction.atomic(), raw.cursor() as cursor:
        for statement, data in dumps.values():
            with cursor.copy(statement) as copy:
                copy.write(data)
    return time.perf_counter() - started


class Phases:
    """Seconds spent in the import's steps, by wrapping the functions that do them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, module: object, name: str, label: str) -> None:
        function = getattr(module, name)

        def timed(*args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started

        setattr(module, name, timed)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--keep", action="store_true", help="keep the imported rows")
    parser.add_argument("--orm", action="store_true", help="write with the ORM on PostgreSQL too")
    args = parser.parse_args()

    path = ROOT / "bench" / "out" / f"chat_{args.size_mb}mb.jsonl"
    if not path.exists():
        started = time.perf_counter()
        generate(path, args.size_mb)
        print(
            f"generated {path.name} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s"
        )

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from conversations.models import Organization, UsageRecord
    from conversations.services import bulk, imports, transcripts

    if args.orm:
        bulk.COPY_VENDORS = frozenset()
    call_command("migrate", verbosity=0)
    Organization.objects.filter(slug="bench-import").delete()
    organization = Organization.objects.create(name="bench", slug="bench-import")
    phases = Phases()
    phases.wrap(transcripts, "_not_yet_imported", "duplicate check (hashes, a query a chunk)")
    phases.wrap(transcripts, "analyze", "analysis (tokens, cache simulation, prices)")
    phases.wrap(transcripts, "_conversation_rows", "rows built (instances, usage records)")
    phases.wrap(transcripts, "_rows_copy_write", "rows written (ids, COPY)")
    phases.wrap(transcripts, "_rows_orm_write", "rows written (ORM bulk_create)")
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    job = imports.import_path(organization=organization, paths=[path])
    elapsed = time.perf_counter() - started
    if job.status != "succeeded":
        raise SystemExit(f"import failed: {job.status} {job.error}")
    records = UsageRecord.objects.filter(organization=organization).count()
    rows = job.messages + job.turns + records + job.conversations
    size_mb = path.stat().st_size / 1e6
    print(f"database          {connection.vendor}")
    print(f"file              {size_mb:.0f} MB, {job.conversations:,} conversations")
    print(
        f"stored            {job.messages:,} messages, {job.turns:,} turns, {records:,} usage records"
    )
    print(f"tokens            {job.tokens:,}")
    print(f"wall time         {elapsed:.1f} s ({size_mb / elapsed:.1f} MB/s)")
    for label, seconds in phases.seconds.items():
        print(f"  {label:<44} {seconds:5.1f} s")
    rest = elapsed - sum(phases.seconds.values())
    print(f"  {'parsing, file hash, job rows, commit':<44} {rest:5.1f} s")
    print(f"rows per second   {rows / elapsed:,.0f} ({rows:,} rows)")
    print(
        f"peak RSS          {peak_rss_mb():.0f} MB (before the import: {rss_before:.0f} MB; target < 300 MB)"
    )
    floor, messages, tokens = tokenizer_floor(path)
    print(
        f"tokenizer floor   {floor:.2f} s (tiktoken, {messages:,} messages once, {tokens:,} tokens)"
    )
    if connection.vendor == "postgresql":
        copied = copy_floor(organization.id)
        target = 3 * floor + copied
        print(f"COPY floor        {copied:.2f} s (the same {rows:,} rows as raw COPY, committed)")
        print(
            f"ratio             {elapsed / floor:.1f}x the tokenizer floor, "
            f"{elapsed / copied:.1f}x the COPY floor; "
            f"{elapsed / target:.2f}x the target 3 x tokenizer + COPY = {target:.1f} s"
        )
    if not args.keep:
        organization.delete()


if __name__ == "__main__":
    main()
