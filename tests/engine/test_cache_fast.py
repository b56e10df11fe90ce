"""The simulator's shortcut for a prompt that extends its store's latest one (and reuses the
latest request's rate and store) gives exactly what the full search gives: the same
sequences of requests, shortcut on and off, compared result for result."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from conversations.engine.cache import (
    RATE_WINDOW_SECONDS,
    CacheResult,
    CacheSimulator,
    PromptBlocks,
    _Rate,
)
from conversations.engine.profiles import default_profile
from conversations.engine.render import TranscriptRenderer


def _both(retention: int = 600, **options: int) -> tuple[CacheSimulator, CacheSimulator]:
    fast, slow = CacheSimulator(retention, **options), CacheSimulator(retention, **options)
    slow.fast = False
    return fast, slow


def _same(a: CacheResult, b: CacheResult) -> None:
    assert (a.cached_tokens, a.reason, a.write_tokens) == (
        b.cached_tokens,
        b.reason,
        b.write_tokens,
    )


@pytest.mark.pure_python  # spies on calls a compiled module makes directly
@pytest.mark.parametrize("seed", range(12))
def test_random_conversations_match_the_full_search(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Conversations that grow, branch back (a split), resend a shorter prompt, switch keys
    and organizations, go idle past retention, overflow the rate, or come without a time;
    with a lifetime of their own or not, hits in 256-token steps or 128, and the tokens of
    older prompts let go (forget_sources: a divergence is then named by its block)."""
    rng = random.Random(seed)
    fast, slow = _both(retention=300, rpm_limit=4, hit_step=256 if seed % 2 else 128)
    searched = 0
    search = fast._search

    def counted(*args: Any) -> CacheResult:
        nonlocal searched
        searched += 1
        return search(*args)

    monkeypatch.setattr(fast, "_search", counted)  # to count the shortcut's calls
    lines: list[list[int]] = [[rng.randrange(50) for _ in range(1100)] for _ in range(3)]
    now = 1_000.0
    hits = kinds = 0
    seen: set[str] = set()
    line, org, key = 0, "a", None
    for _ in range(160):
        if rng.random() < 0.4:  # else the same conversation goes on, as a chat does
            line = rng.randrange(len(lines))
        tokens = lines[line]
        action = rng.random()
        if action < 0.55:  # the usual: the line grows
            tokens.extend(rng.randrange(50) for _ in range(rng.randrange(1, 400)))
        elif action < 0.7:  # branch back: a new line from a cut of this one
            cut = rng.randrange(1000, len(tokens) + 1)
            lines.append(tokens[:cut] + [rng.randrange(50) for _ in range(rng.randrange(300))])
            tokens = lines[-1]
        elif action < 0.8:  # a shorter prompt of the same line (ends inside a segment)
            tokens = tokens[: rng.randrange(1000, len(tokens) + 1)]
        now += rng.choice([1.0, 5.0, 30.0, 400.0])  # bursts (overflow) and idle (expiry)
        at = None if rng.random() < 0.05 else now
        if rng.random() < 0.3:
            org = rng.choice(["a", "a", "a", "b"])
            key = rng.choice([None, None, None, "k"])
        ttl = rng.choice([None, None, 100.0, 900.0])
        results = [
            simulator.process(
                PromptBlocks.from_tokens(tokens),
                org=org,
                prompt_cache_key=key,
                at=at,
                ttl_seconds=ttl,
            )
            for simulator in (fast, slow)
        ]
        _same(*results)
        if rng.random() < 0.05:
            fast.forget_sources()
            slow.forget_sources()
        hits += results[0].cached_tokens > 0
        if results[0].reason is not None:
            seen.add(results[0].reason.kind)
        kinds = len(seen)
    assert hits > 20 and kinds >= 3  # the sequences reach hits and several kinds of miss
    assert fast.timestamps_missing == slow.timestamps_missing
    assert 20 < 160 - searched < 140  # the shortcut is taken, and often not


