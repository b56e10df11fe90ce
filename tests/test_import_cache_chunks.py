"""A file longer than one import chunk shares one prompt cache: the conversations of the
second chunk find the prefixes the first chunk cached, as `analyze` of the same file says.
(Each chunk used to start with a cold cache: the 201st conversation of an import missed.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conversations.engine.analysis import ANALYSIS_CHUNK
from conversations.models import ImportStatus, Turn
from conversations.services import imports, transcripts

from .factories import OrganizationFactory
from .import_checks import analyze_json

pytestmark = pytest.mark.django_db

# ~1,600 tokens: over gpt-4o-mini's 1,024-token minimum, so the shared prefix caches.
SYSTEM = "You are ACME's support assistant. " + " ".join(f"rule {n} applies." for n in range(400))


def _log(path: Path, conversations: int) -> Path:
    """One call per conversation, a second apart, all with the same system prompt."""
    lines = []
    for n in range(conversations):
        line = {
            "conversation_id": f"c-{n}",
            "request": {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"question {n}"},
                ],
            },
            "response": {
                "id": f"r-{n}",
                "created": 1746000000 + n,
                "model": "gpt-4o-mini",
                "choices": [{"message": {"role": "assistant", "content": f"answer {n}"}}],
            },
        }
        lines.append(json.dumps(line))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_second_chunk_finds_the_cache_the_first_left(tmp_path: Path) -> None:
    assert transcripts.CHUNK == ANALYSIS_CHUNK
    path = _log(tmp_path / "calls.jsonl", ANALYSIS_CHUNK + 3)
    org = OrganizationFactory.create()
    job = imports.import_path(organization=org, paths=[path])
    assert job.status == ImportStatus.SUCCEEDED, job.error
    cached = dict(
        Turn.objects.filter(conversation__organization=org).values_list(
            "conversation__external_id", "simulated_cached_tokens"
        )
    )
    assert cached["c-0"] == 0  # the first call writes the cache
    assert cached["c-1"] > 1024
    # The first conversation of the second chunk hits like its neighbour in the first.
    assert cached[f"c-{ANALYSIS_CHUNK}"] == cached[f"c-{ANALYSIS_CHUNK - 1}"]
    # And `analyze` says the same of every call.
    report = analyze_json(path, org.slug)
    expected = {
        conversation["id"]: conversation["turns"][0]["simulated_cached_tokens"]
        for conversation in report["conversations"]
    }
    assert expected == cached
