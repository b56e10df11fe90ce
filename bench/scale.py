"""Scale benchmark: the pages at a million usage records (issue 13, "A million calls").

    createdb -h 127.0.0.1 -U postgres costlab_scale_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/costlab_scale_bench .venv/bin/python bench/scale.py
    ... bench/scale.py --records 200000        # a smaller run
    ... bench/scale.py --reuse                 # time the pages of the data already there

Fills the database with N billing usage records (default 1,000,000) in two organizations,
about 10:1, over 90 days and 8 models (one of them unpriced): conversations of 5 to 35 turns
whose prompts grow turn by turn, 70 % of turns with reported usage (and costlab's estimate
beside it), three quarters of the eligible ones cache hits. Everything is written by bulk SQL
(generate_series, INSERT ... SELECT), then the rollups are built from the raw rows by the
same service `manage.py rollups_rebuild` uses.

Then, for each organization, it times what a member's browser asks for: the overview, each
filter, the conversation table partial under every sort, the cache page, the breakdown
page, a conversation page and its what-if. Server time is the median of 5 requests through Django's test Client (the view,
its middleware and template, no network), with the number of queries. The last line is

    overview_ms=M filtered_ms=M table_ms=M small_org_ms=M

(big organization: the overview, the slowest filter, the slowest sort; small organization:
its overview), and after it

    cache_ms=M breakdown_ms=M prefix_breakers_ms=M

the slowest cache page (whole range, 30 days, 30 days + model), the slowest breakdown page
(by model, day, week, month, prompt_cache_key, end user, API key, project, source, tag and
conversation, with a period, a model, a key or a tag filter, a comparison) and the slowest
prefix-breakers section of either organization. The data has keys, end users, API keys,
projects, tags and prefix breakers (one conversation in ten); the big organization's days are
New York's.
PostgreSQL only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costlab.settings")
os.environ.setdefault("COSTLAB_DEV", "true")

BIG, SMALL = "scale-big", "scale-small"
DAYS = 90
FIRST_DAY = date(2026, 8, 1)
# Eight models: six priced from the catalogue, gpt-4 (priced, never cached) and a model
# no price row knows (its calls stay unpriced, as pages must show).
MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-5-mini",
    "gpt-4",
    "acme-finetune-7b",
]
NO_CACHE = {"gpt-4", "acme-finetune-7b"}
TARGETS = {"overview": 150.0, "filtered": 150.0, "table": 50.0, "small_org": 50.0}
# The insights pages (issue 14): the slowest cache page and breakdown page of either
# organization, and the prefix breakers section alone (the cache page's costliest part).
INSIGHT_TARGETS = {"cache": 150.0, "breakdown": 150.0, "prefix breakers": 50.0}
REPEAT = 5


def _models_create() -> None:
    """A temporary table of the eight models with their catalogue rates, for the SQL."""
    from django.db import connection

    from pricing.models import ModelPrice

    rows = []
    for i, name in enumerate(MODELS):
        price = (
            ModelPrice.objects.filter(model=name, organization=None)
            .order_by("-effective_from")
            .first()
        )
        rate = price.input_per_1m if price else None
        cached = (price.cached_input_per_1m or rate) if price else None
        output = price.output_per_1m if price else None
        rows.append(
            (i, name, price.pk if price else None, rate, cached, output, name not in NO_CACHE)
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS bench_models (i int, name text, price_id bigint, "
            "r_in numeric, r_cached numeric, r_out numeric, caches boolean)"
        )
        cursor.execute("TRUNCATE bench_models")
        cursor.executemany("INSERT INTO bench_models VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)


FILL = """
-- Conversations: 5 to 35 turns (20 on average), started at random over the 90 days; one in
-- ten puts a timestamp in its system prompt (a prefix breaker on every turn after the first).
CREATE TEMP TABLE bench_conv ON COMMIT DROP AS
SELECT g, 5 + (hashint(g, 1) %% 31) AS turns, hashint(g, 2) %% 8 AS m,
       %(start)s::timestamptz + (hashint(g, 3) %% (%(days)s * 86400)) * interval '1 second' AS started,
       hashint(g, 12) %% 10 = 0 AS breaks
