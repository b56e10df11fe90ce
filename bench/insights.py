"""Insights benchmark (issue 14): the cache page's and the breakdowns' reads, and a streamed
CSV export, over N billing records of one organization, on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/costlab_bench .venv/bin/python bench/insights.py
    ... bench/insights.py --records 1000000 --keep      # fill once, then --reuse to time again

Fills the database by bulk SQL (generate_series: conversations of 20 calls, 90 days, 8 models,
a mix of miss reasons, 40 cache keys, 200 end users, 5 tags), then prints each read's time
(median of --repeat runs) and its row count. The rollups are built from the rows after the
fill: the cache page's summary and money lost, and breakdowns by model and period, read them;
the other dimensions, the prefix breakers and the exports read raw usage rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costlab.dev_settings")

SLUG = "bench-insights"
CALLS_PER_CONVERSATION = 20
MODELS = ["gpt-4.1", "gpt-4.1-mini", "gpt-4o", "gpt-4o-mini", "gpt-5", "gpt-5-mini", "gpt-4", "o3"]

FILL = """
INSERT INTO conversations_conversation
    (code, organization_id, source, external_id, title, model, started_at, has_timestamps,
     warnings, content_sha256, created, tags, import_job_id)
SELECT gen_random_uuid(), %(org)s, 'api_log', '', 'conversation ' || c, (%(models)s::text[])[1 + c %% 8],
       %(t0)s::timestamptz + (c %% 90) * interval '1 day', true, '[]', '', now(),
       jsonb_build_object('team', 'team-' || (c %% 5)), NULL
FROM generate_series(1, %(conversations)s) AS c;

INSERT INTO conversations_turn
    (conversation_id, index, request_ranges, model, service_tier, prompt_cache_key, end_user,
     api_key, project, is_batch, external_id, started_at, estimated_prompt_tokens, estimated_completion_tokens,
     simulated_cached_tokens, simulated_cache_write_tokens, cache_retention, miss_reason,
     miss_detail, miss_token, miss_message, over_context, responses_api)
SELECT c.id, t, jsonb_build_array(jsonb_build_array(0, 2 * t + 1)), c.model, '',
       'key-' || (c.id %% 40), 'user-' || (c.id %% 200), 'api-key-' || (c.id %% 3),
       'project-' || (c.id %% 2), false, '',
       c.started_at + t * interval '30 seconds', 1200 + 150 * t, 100, 0, 0, '',
       (ARRAY['cold', 'prefix_changed', 'expired', 'overflow', '', '', '', ''])[1 + (c.id + t) %% 8],
       '', CASE WHEN (c.id + t) %% 8 = 1 THEN 3 + (c.id %% 3) END,
       CASE WHEN (c.id + t) %% 8 = 1 THEN 0 END, false, false
FROM conversations_conversation c, generate_series(0, %(calls)s - 1) AS t
WHERE c.organization_id = %(org)s;

INSERT INTO conversations_usagerecord
    (turn_id, organization_id, conversation_id, occurred_at, model, source, cache_source,
     is_billing, raw, prompt_tokens, completion_tokens, total_tokens, reasoning_tokens,
     input_uncached, input_cached, input_cache_write, output, cache_eligible, price_id,
     cost_input_uncached, cost_input_cached, cost_input_cache_write, cost_output, cost_total,
     cost_uncached)
SELECT t.id, %(org)s, t.conversation_id, t.started_at, t.model, 'reported', 'reported', true,
       NULL, p.prompt, 100, p.prompt + 100, 0, p.prompt - p.cached, p.cached, 0, 100,
       t.model <> 'gpt-4', mp.id,
       (p.prompt - p.cached) * mp.input_per_1m / 1000000,
       p.cached * coalesce(mp.cached_input_per_1m, 0) / 1000000, 0,
       100 * mp.output_per_1m / 1000000,
       ((p.prompt - p.cached) * mp.input_per_1m + p.cached * coalesce(mp.cached_input_per_1m, 0)
        + 100 * mp.output_per_1m) / 1000000,
       (p.prompt * mp.input_per_1m + 100 * mp.output_per_1m) / 1000000
