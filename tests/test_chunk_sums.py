"""An import chunk's rollup sums computed in Python (conversations/services/chunk_sums.py):
the same as the SQL over the raw rows, with no per-chunk aggregation in SQL (PostgreSQL).

The drift check (rollups.organization_drift) is the SQL oracle: it groups the raw rows as the
rollups' own statements do."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from conversations.models import CacheDay, DimensionDay, Organization
from conversations.services import chunk_sums, rollups, transcripts
from conversations.services.chunk_sums import pg_div, round_places
from conversations.services.transcripts import transcripts_store
from pricing.models import ModelPrice

from .factories import OrganizationFactory
from .test_rollups import _transcripts, assert_exact

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's numeric"),
]


def _operands(rng: random.Random) -> tuple[str, str, Decimal, int, Decimal, int]:
    """A division the rollups make, as SQL and as (value, display scale) pairs."""
    kind = rng.randrange(4)
    if kind == 0:  # a cost per uncached token (LOST's rate)
        cost = Decimal(rng.randrange(10 ** rng.randrange(1, 16))).scaleb(-12)
        tokens = rng.randrange(1, 10 ** rng.randrange(1, 8))
        return f"{cost}::numeric(24,12)", f"{tokens}::int", cost, 12, Decimal(tokens), 0
    if kind == 1:  # a price per token
        price = Decimal(rng.randrange(10 ** rng.randrange(1, 12))).scaleb(-6)
        return f"{price}::numeric(14,6)", "1000000", price, 6, Decimal(1_000_000), 0
    if kind == 2:  # cached rate / input rate (LOST's saved share)
        cached = Decimal(rng.randrange(10 ** rng.randrange(1, 12))).scaleb(-12)
        price = Decimal(rng.randrange(1, 10 ** rng.randrange(1, 12))).scaleb(-6)
        return f"{cached}::numeric(24,12)", f"{price}::numeric(14,6)", cached, 12, price, 6
    # the estimate gap, signed
    gap, reported = rng.randrange(-(10**6), 10**6), rng.randrange(1, 10 ** rng.randrange(1, 7))
    return f"{gap}::numeric(30,12)", f"{reported}::int", Decimal(gap), 12, Decimal(reported), 0


def test_it_divides_and_rounds_as_postgresql_does() -> None:
    rng = random.Random(13)
    with connection.cursor() as cursor:
        for _ in range(2000):
            left, right, a, a_scale, b, b_scale = _operands(rng)
            cursor.execute(f"SELECT ({left}) / ({right}), round(({left}) / ({right}), 12)")
            quotient, rounded = cursor.fetchone()
            mine = pg_div(a, a_scale, b, b_scale)
            # The same value and the same scale (its text), and the same once rounded.
            assert (str(mine), str(round_places(mine, 12))) == (str(quotient), str(rounded))


def test_an_import_sums_its_chunks_without_sql_aggregation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Priced and unpriced models, cache hits and misses, two time zones: exact rollups, and
    the SQL path (conversations_added) never runs."""

    def refuse(**kwargs: Any) -> None:
        raise AssertionError("a chunk was summed in SQL")

    monkeypatch.setattr(rollups, "conversations_added", refuse)
    monkeypatch.setattr(transcripts, "CHUNK", 9)
    for zone, seed in (("America/Los_Angeles", 1), ("UTC", 2)):
        organization = OrganizationFactory.create(time_zone=zone)
        transcripts_store(
            organization=organization, transcripts=_transcripts(random.Random(seed), 40)
        )
        # What the comparison covers: lost money and prefix breakers among the rows.
        assert CacheDay.objects.filter(organization=organization, missed_lost__gt=0).exists()
        assert_exact(organization)


def test_a_price_row_without_a_cached_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOST reads the price row's cached rate: a model without one sums exactly too."""
    monkeypatch.setattr(transcripts, "CHUNK", 5)
    priced = list(ModelPrice.objects.filter(model__in=["gpt-4o", "gpt-4o-mini"]))
    assert priced
    ModelPrice.objects.filter(pk=priced[0].pk).update(cached_input_per_1m=None)
    organization = OrganizationFactory.create()
    transcripts_store(organization=organization, transcripts=_transcripts(random.Random(5), 30))
    assert CacheDay.objects.filter(organization=organization, model=priced[0].model).exists()
    assert_exact(organization)


def test_a_chunk_it_cannot_sum_exactly_takes_the_sql_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tag value that is not a string (`tags ->> name` writes numbers its own way)."""
    monkeypatch.setattr(transcripts, "CHUNK", 4)
    taken: list[int] = []
    sql_path = rollups.conversations_added

    def spy(**kwargs: Any) -> None:
        taken.append(len(kwargs["conversation_ids"]))
        sql_path(**kwargs)

    monkeypatch.setattr(rollups, "conversations_added", spy)
    found = _transcripts(random.Random(7), 12)
    found[5].tags = {"batch": 7}  # type: ignore[dict-item]
    found[9].tags = {"team": "north"}
    organization: Organization = OrganizationFactory.create()
    transcripts_store(organization=organization, transcripts=found)
    assert taken == [4]  # the second chunk only
    assert DimensionDay.objects.filter(organization=organization, kind="tag:batch").exists()
    assert DimensionDay.objects.filter(organization=organization, kind="tag:team").exists()
    assert_exact(organization)
    with pytest.raises(chunk_sums.Unsupported):
        chunk_sums._tag_text(1.5)


def test_its_tables_have_the_figures_of_the_sql_s_in_order() -> None:
    """Rows move between the two paths by position (rollups.Staged.fold reads the SQL's
    sums into chunk_sums'): the same figures, in the same order."""
    from conversations.services import dimension_rollups

    figures = [name for name, _ in chunk_sums.DIMENSION_DAY.figures]
    assert figures == list(dimension_rollups.SUMS)
    # DimensionDay's kinds, and where each reads its value.
    assert tuple(dimension_rollups.KINDS) == chunk_sums.KINDS
    read = [expression.name for expression in dimension_rollups.KINDS.values()]
    assert read == ["conversation__source", *(f"turn__{c}" for c in chunk_sums.TURN_KIND_COLUMNS)]
    for table, shape in zip(rollups.ORG_DAY_TABLES, chunk_sums.ORG_DAY_SHAPES, strict=True):
        assert (shape.table, shape.keys) == (table.name, table.keys)
        assert [name for name, _ in shape.figures] == list(table.sums)