FROM generate_series(1, %(conversations)s) AS g;

-- Tags: a team on 70 %% of conversations (8 teams), an environment on 30 %%; a fifth of
-- them imported from files, the rest from API logs.
INSERT INTO conversations_conversation
    (code, organization_id, source, external_id, title, model, started_at, has_timestamps,
     warnings, content_sha256, created, tags)
SELECT gen_random_uuid(), %(org)s,
       CASE WHEN hashint(c.g, 13) %% 5 = 0 THEN 'import' ELSE 'api_log' END,
       'bench-' || c.g, 'Support thread ' || c.g,
       m.name, c.started, true, '[]'::jsonb, md5(%(org)s || '-' || c.g), c.started,
       CASE WHEN hashint(c.g, 14) %% 10 < 7
            THEN jsonb_build_object('team', 'team-' || hashint(c.g, 15) %% 8) ELSE '{}'::jsonb END
       || CASE WHEN hashint(c.g, 16) %% 10 < 3
               THEN jsonb_build_object('env', 'prod') ELSE '{}'::jsonb END
FROM bench_conv c JOIN bench_models m ON m.i = c.m
ORDER BY c.g;

CREATE TEMP TABLE bench_map ON COMMIT DROP AS
SELECT c.*, conv.id AS conversation_id
FROM bench_conv c JOIN conversations_conversation conv
  ON conv.organization_id = %(org)s AND conv.external_id = 'bench-' || c.g;

-- Messages: a system prompt, then a question and an answer per turn.
INSERT INTO conversations_message (conversation_id, index, role, data, tokens, sent_at)
SELECT b.conversation_id, i,
       CASE WHEN i = 0 THEN 'system' WHEN i %% 2 = 1 THEN 'user' ELSE 'assistant' END,
       jsonb_build_object(
           'role', CASE WHEN i = 0 THEN 'system' WHEN i %% 2 = 1 THEN 'user' ELSE 'assistant' END,
           'content', CASE WHEN i = 0 THEN repeat('You are ACME''s support assistant. ', 40)
                           ELSE 'Message ' || i || ' of thread ' || b.g || ': '
                                || repeat('order refund shipping ', 1 + hashint(b.g, i) %% 12) END),
       CASE WHEN i = 0 THEN 280 ELSE 12 + 3 * (hashint(b.g, i) %% 12) END,
       b.started + (i / 2) * interval '40 seconds'
FROM bench_map b, generate_series(0, 2 * b.turns) AS i;

-- Turns: turn n sent messages [0, 2n + 2) and got message 2n + 2 back. Half the
-- conversations send a prompt_cache_key (one of 3,000), 80 %% name an end user (one of
-- 20,000), every call an API key (one of 12) and 60 %% a project (one of 5).
INSERT INTO conversations_turn
    (conversation_id, index, request_ranges, response_id, model, service_tier,
     prompt_cache_key, is_batch, external_id, started_at, latency_ms,
     estimated_prompt_tokens, estimated_completion_tokens, simulated_cached_tokens,
     cache_retention, simulated_cache_write_tokens, miss_reason, miss_detail, over_context,
     end_user, api_key, project, miss_message, miss_token, responses_api)
SELECT b.conversation_id, n, jsonb_build_array(jsonb_build_array(0, 2 * n + 2)), msg.id,
       m.name, 'default',
       CASE WHEN hashint(b.g, 17) %% 2 = 0 THEN 'key-' || hashint(b.g, 18) %% 3000 ELSE '' END,
       false, '', b.started + n * interval '40 seconds',
       CASE WHEN hashint(b.g, n + 7) %% 10 = 0 THEN NULL
            ELSE 300 + hashint(b.g, n + 9) %% 2500 END,
       t.prompt, t.completion, t.cached, '', 0,
       CASE WHEN NOT m.caches THEN 'not_supported' WHEN t.breaker THEN 'prefix_changed'
            WHEN t.cached = 0 THEN 'cold' ELSE '' END,
       CASE WHEN t.breaker THEN 'prefix_changed: message 0 differs from token 12' ELSE '' END,
       false,
       CASE WHEN hashint(b.g, 19) %% 5 <> 0 THEN 'user-' || hashint(b.g, 20) %% 20000 ELSE '' END,
       'key_' || hashint(b.g, 21) %% 12,
       CASE WHEN hashint(b.g, 22) %% 5 < 3 THEN 'proj_' || hashint(b.g, 23) %% 5 ELSE '' END,
       CASE WHEN t.breaker THEN 0 END,
       CASE WHEN t.breaker THEN 12 + hashint(b.g, 24) %% 3 END,
       false
