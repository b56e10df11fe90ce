"""Fewer garbage collections during an import (costlab/gc_spacing.py): raised while the
import's chunks are built, put back after, and cyclic garbage still collected."""

from __future__ import annotations

import gc
import random
import threading
from typing import Any

import pytest

from conversations.services import transcripts
from conversations.services.transcripts import transcripts_store
from costlab.gc_spacing import SPACED_THRESHOLD, spaced_collections

from .factories import OrganizationFactory
from .test_rollups import _transcripts


@pytest.mark.django_db
def test_an_import_runs_with_spaced_collections(monkeypatch: pytest.MonkeyPatch) -> None:
    before = gc.get_threshold()
    assert before[0] < SPACED_THRESHOLD
    seen: list[tuple[int, int, int]] = []
    chunk_store = transcripts._chunk_store

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.get_threshold())
        return chunk_store(*args, **kwargs)

    monkeypatch.setattr(transcripts, "_chunk_store", spy)
    monkeypatch.setattr(transcripts, "CHUNK", 4)
    totals = transcripts_store(
        organization=OrganizationFactory.create(),
        transcripts=_transcripts(random.Random(3), 10),
    )
    assert totals.conversations == 10
    assert seen == [(SPACED_THRESHOLD, *before[1:])] * 3
    assert gc.get_threshold() == before


def test_the_last_one_out_puts_the_thresholds_back() -> None:
    before = gc.get_threshold()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    inside: list[tuple[int, int, int]] = []

    def second() -> None:
        first_in.wait()
        with spaced_collections():
            second_in.set()
            first_out.wait()
            inside.append(gc.get_threshold())  # the first caller has left: still raised

    thread = threading.Thread(target=second)
    thread.start()
    with spaced_collections():
        first_in.set()
        second_in.wait()
    first_out.set()
    thread.join()
    assert inside == [(SPACED_THRESHOLD, *before[1:])]
    assert gc.get_threshold() == before


def test_cyclic_garbage_is_still_collected() -> None:
    collections = gc.get_stats()[0]["collections"]
    with spaced_collections():
        for _ in range(3 * SPACED_THRESHOLD):
            cycle: list[Any] = []
            cycle.append(cycle)
        del cycle
        assert gc.get_stats()[0]["collections"] > collections
