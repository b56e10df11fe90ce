"""The catalogue's counting facts agree with the engine's: a price row's tokens per message,
per name and reply priming override the engine's profile for its model (PriceBook.profile),
so a catalogue row that kept the defaults where the engine measured otherwise would make
every import count that model the old way."""

from __future__ import annotations

import pytest

from conversations.engine.profiles import default_profile
from pricing.book import PriceBook
from pricing.models import ModelPrice

pytestmark = pytest.mark.django_db


def test_it_counts_every_catalogue_model_as_the_engine_does() -> None:
    book = PriceBook.for_organization(None)
    rows = [
        row
        for row in ModelPrice.objects.filter(organization=None, source="catalogue")
        if not row.is_pattern
    ]
    assert len(rows) >= 40
    for row in rows:
        engine, priced = default_profile(row.model), book.profile(row.model)
        facts = ("tokens_per_message", "tokens_per_name", "reply_priming", "encoding")
        assert {f: getattr(priced, f) for f in facts} == {f: getattr(engine, f) for f in facts}, (
            row.model
        )


def test_it_bills_a_search_model_only_its_messages_text() -> None:
    profile = PriceBook.for_organization(None).profile("gpt-4o-search-preview-2025-03-11")
    assert (profile.tokens_per_message, profile.tokens_per_name, profile.reply_priming) == (
        -1,
        0,
        0,
    )