FROM bench_map b
JOIN bench_models m ON m.i = b.m
CROSS JOIN generate_series(0, b.turns - 1) AS n
CROSS JOIN LATERAL (
    SELECT 1200 + 350 * n + hashint(b.g, n) %% 300 AS prompt,
           40 + hashint(b.g, n + 1) %% 560 AS completion,
           m.caches AND n > 0 AND b.breaks AS breaker,
           CASE WHEN m.caches AND n > 0 AND NOT b.breaks AND hashint(b.g, n + 2) %% 4 <> 0
                THEN ((1200 + 350 * n - 400) / 128) * 128 ELSE 0 END AS cached
) AS t
JOIN conversations_message msg ON msg.conversation_id = b.conversation_id AND msg.index = 2 * n + 2;

-- Usage: 70 %% of turns reported by the API (the billing record, with costlab's estimate
-- beside it), the rest estimated only (the estimate bills).
CREATE TEMP TABLE bench_usage ON COMMIT DROP AS
SELECT t.id AS turn_id, t.conversation_id, t.started_at, m.name, m.price_id, m.r_in,
       m.r_cached, m.r_out, m.caches, t.estimated_prompt_tokens AS prompt,
       t.estimated_completion_tokens AS completion, t.simulated_cached_tokens AS cached,
       hashint(t.id::int, 5) %% 10 < 7 AS reported
FROM conversations_turn t
JOIN bench_map b ON b.conversation_id = t.conversation_id
JOIN bench_models m ON m.i = b.m;

INSERT INTO conversations_usagerecord
    (turn_id, organization_id, conversation_id, occurred_at, model, source, cache_source,
     is_billing, raw, prompt_tokens, completion_tokens, total_tokens, reasoning_tokens,
     input_uncached, input_cached, input_cache_write, output, cache_eligible, price_id,
     cost_input_uncached, cost_input_cached, cost_input_cache_write, cost_output, cost_total,
     cost_uncached)
SELECT u.turn_id, %(org)s, u.conversation_id, u.started_at, u.name, s.source, s.cache_source,
       s.billing,
       CASE WHEN s.source = 'reported' THEN jsonb_build_object(
           'prompt_tokens', u.prompt, 'completion_tokens', u.completion,
           'total_tokens', u.prompt + u.completion,
           'prompt_tokens_details', jsonb_build_object('cached_tokens', u.cached)) END,
       u.prompt, u.completion, u.prompt + u.completion, 0,
       u.prompt - u.cached, u.cached, 0, u.completion, u.caches,
       u.price_id,
       round((u.prompt - u.cached) * u.r_in / 1000000, 12),
       round(u.cached * u.r_cached / 1000000, 12),
       CASE WHEN u.price_id IS NOT NULL THEN 0 END,
       round(u.completion * u.r_out / 1000000, 12),
       round(((u.prompt - u.cached) * u.r_in + u.cached * u.r_cached
              + u.completion * u.r_out) / 1000000, 12),
       round((u.prompt * u.r_in + u.completion * u.r_out) / 1000000, 12)
FROM bench_usage u
CROSS JOIN LATERAL (VALUES ('estimated', 'simulated', NOT u.reported),
                           ('reported', 'reported', true)) AS s(source, cache_source, billing)