def test_blocks_the_shortcut_grew_are_found_by_a_branch_inside_them() -> None:
    """A conversation's run of calls grows its tip without indexing the new blocks; a
    request searched for afterwards (a branch back inside them) still finds them all."""
    rng = random.Random(7)
    tokens = [rng.randrange(50) for _ in range(1100)]
    fast, slow = _both()
    for turn in range(6):
        tokens += [rng.randrange(50) for _ in range(300)]
        for simulator in (fast, slow):
            simulator.process(PromptBlocks.from_tokens(tokens), at=100.0 + turn)
    branch = tokens[:2000] + [99] * 400  # diverges at token 2000, inside the grown part
    results = [s.process(PromptBlocks.from_tokens(branch), at=110.0) for s in (fast, slow)]
    _same(*results)
    assert results[0].cached_tokens == 1920 and results[0].reason is not None
    assert results[0].reason.token == 2000


def test_rendered_requests_share_the_chain_list_and_match() -> None:
    """A renderer's requests hand the simulator the chain's own list of hashes (not a copy)
    when no block is closed by reply priming: the chain grows it afterwards, and the hits
    stay those of the full search on copies."""
    profile = default_profile("gpt-4o")
    rng = random.Random(5)
    words = "cache prompt token model request history cost latency".split()
    messages: list[dict[str, object]] = [
        {"role": "system", "content": " ".join(rng.choices(words, k=1500))}
    ]
    for _ in range(40):
        messages.append({"role": "user", "content": " ".join(rng.choices(words, k=60))})
        messages.append({"role": "assistant", "content": " ".join(rng.choices(words, k=120))})
    renderer = TranscriptRenderer(messages, profile)  # (a transcript's messages, all known)
    fast, slow = _both()
    shared = 0
    for turn in range(40):
        rendered = renderer.render(list(range(2 * turn + 2)))
        blocks = rendered.block_list()
        shared += blocks is rendered.block_list()
        copy = PromptBlocks(rendered.length, list(blocks), rendered)
        _same(
            fast.process(rendered, at=1_000.0 + 10 * turn),
            slow.process(copy, at=1_000.0 + 10 * turn),
        )
    assert shared > 30  # most calls: no copy
    final = fast.process(renderer.render(list(range(len(messages)))), at=1_500.0)
    assert final.cached_tokens > 0 and final.reason is None


@dataclass
class _EagerRate:
    """The route rate as it was: times out of the minute dropped as soon as they are."""

    seen: list[float] = field(default_factory=list)
    served: list[float] = field(default_factory=list)
    latest: float = float("-inf")

    def admit(self, now: float, limit: int) -> bool:
        self.latest = max(self.latest, now)
        for times in (self.seen, self.served):
            del times[: bisect.bisect_right(times, self.latest - RATE_WINDOW_SECONDS)]
        bisect.insort(self.seen, now)
        if _count(self.served, now) >= limit:
            return False
        bisect.insort(self.served, now)
        return True

    def rpm(self, now: float) -> int:
        return _count(self.seen, now)


def _count(times: list[float], now: float) -> int:
    return sum(now - RATE_WINDOW_SECONDS < time <= now for time in times)


@pytest.mark.parametrize("seed", range(8))
def test_the_rate_lets_old_times_go_late_and_counts_the_same(seed: int) -> None:
    """The route rate keeps times past the minute until they pile up (not one delete a
    call): each call is admitted or overflows, at the rpm it reports, as when they were
    dropped at once, in time order or not (a later chunk's older calls), bursts included."""
    rng = random.Random(seed)
    limit = rng.choice([0, 1, 3, 15])
    rate, eager = _Rate(), _EagerRate()
    now = 10_000.0
    admitted = 0
    for _ in range(3_000):
        now += rng.choice([0.0, 0.5, 1.0, 4.0, 20.0, 70.0])
        at = now - rng.choice([0.0, 30.0, 65.0, 500.0]) if rng.random() < 0.1 else now
        verdict = rate.admit(at, limit)
        assert verdict == eager.admit(at, limit)
        assert rate.rpm(at) == eager.rpm(at)
        admitted += verdict
    assert limit == 0 or 0 < admitted < 3_000  # some served, some overflowed
    assert len(rate.seen) <= 4 * (eager.rpm(now) + 32)  # what is kept stays bounded