FROM conversations_turn t
JOIN conversations_conversation c ON c.id = t.conversation_id
CROSS JOIN LATERAL (
    SELECT t.estimated_prompt_tokens AS prompt,
           CASE WHEN t.miss_reason = '' AND t.model <> 'gpt-4'
                THEN t.estimated_prompt_tokens / 128 * 128 ELSE 0 END AS cached
) p
LEFT JOIN LATERAL (
    SELECT * FROM conversations_modelprice m
    WHERE m.model = t.model AND m.organization_id IS NULL
    ORDER BY m.effective_from DESC LIMIT 1
) mp ON true
WHERE c.organization_id = %(org)s;
"""


def fill(records: int) -> Any:
    from django.db import connection, transaction

    from conversations.models import Organization
    from conversations.services.rollups import organization_rebuild

    Organization.objects.filter(slug=SLUG).delete()
    organization = Organization.objects.create(name="Bench insights", slug=SLUG)
    conversations = max(1, records // CALLS_PER_CONVERSATION)
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            FILL,
            {
                "org": organization.id,
                "models": MODELS,
                "t0": "2026-08-01T00:00:00Z",
                "conversations": conversations,
                "calls": CALLS_PER_CONVERSATION,
            },
        )
        # The cache page and the model/period breakdowns read the rollups: build them from
        # the rows just written, as manage.py rollups_rebuild does.
        organization_rebuild(organization=organization)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"filled {conversations * CALLS_PER_CONVERSATION:,} records in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    return organization


def timed(name: str, run: Callable[[], int], repeat: int) -> None:
    times, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = run()
        times.append((time.perf_counter() - started) * 1000)
    print(f"{name:<40} {statistics.median(times):9.0f} ms  ({rows:,} rows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="Time the rows already filled.")
    args = parser.parse_args()

    import django

    django.setup()
    from datetime import date

    from conversations import breakdowns, cache_report
    from conversations.csv_export import csv_lines
    from conversations.models import Organization

    organization = Organization.objects.get(slug=SLUG) if args.reuse else fill(args.records)
    everything = breakdowns.Slice()
    month = breakdowns.Slice.of_dates(date(2026, 9, 1), date(2026, 9, 30))
    filtered = breakdowns.Slice.of_dates(
        date(2026, 9, 1), date(2026, 9, 30), model="gpt-4.1", tag_key="team", tag_value="team-1"
    )
    dims = breakdowns.DIMENSIONS
    reads: list[tuple[str, Callable[[], int]]] = [
        ("cache summary", lambda: cache_report.cache_summary(organization, everything).calls),
        ("cache summary, 30 days", lambda: cache_report.cache_summary(organization, month).calls),
        ("lost by reason", lambda: len(cache_report.lost_by_reason(organization, everything))),
        ("lost by day x reason", lambda: len(cache_report.lost_by_day(organization, everything))),
        ("lost by model x reason", lambda: len(cache_report.lost_by_model(organization, everything))),
        ("prefix breakers (+5 side by side)",
         lambda: len(cache_report.prefix_breakers(organization, everything))),
        ("breakdown by model", lambda: len(breakdowns.breakdown(organization, everything, dims["model"]))),
        ("breakdown by key", lambda: len(breakdowns.breakdown(organization, everything, dims["key"]))),
        ("breakdown by user, 30 days", lambda: len(breakdowns.breakdown(organization, month, dims["user"]))),
        ("breakdown by week, model+tag filter",
         lambda: len(breakdowns.breakdown(organization, filtered, dims["week"]))),
        ("export turns, 30 days (CSV lines)",
         lambda: sum(1 for _ in csv_lines(["x"], breakdowns.turn_export_rows(organization, month)))),
    ]  # fmt: skip
    for name, run in reads:
        timed(name, run, args.repeat)


if __name__ == "__main__":
    main()
