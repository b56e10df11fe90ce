"""Benchmark of the analysis engine against its floor and against per-call recounting.

    python bench/engine.py [--conversations 1000 --turns 40 --recount-sample 50]

The corpus is deterministic (seeded): a ~1,500-token system prompt shared by every
conversation, user messages of 20-200 words, replies of 100-600 words, calls seconds to
minutes apart, conversations spread over one day, no prompt_cache_key (so the shared prefix
route runs above 15 requests a minute at the busiest hours and overflows). Figures printed:
- floor: tiktoken encoding every message once (the least any exact analysis must do);
- analysis: conversations.engine.analysis.analyze (tokens, cache simulation, pricing);
- recount: counting every request from scratch at every turn, as the cookbook function
  does; run on a sample of conversations and extrapolated (labelled as such).
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conversations.engine import compiled
from conversations.engine.analysis import Analysis, analyze, turns_from_messages
from conversations.engine.pricing import Rates
from conversations.engine.profiles import default_profile
from conversations.engine.types import ChatMessage, Transcript
from conversations.engine.vocabulary import get_encoding

MODEL = "gpt-4o"
RATES = Rates(input=Decimal("2.50"), cached_input=Decimal("1.25"), output=Decimal("10"))
COMMON = [
    *("the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "was", "on"),
    *("be", "by", "this", "are", "from", "or", "at", "which", "an", "not", "have", "has"),
    *("can", "will", "cost", "token", "prompt", "cache", "model", "user", "system", "reply"),
    *("request", "turn", "price", "window", "budget", "context", "history", "summary"),
    *("message", "answer", "question", "data", "report"),
]
SYLLABLES = [
    *("ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "ve", "za"),
    *("bri", "cho", "dra", "fle", "gri", "plo", "qua", "stu", "tre", "vin"),
]


def _vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    invented = {
        "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(size)
    }
    return COMMON * 20 + sorted(invented)


def _text(rng: random.Random, words: list[str], low: int, high: int) -> str:
    chosen = rng.choices(words, k=rng.randint(low, high))
    sentences = [" ".join(chosen[i : i + 12]).capitalize() + "." for i in range(0, len(chosen), 12)]
    return " ".join(sentences)


def _system_prompt(words: list[str], tokens: int = 1500) -> str:
    enc = get_encoding(default_profile(MODEL).encoding)
    text = _text(random.Random(7), words, 2000, 2000)
    return enc.decode(enc.encode_ordinary(text)[:tokens])


def build_corpus(conversations: int, turns: int, seed: int = 20240501) -> list[Transcript]:
    rng = random.Random(seed)
    words = _vocabulary(rng)
    system = _system_prompt(words)
    day = datetime(2024, 5, 1, tzinfo=UTC)
    corpus = []
    for number in range(conversations):
        at = day + timedelta(seconds=rng.uniform(0, 86_400))
        messages: list[ChatMessage] = [{"role": "system", "content": system}]
        times: list[datetime | None] = [at]
        for _ in range(turns):
            at += timedelta(seconds=rng.uniform(5, 240))
            messages.append({"role": "user", "content": _text(rng, words, 20, 200)})
            times.append(at)
            at += timedelta(seconds=rng.uniform(2, 30))
            messages.append({"role": "assistant", "content": _text(rng, words, 100, 600)})
            times.append(at)
        corpus.append(
            Transcript(
                messages=messages, external_id=f"bench-{number}", model=MODEL, message_times=times
            )
        )
    return corpus


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float  # process time: less disturbed than wall time on a shared machine


def _timed(started: tuple[float, float]) -> Timing:
    return Timing(time.perf_counter() - started[0], time.process_time() - started[1])


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def floor_seconds(corpus: list[Transcript]) -> tuple[Timing, int]:
    """tiktoken encoding every message's text exactly once."""
    enc = get_encoding(default_profile(MODEL).encoding)
    started = _now()
    tokens = 0
    for transcript in corpus:
        for message in transcript.messages:
            tokens += len(enc.encode_ordinary(message["content"]))
    return _timed(started), tokens


def analysis_seconds(corpus: list[Transcript], retention: int) -> tuple[Timing, Analysis]:
    started = _now()
    analysis = analyze(
        corpus,
        profile_for=default_profile,
        rates_for=lambda call, prompt: RATES,
        retention_seconds=retention,
    )
    return _timed(started), analysis


def recount_seconds(corpus: list[Transcript]) -> tuple[Timing, int]:
    """The cookbook's num_tokens_from_messages run on every call's whole request: each
    message is re-encoded at every turn that re-sends it (O(n^2))."""
    profile = default_profile(MODEL)
    enc = get_encoding(profile.encoding)
    started = _now()
    total = 0
    for transcript in corpus:
        for call in turns_from_messages(transcript.messages):
            count = profile.reply_priming
            for index in call.request:
                count += profile.tokens_per_message
                for key, value in transcript.messages[index].items():
                    count += len(enc.encode(value))
                    count += profile.tokens_per_name if key == "name" else 0
            total += count
    return _timed(started), total


