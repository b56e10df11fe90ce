"""Import benchmark: a large chat JSONL through the real import path, with bounded memory.

    .venv/bin/python bench/import.py                 # 500 MB, SQLite under var/ by default
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/costlab_bench .venv/bin/python bench/import.py

Generates the file once under bench/out/ (deterministic), imports it into a throwaway
organization with conversations.services.imports.import_path (parse -> tokenize -> cache simulation -> price ->
bulk insert, one transaction), and prints rows per second and peak RSS. Target: < 300 MB RSS.
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--keep", action="store_true", help="keep the imported rows")
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
    from conversations.services import imports

    call_command("migrate", verbosity=0)
    Organization.objects.filter(slug="bench-import").delete()
    organization = Organization.objects.create(name="bench", slug="bench-import")
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
    print(f"rows per second   {rows / elapsed:,.0f} ({rows:,} rows)")
    print(
        f"peak RSS          {peak_rss_mb():.0f} MB (before the import: {rss_before:.0f} MB; target < 300 MB)"
    )
    if not args.keep:
        organization.delete()


if __name__ == "__main__":
    main()
