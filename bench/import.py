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
from typing import Any

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
# Rows of one organization, by table (messages and turns through their conversation).
OWNED = {
    "conversation": "organization_id = %s",
    "message": "conversation_id IN (SELECT id FROM conversations_conversation WHERE organization_id = %s)",
    "turn": "conversation_id IN (SELECT id FROM conversations_conversation WHERE organization_id = %s)",
    "usagerecord": "organization_id = %s",
}


class Clock:
    """Wall time, and CPU time of this process plus its PostgreSQL backend (read from
    /proc when the server runs on this machine): on a shared machine wall time moves by
    tens of per cent from run to run, the CPU seconds much less."""

    def __init__(self, backend_pid: int | None) -> None:
        self.stat = Path(f"/proc/{backend_pid}/stat") if backend_pid else None
        if self.stat is not None and not self.stat.exists():
            self.stat = None

    def server(self) -> float:
        if self.stat is None:
            return 0.0
        fields = self.stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def now(self) -> tuple[float, float]:
        return time.perf_counter(), time.process_time() + self.server()

    def since(self, start: tuple[float, float]) -> tuple[float, float]:
        wall, cpu = self.now()
        return wall - start[0], cpu - start[1]


def tokenizer_floor(path: Path, model: str = "gpt-4o-mini") -> tuple[tuple[float, float], int, int]:
    """Seconds to encode each message's text once (reading and parsing the file are not
    counted; a line at a time, so memory stays bounded), messages and tokens."""
    from conversations.engine.profiles import default_profile
    from conversations.engine.vocabulary import get_encoding

    encoding = get_encoding(default_profile(model).encoding)
    encoding.encode_ordinary("warm up")  # first-use costs outside the count
    wall = cpu = 0.0
    messages = tokens = 0
    with path.open() as handle:
        for line in handle:
            texts = [m["content"] for m in json.loads(line)["messages"]]
            started = time.perf_counter(), time.process_time()
            tokens += sum(len(encoding.encode_ordinary(text)) for text in texts)
            wall += time.perf_counter() - started[0]
            cpu += time.process_time() - started[1]
            messages += len(texts)
    return (wall, cpu), messages, tokens


def _tables() -> dict[str, Any]:
    from conversations import models

    names = {"conversation": "Conversation", "message": "Message", "turn": "Turn"}
    return {name: getattr(models, names.get(name, "UsageRecord")) for name in TABLES}


def rows_delete(organization_id: int) -> None:
    """The organization's imported rows, by SQL (the ORM's cascade reads every id first),
    then a vacuum: the next run writes into clean tables, as the first one did."""
    from django.db import connection, transaction

    from conversations import models
    from conversations.services import rollups

    tables = _tables()
    with transaction.atomic(), connection.cursor() as cursor:
        # Every rollup an import keeps (issue 13) first: some point at the conversations.
        rollups.organization_forget(
            organization=models.Organization.objects.get(pk=organization_id)
        )
        for name in reversed(TABLES):
            table = tables[name]._meta.db_table
            cursor.execute(f"DELETE FROM {table} WHERE {OWNED[name]}", [organization_id])
    with connection.cursor() as cursor:
        cursor.execute("VACUUM " + ", ".join(t._meta.db_table for t in tables.values()))


def copy_floor(organization_id: int, clock: Clock) -> tuple[float, float]:
    """Seconds to COPY the organization's imported rows back as raw bytes, and commit:
    dumped with COPY TO, deleted, then written back under their own ids into the same
    tables (constraints, indexes and deferred foreign-key checks included)."""
    from django.db import connection, transaction

    dumps: list[tuple[str, bytes]] = []
    raw = connection.connection
    with raw.cursor() as cursor:
        for name, model in _tables().items():
            columns = ", ".join(f'"{f.column}"' for f in model._meta.concrete_fields)
            where = OWNED[name].replace("%s", str(int(organization_id)))
            table = model._meta.db_table
            data = bytearray()
            with cursor.copy(
                f"COPY (SELECT {columns} FROM {table} WHERE {where}) TO STDOUT"
            ) as copy:
                for block in copy:
                    data += block
            dumps.append((f"COPY {table} ({columns}) FROM STDIN", bytes(data)))
    rows_delete(organization_id)
    started = clock.now()
    with transaction.atomic(), raw.cursor() as cursor:
        for statement, data in dumps:
            with cursor.copy(statement) as copy:
                copy.write(data)
    return clock.since(started)