def _list(values: Iterable[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _run_only(phase: str, corpus: list[Transcript], args: argparse.Namespace) -> None:
    floor_seconds(corpus[:1])  # first-use costs outside the counted runs
    for _ in range(args.repeat):
        if phase == "floor":
            floor_seconds(corpus)
        elif phase == "analysis":
            analysis_seconds(corpus, args.retention)
        else:
            recount_seconds(corpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--recount-sample", type=int, default=50)
    parser.add_argument("--retention", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best one counts")
    parser.add_argument(
        "--only",
        choices=("floor", "analysis", "recount"),
        help="run just this phase --repeat times, untimed (for bench/instructions.sh)",
    )
    args = parser.parse_args()

    get_encoding(default_profile(MODEL).encoding)  # vocabulary load is not part of the race
    if args.only:
        _run_only(args.only, build_corpus(args.conversations, args.turns), args)
        return
    corpus = build_corpus(args.conversations, args.turns)
    messages = sum(len(t.messages) for t in corpus)
    print(f"modules: {compiled.status()}")
    print(f"corpus: {len(corpus):,} conversations x {args.turns} turns, {messages:,} messages")
    analysis_seconds(corpus[:20], args.retention)  # warm-up: first-run allocations
    rss_before = _rss_mib()

    # Floor, analysis and recount take turns, best of N each: the machine may be shared and
    # noisy, and taking turns exposes all three to the same conditions.
    floors: list[Timing] = []
    runs: list[Timing] = []
    recounts: list[Timing] = []
    sample = corpus[: args.recount_sample]
    corpus_tokens = recount_total = 0
    for _ in range(args.repeat):
        floor_run, corpus_tokens = floor_seconds(corpus)
        floors.append(floor_run)
        run, analysis = analysis_seconds(corpus, args.retention)
        runs.append(run)
        recount_run, recount_total = recount_seconds(sample)
        recounts.append(recount_run)
        totals = analysis.totals
        reasons = Counter(
            call.miss_reason.kind if call.miss_reason else "full hit"
            for conversation in analysis.conversations
            for call in conversation.calls
        )
        del analysis
    floor = Timing(min(f.wall for f in floors), min(f.cpu for f in floors))
    best = Timing(min(r.wall for r in runs), min(r.cpu for r in runs))
    print(
        f"floor (tiktoken encode_ordinary, each message once): best wall {floor.wall:.2f} s "
        f"(runs {_list(f.wall for f in floors)}), best cpu {floor.cpu:.2f} s; "
        f"{corpus_tokens:,} tokens, {corpus_tokens / floor.wall:,.0f} tokens/s"
    )
    print(
        f"analysis (tokens + cache simulation + pricing): best wall {best.wall:.2f} s "
        f"(runs {_list(r.wall for r in runs)}), best cpu {best.cpu:.2f} s; "
        f"{totals.calls:,} calls, {corpus_tokens / best.wall:,.0f} corpus tokens/s, "
        f"{totals.prompt_tokens / best.wall:,.0f} prompt tokens accounted/s"
    )
    print(
        f"  prompt tokens {totals.prompt_tokens:,}, cached {totals.cached_tokens:,} "
        f"({totals.metrics.token_hit_rate or 0:.1%}), cost ${totals.cost or 0:,.2f} "
        f"vs ${totals.metrics.cost_no_cache or 0:,.2f} without caching"
    )
    print(f"  calls by cache outcome: {dict(reasons.most_common())}")
    wall_ratio, cpu_ratio = best.wall / floor.wall, best.cpu / floor.cpu
    print(
        f"analysis / floor: {wall_ratio:.2f}x wall, {cpu_ratio:.2f}x cpu "
        f"(target <= 1.5x: {'ok' if wall_ratio <= 1.5 else 'MISSED'} on wall time)"
    )

    recount = Timing(min(r.wall for r in recounts), min(r.cpu for r in recounts))
    scale = len(corpus) / len(sample)
    print(
        f"per-call recount (cookbook function on every request), MEASURED on "
        f"{len(sample)} conversations: best wall {recount.wall:.2f} s "
        f"(runs {_list(r.wall for r in recounts)}), best cpu {recount.cpu:.2f} s; "
        f"{recount_total:,} tokens counted"
    )
    estimate = Timing(recount.wall * scale, recount.cpu * scale)
    print(
        f"per-call recount EXTRAPOLATED x{scale:g} to the full corpus: "
        f"{estimate.wall:.1f} s wall, {estimate.cpu:.1f} s cpu"
    )
    speedup, cpu_speedup = estimate.wall / best.wall, estimate.cpu / best.cpu
    print(
        f"analysis speed-up over per-call recount: {speedup:.1f}x wall, {cpu_speedup:.1f}x cpu "
        f"(target >= 20x: {'ok' if speedup >= 20 else 'MISSED'} on wall time)"
    )
    # Bests can come from different moments of a machine whose speed drifts; the rounds
    # ran back to back, so their own ratios show how much of a figure is the machine.
    rounds = sorted(r.wall * scale / a.wall for r, a in zip(recounts, runs, strict=True))
    print(
        f"  speed-up round by round (each round: floor, analysis, recount, back to back): {_list(rounds)}; "
        f"median {statistics.median(rounds):.2f}x"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"memory: RSS {rss_before:,.0f} MiB before the timed runs (corpus + vocabulary), "
        f"peak RSS {peak:,.0f} MiB"
    )


if __name__ == "__main__":
    main()