WHERE s.source = 'estimated' OR u.reported
ORDER BY u.started_at;
"""

# Secondary indexes of the big tables are dropped during the load and built again after it:
# one sort per index instead of a million insertions into each. Constraint indexes stay (the
# fill joins through some of them).
SECONDARY_INDEXES = """
SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
WHERE t.relname IN ('conversations_usagerecord', 'conversations_turn', 'conversations_message')
  AND NOT i.indisprimary
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
"""

HASHINT = """
CREATE OR REPLACE FUNCTION hashint(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS
$$ SELECT abs(hashtext(a::text || ':' || b::text)) $$;
"""


def fill(records: int) -> None:
    from django.db import connection, transaction

    from conversations.models import Organization
    from conversations.services import deletion
    from conversations.services.rollups import organization_rebuild

    for old in Organization.objects.filter(slug__in=[BIG, SMALL]):
        deletion.organization_delete(organization=old)  # one DELETE per table
    _models_create()
    big_share = records * 10 // 11
    # The big organization keeps its days in New York: its day, week and month groups and
    # date filters cut at New York's midnights, which the rollups' days follow.
    plan = [
        (BIG, "Scale (big)", big_share, "America/New_York"),
        (SMALL, "Scale (small)", records - big_share, "UTC"),
    ]
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")
        # The rows are consistent by construction: skip the foreign-key triggers, which
        # would otherwise check ~5 million references one by one at COMMIT (a bulk load's
        # usual trick; it needs a superuser, as the bench's database owner is).
        cursor.execute("SET session_replication_role TO replica")
        cursor.execute(HASHINT)
        cursor.execute(SECONDARY_INDEXES)
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f"DROP INDEX {name}")
    for slug, name, share, zone in plan:
        step = time.perf_counter()
        with transaction.atomic():
            org = Organization.objects.create(name=name, slug=slug, time_zone=zone)
            params = {
                "org": org.pk,
                "start": f"{FIRST_DAY.isoformat()} 00:00:00+00",
                "days": DAYS,
                # 20 turns per conversation on average, one billing record per turn.
                "conversations": max(1, share // 20),
            }
            with connection.cursor() as cursor:
                for statement in FILL.split(";\n"):
                    if statement.strip():
                        began = time.perf_counter()
                        cursor.execute(statement, params)
                        label = next(
                            line
                            for line in statement.strip().splitlines()
                            if not line.startswith("--")
                        )[:50]
                        timings[label] = timings.get(label, 0) + time.perf_counter() - began
            rows = time.perf_counter()
            organization_rebuild(organization=org)
            rollups = time.perf_counter() - rows
        print(
            f"filled {slug}: {time.perf_counter() - step:.1f} s (rollups from the raw rows: "
            f"{rollups:.1f} s)"
        )
    with connection.cursor() as cursor:
        began = time.perf_counter()
        for _, definition in indexes:
            cursor.execute(definition)
        timings["secondary indexes built again"] = time.perf_counter() - began
        cursor.execute("SET session_replication_role TO DEFAULT")
        cursor.execute("ANALYZE")
    for what, seconds in timings.items():
        print(f"  {seconds:6.1f} s  {what}")
    print(f"fill total: {time.perf_counter() - started:.1f} s (target < 120 s)")


@dataclass
class _Done:
    """A read timed like a request (timed() checks a status)."""

    value: Any
    status_code: int = 200


@dataclass
class Timing:
    median_ms: float
    best_ms: float
    cpu_ms: float  # this process's CPU (Python, template), median: less moved by the load
    queries: int

    def line(self, label: str) -> str:
        return (
            f"  {label:<40} {self.median_ms:8.1f} ms median  {self.best_ms:7.1f} best  "
            f"{self.cpu_ms:7.1f} cpu  {self.queries:3d} queries"
        )


def timed(run: Callable[[], Any]) -> Timing:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, cpu = [], []
    queries = 0
    for _ in range(REPEAT):
        with CaptureQueriesContext(connection) as captured:
            started, cpu_started = time.perf_counter(), time.process_time()
            response = run()
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - cpu_started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"status {response.status_code}")
        queries = len(captured.captured_queries)
    return Timing(statistics.median(times), min(times), statistics.median(cpu), queries)


def measure() -> dict[str, float]:
    from django.contrib.auth.models import User
    from django.db.models import Max, Min
    from django.test import Client
    from django.urls import reverse

    from conversations import breakdowns, cache_report, what_if
    from conversations.models import (
        ConversationTotals,
        Membership,
        Organization,
        Turn,
        UsageDay,
    )

    user, _ = User.objects.get_or_create(username="scale-bench")
    client = Client()
    client.force_login(user)
    results: dict[str, float] = {}
    for slug in (BIG, SMALL):
        org = Organization.objects.get(slug=slug)
        Membership.objects.get_or_create(user=user, organization=org)
        span = UsageDay.objects.filter(organization=org).aggregate(
            first=Min("day"), last=Max("day")
        )
        last: date = span["last"]
        top_model = (
            UsageDay.objects.filter(organization=org)
            .values_list("model", flat=True)
            .order_by("-calls")
            .first()
        )
        top_key = (
            Turn.objects.filter(conversation__organization=org)
            .exclude(prompt_cache_key="")
            .values_list("prompt_cache_key", flat=True)
            .first()
        ) or "-"
        overview = reverse("org_overview", args=[slug])
        table = reverse("conversation_table", args=[slug])
        month = {"date_from": (last - timedelta(days=29)).isoformat(), "date_to": last.isoformat()}
        print(f"\n{org.name}: {span['first']} to {last}")
        rows: list[tuple[str, str, dict[str, str], dict[str, str]]] = [
            ("overview", overview, {}, {}),
            ("overview, model filter", overview, {"model": top_model or ""}, {}),
            ("overview, last 30 days", overview, month, {}),
            ("overview, 30 days + model", overview, {**month, "model": top_model or ""}, {}),
            ("overview, htmx swap, 30 days", overview, month, {"HX-Request": "true"}),
        ]
        for sort in (
            "-cost",
            "cost",
            "-lost",
            "lost",
            "-tokens",
            "tokens",
            "-turns",
            "turns",
            "-created",
            "title",
        ):
            rows.append(
                (f"table partial sort={sort}", table, {"sort": sort}, {"HX-Request": "true"})
            )
        rows.append(("table partial sort=-cost, 30 days", table, {"sort": "-cost", **month}, {}))
        cache = reverse("cache_page", args=[slug])
        breakdown = reverse("breakdown_page", args=[slug])
        rows += [
            ("cache page", cache, {}, {}),
            ("cache page, last 30 days", cache, month, {}),
            ("cache page, 30 days + model", cache, {**month, "model": top_model or ""}, {}),
            ("breakdown by model", breakdown, {"by": "model"}, {}),
            ("breakdown by model, 30 days + compare", breakdown,
             {"by": "model", **month, "compare": "on"}, {}),
            ("breakdown by day", breakdown, {"by": "day"}, {}),
            ("breakdown by week", breakdown, {"by": "week"}, {}),
            ("breakdown by month, 30 days + model", breakdown,
             {"by": "month", **month, "model": top_model or ""}, {}),
            ("breakdown by key", breakdown, {"by": "key"}, {}),
            ("breakdown by key, last 30 days", breakdown, {"by": "key", **month}, {}),
            ("breakdown by key, 30 days + model", breakdown,
             {"by": "key", **month, "model": top_model or ""}, {}),
            ("breakdown by day, one key", breakdown, {"by": "day", "key": top_key}, {}),
            ("breakdown by end user", breakdown, {"by": "user"}, {}),
            ("breakdown by end user, 30 days + compare", breakdown,
             {"by": "user", **month, "compare": "on"}, {}),
            ("breakdown by API key", breakdown, {"by": "api_key"}, {}),
            ("breakdown by project", breakdown, {"by": "project"}, {}),
            ("breakdown by source", breakdown, {"by": "source"}, {}),
            ("breakdown by tag team", breakdown, {"by": "tag:team"}, {}),
            ("breakdown by model, tag team=team-1", breakdown,
             {"by": "model", "tag": "team=team-1"}, {}),
            ("breakdown by conversation", breakdown, {"by": "conversation"}, {}),
            ("breakdown by conversation, 30 days", breakdown,
             {"by": "conversation", **month}, {}),
            ("breakdown by conversation, htmx swap", breakdown,
             {"by": "conversation", **month}, {"HX-Request": "true"}),
        ]  # fmt: skip
        figures: dict[str, float] = {}
        for label, url, query, headers in rows:
            timing = timed(
                lambda url=url, query=query, headers=headers: client.get(
                    url, query, headers=headers
                )
            )
            figures[label] = timing.median_ms
            print(timing.line(label))
        # The prefix breakers alone, the cache page's costliest section (the page above
        # includes them).
        zone = org.time_zone
        for label, slice_ in (
            ("prefix breakers (cache page section)", breakdowns.Slice(zone=zone)),
            (
                "prefix breakers, last 30 days",
                breakdowns.Slice.of_dates(last - timedelta(days=29), last, zone=zone),
            ),
        ):
            timing = timed(
                lambda slice_=slice_, org=org: _Done(cache_report.prefix_breakers(org, slice_))
            )
            figures[label] = timing.median_ms
            print(timing.line(label))
        shown = cache_report.prefix_breakers(org, breakdowns.Slice(zone=zone))
        print(f"  ({len(shown)} breakers, {sum(b.calls for b in shown):,} calls)")
        if slug == BIG:
            # A streamed export is not a page (no target): its rows per second, once.
            started = time.perf_counter()
            exported = client.get(reverse("usage_export", args=[slug]), {"table": "turns", **month})
            lines = sum(chunk.count(b"\n") for chunk in exported.streaming_content)
            seconds = time.perf_counter() - started
            print(
                f"  export turns, last 30 days: {lines - 1:,} rows in {seconds:.1f} s "
                f"({(lines - 1) / seconds:,.0f} rows/s)"
            )
        totals = ConversationTotals.objects.filter(organization=org).order_by("-calls").first()
        assert totals is not None
        conversation = totals.conversation
        page = reverse("conversation_detail", args=[slug, conversation.code])
        print(
            timed(lambda page=page: client.get(page)).line(f"conversation ({totals.calls} turns)")
        )
        what = reverse("conversation_what_if", args=[slug, conversation.code])

        def cold_what_if(conversation: Any = conversation, what: str = what) -> Any:
            what_if.forget(conversation)  # the computation, not the cache
            return client.get(what, headers={"HX-Request": "true"})

        print(timed(cold_what_if).line("its what-if (computed, not cached)"))
        filters = [v for k, v in figures.items() if k.startswith("overview,")]
        sorts = [v for k, v in figures.items() if k.startswith("table partial")]
        for page in INSIGHT_TARGETS:
            slowest = max(v for k, v in figures.items() if k.startswith(page))
            results[page] = max(results.get(page, 0.0), slowest)
        if slug == BIG:
            results["overview"] = figures["overview"]
            results["filtered"] = max(filters)
            results["table"] = max(sorts)
        else:
            results["small_org"] = figures["overview"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000, help="billing usage records")
    parser.add_argument("--reuse", action="store_true", help="time the data already there")
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit("bench/scale.py needs PostgreSQL: set DATABASE_URL")
    call_command("migrate", verbosity=0)
    if not args.reuse:
        fill(args.records)
    from conversations.models import UsageRecord

    billing = UsageRecord.objects.filter(is_billing=True).count()
    print(f"billing usage records in the database: {billing:,}")
    # Wall times on a shared machine grow with its load: say what it was.
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    results = measure()
    print("\nload average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    for name, target in TARGETS.items():
        verdict = "ok" if results[name] < target else "OVER"
        print(f"{name + '_ms':<22} {results[name]:8.1f} ms   target < {target:.0f} ms   {verdict}")
    for name, target in INSIGHT_TARGETS.items():
        verdict = "ok" if results[name] < target else "OVER"
        print(
            f"{name.replace(' ', '_') + '_ms':<22} {results[name]:8.1f} ms   target < {target:.0f} ms   {verdict}"
        )
    print(" ".join(f"{name}_ms={results[name]:.0f}" for name in TARGETS))
    print(" ".join(f"{name.replace(' ', '_')}_ms={results[name]:.0f}" for name in INSIGHT_TARGETS))


if __name__ == "__main__":
    main()