class Phases:
    """Seconds spent in the import's steps, by wrapping the functions that do them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.beside: set[str] = set()  # steps on the import's analysis thread

    def wrap(self, module: object, name: str, label: str, *, beside: bool = False) -> None:
        function = getattr(module, name, None)
        if function is None:  # a step the code measured does not have
            return
        if beside:
            self.beside.add(label)

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
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best one counts")
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
    from conversations.services import bulk, imports, rollups, transcripts

    if args.orm:
        bulk.COPY_VENDORS = frozenset()
    call_command("migrate", verbosity=0)
    postgres = connection.vendor == "postgresql"
    size_mb = path.stat().st_size / 1e6
    print(f"database          {connection.vendor}, best of {args.repeat} runs")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()" if postgres else "SELECT NULL")
        clock = Clock(cursor.fetchone()[0])

    phases = Phases()
    phases.wrap(transcripts, "_not_yet_imported", "duplicate check (hashes, a query a chunk)")
    # Since the analysis thread, these two run beside the import's thread: their time
    # overlaps the others', and the import's thread only waits for what is left of them.
    threaded = hasattr(transcripts, "_analysed")
    phases.wrap(
        transcripts, "analyze", "analysis (tokens, cache simulation, prices)", beside=threaded
    )
    phases.wrap(
        transcripts,
        "_conversation_rows",
        "rows built (dicts, usage records priced)",
        beside=threaded,
    )
    phases.wrap(transcripts, "_analysed", "waiting for the analysis thread")
    phases.wrap(transcripts, "_rows_copy_write", "rows written (ids, COPY)")
    phases.wrap(transcripts, "_rows_orm_write", "rows written (ORM bulk_create)")
    phases.wrap(rollups, "conversations_added", "rollups summed (a chunk's, staged)")
    if hasattr(rollups, "chunk_added"):  # since chunk_sums.py: summed in Python
        phases.wrap(rollups, "chunk_added", "rollups summed (a chunk's, in Python)")
    phases.wrap(rollups.Staged, "fold", "rollups added (the import's, at its end)")
    rss_before = peak_rss_mb()
    best: tuple[float, dict[str, float]] | None = None
    cpus: list[float] = []
    floors: list[tuple[float, float]] = []
    copies: list[tuple[float, float]] = []
    for run in range(args.repeat):
        Organization.objects.filter(slug="bench-import").delete()
        organization = Organization.objects.create(name="bench", slug="bench-import")
        phases.seconds = {}
        started = clock.now()
        job = imports.import_path(organization=organization, paths=[path])
        elapsed, cpu = clock.since(started)
        cpus.append(cpu)
        if job.status != "succeeded":
            raise SystemExit(f"import failed: {job.status} {job.error}")
        if best is None or elapsed < best[0]:
            best = (elapsed, dict(phases.seconds))
        records = UsageRecord.objects.filter(organization=organization).count()
        if run == 0:
            rss_import = peak_rss_mb()
        floor, messages, tokens = tokenizer_floor(path)
        floors.append(floor)
        if hasattr(transcripts, "analysis_thread"):
            # tiktoken is fastest on the first thread that used it (its regex's pools):
            # since the import's analysis thread, that is that thread, not this one.
            floors.append(transcripts.analysis_thread().submit(tokenizer_floor, path).result()[0])
        if postgres:
            copies.append(copy_floor(organization.id, clock))
        last = run == args.repeat - 1
        if postgres and not (last and args.keep):
            rows_delete(organization.id)
        if not (last and args.keep):
            organization.delete()
    assert best is not None
    elapsed, seconds = best
    rows = job.messages + job.turns + records + job.conversations
    print(f"file              {size_mb:.0f} MB, {job.conversations:,} conversations")
    print(
        f"stored            {job.messages:,} messages, {job.turns:,} turns, {records:,} usage records"
    )
    print(f"tokens            {job.tokens:,} billed (prompts re-sent every turn)")
    cpu = min(cpus)
    print(f"import            {elapsed:.1f} s wall ({size_mb / elapsed:.1f} MB/s), {cpu:.1f} s CPU")
    for label, spent in seconds.items():
        beside = " (analysis thread)" if label in phases.beside else ""
        print(f"  {label:<44} {spent:5.1f} s{beside}")
    rest = elapsed - sum(spent for label, spent in seconds.items() if label not in phases.beside)
    print(f"  {'parsing, file hash, job rows, commit':<44} {rest:5.1f} s")
    print(f"rows per second   {rows / elapsed:,.0f} ({rows:,} rows)")
    print(
        f"peak RSS          {rss_import:.0f} MB (before the import: {rss_before:.0f} MB; target < 300 MB)"
    )
    floor, floor_cpu = min(w for w, _ in floors), min(c for _, c in floors)
    print(
        f"tokenizer floor   {floor:.2f} s wall, {floor_cpu:.2f} s CPU "
        f"(tiktoken, {messages:,} messages once, {tokens:,} tokens)"
    )
    if not copies:
        return
    copied, copied_cpu = min(w for w, _ in copies), min(c for _, c in copies)
    print(
        f"COPY floor        {copied:.2f} s wall, {copied_cpu:.2f} s CPU "
        f"(the same {rows:,} rows as raw COPY, committed)"
    )
    # CPU: this process and its PostgreSQL backend, both sides of the import.
    for name, spent, tokenizer, copy in (
        ("wall", elapsed, floor, copied),
        ("CPU", cpu, floor_cpu, copied_cpu),
    ):
        target = 3 * tokenizer + copy
        print(
            f"ratio ({name}){' ' * (10 - len(name))}{spent / tokenizer:.1f}x the tokenizer floor, "
            f"{spent / copy:.1f}x the COPY floor; {spent / target:.2f}x the target "
            f"3 x tokenizer + COPY = {target:.1f} s"
        )


if __name__ == "__main__":
    main()
