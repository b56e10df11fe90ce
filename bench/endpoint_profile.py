"""The built-in endpoint's per-call work, counted rather than timed: the conversation of
`bench/calls.py`'s endpoint part (a ~1,500-word system prompt, then --turns turns of a
--user-words question and a --reply-tokens reply, each request the whole history as the SDK
sends it) through what the endpoint does per request (request_read, simulate_usage, the
answer's dict), without the bench's floor in between.

    .venv/bin/python bench/endpoint_profile.py --lines          # Python lines and calls per call
    .venv/bin/python bench/endpoint_profile.py --runs 10        # wall time per call, best run

Counts do not move with other jobs on a shared machine, unlike times. --lines counts the
sources' lines (the compiled modules have none: it turns them off); timings run whatever
`bin/compile` left (COSTLAB_COMPILED=off: the sources). Instructions per call
(valgrind's cachegrind; the difference of 3 runs and 1 cancels the start-up):

    for n in 1 3; do valgrind --tool=cachegrind --cachegrind-out-file=/tmp/cg.$n \\
        .venv/bin/python bench/endpoint_profile.py --runs $n; done
    cg_diff /tmp/cg.1 /tmp/cg.3 | grep '^summary'   # the Ir of 2 runs: / (2 x --turns)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costlab.dev_settings")


def _requests(turns: int, user_words: int, reply_tokens: int) -> list[bytes]:
    from bench.calls import _conversation
    from calls import simulated

    system, questions = _conversation(turns, user_words)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    raws = []
    for question in questions:
        messages.append({"role": "user", "content": question})
        sent = {"model": "gpt-4o", "messages": messages, "max_completion_tokens": reply_tokens}
        raws.append(json.dumps(sent, separators=(",", ":"), ensure_ascii=False).encode())
        # The reply the endpoint writes (its seed is the last message), sent back next turn.
        seed = simulated._seed(messages)
        reply = simulated.reply_text("o200k_base", reply_tokens, seed=seed)
        messages.append({"role": "assistant", "content": reply})
    return raws


def _conversation_run(raws: list[bytes], reply_tokens: int) -> None:
    from calls import protocol, simulated
    from conversations.engine.cache_policy import PREFIX_128
    from conversations.engine.profiles import default_profile

    profile = default_profile("gpt-4o")
    simulated.simulate_reset()
    for turn, raw in enumerate(raws):
        body = simulated.request_read(
            "bench", raw, lambda data, reader: protocol.request_parse(data, reader=reader)
        )
        call = simulated.simulate_usage(
            org_key="bench",
            body=body,
            now=1_000_000.0 + 10 * turn,
            profile=profile,
            policy=PREFIX_128,
            retention_seconds=600,
            default_reply_tokens=reply_tokens,
        )
        tier = protocol.service_tier(body)
        protocol.Completion.new(model=body["model"], tier=tier, call=call, now=0.0).body()


def _lines(raws: list[bytes], reply_tokens: int) -> None:
    lines: collections.Counter[tuple[str, str]] = collections.Counter()
    calls: collections.Counter[tuple[str, str]] = collections.Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        where = (Path(frame.f_code.co_filename).name, frame.f_code.co_name)
        if event == "call":
            calls[where] += 1
        elif event == "line":
            lines[where] += 1
        return tracer

    sys.settrace(tracer)
    try:
        _conversation_run(raws, reply_tokens)
    finally:
        sys.settrace(None)
    turns = len(raws)
    total_lines, total_calls = sum(lines.values()) / turns, sum(calls.values()) / turns
    print(f"per call: {total_lines:.1f} lines, {total_calls:.1f} calls")
    for (file, function), count in lines.most_common(30):
        print(
            f"  {count / turns:6.1f} lines {calls[file, function] / turns:5.1f} calls  {file} {function}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--user-words", type=int, default=60)
    parser.add_argument("--reply-tokens", type=int, default=120)
    parser.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument("--lines", action="store_true", help="count lines, one run, no timing")
    args = parser.parse_args()
    if args.lines:  # Python lines exist only in the sources (conversations/engine/compiled.py)
        os.environ["COSTLAB_COMPILED"] = "off"
    from conversations.engine import compiled

    print(f"modules: {compiled.status()}")
    raws = _requests(args.turns, args.user_words, args.reply_tokens)
    _conversation_run(raws, args.reply_tokens)  # warm-up: vocabularies, the reply tape
    if args.lines:
        _lines(raws, args.reply_tokens)
        return
    best = float("inf")
    for _ in range(args.runs):
        started = time.perf_counter()
        _conversation_run(raws, args.reply_tokens)
        best = min(best, time.perf_counter() - started)
    print(f"per call: {best / args.turns * 1e6:.1f} us (best of {args.runs} runs)")


if __name__ == "__main__":
    main()
