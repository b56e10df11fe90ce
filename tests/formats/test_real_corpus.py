"""Agreement of costlab's prompt-token estimates with what OpenAI reported, over the real-log
corpus (tests/fixtures/real/README.md: 4,360 Chat Completions calls from 31 public repositories).

Prints the figures (run with `-s` to see them): share of calls whose estimate equals the
reported prompt_tokens, share within 1 %, the worst gaps. Calls with an image of unknown size
are excluded from the shares and counted, and so are calls whose recording is not the request
OpenAI billed (EDITED_RECORDINGS: each reason a check on the recording, printed with its count).
The floors are today's figures, so a change that
makes counting worse fails here; issue 10's targets replace them once reached.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from conversations.engine.analysis import CallAnalysis, analyze
from conversations.engine.pricing import Rates
from conversations.engine.profiles import default_profile
from conversations.engine.types import Call, ChatMessage
from conversations.engine.vocabulary import get_encoding
from conversations.formats import parse_files

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "real"

# Floors: a little under what this test measures today (58.8 % / 62.2 % when it was written,
# 91.4 % / 95.0 % with the rendering rules of render.py, messages.py and schemas.py, 94.9 % /
# 97.7 % with the edited recordings left out and the rules for parallel calls, names, tool
# rounds' addressed names, first object properties and tool_choice "none"; 96.2 % / 98.2 %
# with a parallel call's results as one JSON array and legacy function rounds as tool rounds;
# 95.6 % / 97.6 % with nine more sources, 3,192 calls measured; 96.4 % / 98.3 % with the gpt-5
# family's parallel calls, its json_schema formats and array items' labels; 90.8 % / 94.1 % with
# Adala's 406 calls, 3,595 measured: its enum arrays and forced gpt-3.5 calls, corpus README);
# 96.8 % / 98.5 % with number constraints, `Array<...>` items, multi-line unions, merged allOf
# and a blank comment line between a title and a description (schemas.py); 97.0 % / 98.7 %
# with two dd-trace-py recordings left out whose usage OpenAI never reported (3,593 measured)
# and open parameters objects (schemas.OPEN_PARAMETERS_TOKENS); 98.0 % / 98.9 % with o4-mini's
# tools and tool rounds (profiles.py), the gpt-5 family's undescribed functions and unlabelled
# `Array<...>` items with comments (schemas.py); 98.3 % / 99.0 % with dspy-rb's 659 calls,
# 4,252 measured; 98.3 % / 99.3 % (4,180 and 4,223) with described type lists laid out as
# alternatives (schemas._variants) and an assistant's text beside its tool calls counted as a
# message of its own (messages.encode_message).
EQUAL_FLOOR = 0.983
WITHIN_1_PERCENT_FLOOR = 0.993
# The same shares without dspy-rb.jsonl, whose plain-text prompts alone lifted the corpus past
# 99 % within 1 % (98.0 % / 98.9 % of 3,593 without it before the two rules above; 98.05 % /
# 99.19 %, 3,523 and 3,564, with them): the target must hold on the other 30 sources too.
PLAIN_TEXT_SOURCE = "dspy-rb.jsonl"
EQUAL_FLOOR_WITHOUT_PLAIN_TEXT = 0.980
WITHIN_1_PERCENT_FLOOR_WITHOUT_PLAIN_TEXT = 0.991
TARGET_EQUAL = 0.95
TARGET_WITHIN_1_PERCENT = 0.99
WORST_SHOWN = 15


# openai-dotnet's image tests record each generated image as this 1x1 PNG ("Replace large images
# with a small 1x1 PNG in recordings to save space": tests/Images/ImageTestFixtureBase.cs since
# its commit 65d5703f), including where the test then sends the image to a chat call. OpenAI
# billed that call for the real image: the same recorded request reports 25515 and 36849 prompt
# tokens, 14 text tokens + 2833 + 4 or 6 tiles of 5667 (a 1024x1024 and a 1024x1536 image on
# gpt-4o-mini), where the placeholder would be one tile (29 calls, openai-dotnet.jsonl lines
# 143-171).
_DOTNET_PLACEHOLDER = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAC0lEQVQYV2NgAAIAAAUAAarVyFEAAAAASUVORK5CYII="
)
PLACEHOLDER_IMAGE = "image replaced by the recorder's 1x1 placeholder (openai-dotnet)"
# A response that calls a function its request does not declare answered another request: the
# recording pairs one test's request with another's response (dd-trace-py.jsonl line 138: no
# tools in the request, a call of extract_student_info in the response).
UNDECLARED_CALL = "response calls a function the recorded request does not declare"
# OpenAI streams usage only to a request that asks for it (`stream_options.include_usage`,
# offered since May 2024). dd-trace-py.jsonl line 135 is a stream of gpt-3.5-turbo-0301 from
# April 2023 whose usage chunk was written into the cassette in September 2024 (dd-trace-py
# commit c07d7ab8a3, "capture token usage for streamed chat/completions"); its 17 prompt
# tokens are the 3-per-message count, where every other -0301 call (31 of them, e.g.
# dd-trace-py.jsonl lines 54, 57, 117-127, all exact) bills 4 per message.
UNASKED_STREAM_USAGE = "streamed usage the request did not ask for (stream_options)"
# One response recorded twice with different usage: the copy whose completion_tokens are fewer
# than its own reply's tokens carries another call's usage. dd-trace-py.jsonl line 58 repeats
# line 102's gpt-3.5-turbo-0613 response (same id, same 180-token reply) with the usage of the
# -0301 cassettes (lines 54 and 57: 21, 59, 80), copied in when the cassette was re-recorded
# in dd-trace-py commit 9e22fd118d; line 102 keeps the billed 20.
COPIED_USAGE = "usage copied from another call (same response id, reply longer than billed)"


def _declared(request: dict[str, Any]) -> set[Any]:
    names = set()
    for tool in request.get("tools") or []:
        if isinstance(tool, dict):
            spec = tool.get("function") or tool.get("custom") or {}
            names.add(spec.get("name") if isinstance(spec, dict) else None)
    for function in request.get("functions") or []:
        names.add(function.get("name") if isinstance(function, dict) else None)
    return names


def _called(response: dict[str, Any]) -> list[Any]:
    called = []
    for choice in response.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        for call in message.get("tool_calls") or []:
            spec = call.get("function") or call.get("custom") or {}
            called.append(spec.get("name"))
        if isinstance(message.get("function_call"), dict):
            called.append(message["function_call"].get("name"))
    return called


def _unasked_stream_usage(record: dict[str, Any]) -> bool:
    if not (record.get("source") or {}).get("reassembled_from_stream"):
        return False
    options = (record.get("request") or {}).get("stream_options")
    return not (isinstance(options, dict) and options.get("include_usage"))


def _reply_tokens(response: dict[str, Any]) -> int:
    encoding = get_encoding(default_profile(response.get("model")).encoding)
    total = 0
    for choice in response.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(encoding.encode(content, disallowed_special=()))
    return total


def _copied_usage(record: dict[str, Any], usages: dict[str, set[str]]) -> bool:
    response = record.get("response") or {}
    usage = response.get("usage") or {}
    if len(usages.get(response.get("id") or "", ())) < 2:
        return False
    return int(usage.get("completion_tokens") or 0) < _reply_tokens(response)


def usages_by_response(lines: list[str]) -> dict[str, set[str]]:
    """Each response id's recorded usages (as JSON), to find a response recorded twice."""
    found: dict[str, set[str]] = {}
    for line in lines:
        response = json.loads(line).get("response") or {}
        if response.get("id"):
            usage = json.dumps(response.get("usage"), sort_keys=True)
            found.setdefault(response["id"], set()).add(usage)
    return found


def edited_recording(line: str, usages: dict[str, set[str]] | None = None) -> str | None:
    """Why a corpus line's recorded request is not the one OpenAI billed, or None. Checks the
    recording only, never the gap, so a rule change cannot hide behind it. `usages`: the
    corpus's usages by response id (usages_by_response)."""
    if _DOTNET_PLACEHOLDER in line:
        return PLACEHOLDER_IMAGE
    record = json.loads(line)
    declared = _declared(record.get("request") or {})
    if any(name not in declared for name in _called(record.get("response") or {})):
        return UNDECLARED_CALL
    if _unasked_stream_usage(record):
        return UNASKED_STREAM_USAGE
    if _copied_usage(record, usages or {}):
        return COPIED_USAGE
    return None


@dataclass(frozen=True, slots=True)
class Gap:
    location: str  # "crewai.jsonl line 603"
    model: str
    estimated: int
    reported: int
    features: str

    @property
    def gap(self) -> int:
        return self.estimated - self.reported


@dataclass(frozen=True, slots=True)
class Agreement:
    calls: int
    unknown_size: int  # excluded: a part whose size (hence tokens) is unknown
    equal: int
    within_1_percent: int
    gaps: list[Gap]
    # excluded: the recording is not the billed request (edited_recording), by reason
    edited: dict[str, list[Gap]]

    @property
    def measured(self) -> int:
        return self.calls - self.unknown_size - sum(len(g) for g in self.edited.values())

    @property
    def equal_share(self) -> float:
        return self.equal / self.measured

    @property
    def within_share(self) -> float:
        return self.within_1_percent / self.measured


def corpus_files() -> list[Path]:
    """The Chat Completions files (the `.responses.jsonl` ones wait for a Responses parser)."""
    return sorted(
        path for path in CORPUS.glob("*.jsonl") if not path.name.endswith(".responses.jsonl")
    )


def _part_kinds(message: ChatMessage) -> Iterator[str]:
    content = message.get("content")
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and part.get("type") not in (None, "text"):
            yield str(part["type"])


def features(call: Call, messages: list[ChatMessage], model: str) -> str:
    """What a call uses beyond plain text, to read the worst gaps by."""
    found: set[str] = set()
    if call.tools:
        found.add("tools")
    if isinstance(call.response_format, dict):
        found.add(str(call.response_format.get("type")))
    for index in call.request:
        message = messages[index]
        role = message.get("role")
        if role in ("tool", "function"):
            found.add("tool_results")
        if message.get("tool_calls") or message.get("function_call"):
            found.add("tool_calls")
        if message.get("name"):
            found.add("name")
        found.update(_part_kinds(message))
    if model.startswith(("o1", "o3", "o4", "gpt-5")):
        found.add("reasoning")
    return ",".join(sorted(found)) or "text"


def _unpriced(call: Call, prompt_tokens: int) -> Rates | None:
    return Rates(input=Decimal(0), cached_input=Decimal(0), output=Decimal(0))


def measure(paths: list[Path]) -> Agreement:
    results: list[tuple[CallAnalysis, list[ChatMessage]]] = []
    lines: dict[str, str] = {}
    for path in paths:
        with path.open(encoding="utf-8") as file:
            lines |= {
                f"{path.name} line {n}": text for n, text in enumerate(file, 1)
            }  # one analysis per file: their calls are unrelated
        analysis = analyze(
            parse_files([path]),
            profile_for=default_profile,
            rates_for=_unpriced,
            retention_seconds=300,
        )
        results += [
            (call, conversation.transcript.messages)
            for conversation in analysis.conversations
            for call in conversation.calls
            if call.call.usage is not None
        ]
    usages = usages_by_response(list(lines.values()))
    unknown = equal = within = 0
    gaps = []
    edited: dict[str, list[Gap]] = {}
    for result, messages in results:
        if result.unknown_images:
            unknown += 1
            continue
        usage = result.call.usage
        assert usage is not None
        reported, estimated = usage.prompt_tokens, result.estimated_prompt_tokens
        model = result.model or ""
        gap = Gap(
            result.call.location,
            model,
            estimated,
            reported,
            features(result.call, messages, model),
        )
        reason = edited_recording(lines[result.call.location], usages)
        if reason is not None:
            edited.setdefault(reason, []).append(gap)
            continue
        equal += estimated == reported
        within += abs(estimated - reported) <= reported / 100
        gaps.append(gap)
    gaps.sort(key=lambda g: abs(g.gap) / max(1, g.reported), reverse=True)
    return Agreement(len(results), unknown, equal, within, gaps, edited)


def report(agreement: Agreement) -> str:
    lines = [
        f"real-log corpus: {agreement.calls} calls with reported usage, "
        f"{agreement.unknown_size} left out (a part of unknown size)",
        *(f"  {len(gaps)} left out: {reason}" for reason, gaps in sorted(agreement.edited.items())),
        f"  estimate == reported: {agreement.equal_share:.1%} "
        f"(floor {EQUAL_FLOOR:.1%}, target {TARGET_EQUAL:.0%})",
        f"  within 1 %:           {agreement.within_share:.1%} "
        f"(floor {WITHIN_1_PERCENT_FLOOR:.1%}, target {TARGET_WITHIN_1_PERCENT:.0%})",
        "  worst gaps (estimated - reported):",
    ]
    lines += [
        f"    {g.location}: {g.model} estimated {g.estimated} reported {g.reported} "
        f"({g.gap:+d}) [{g.features}]"
        for g in agreement.gaps[:WORST_SHOWN]
    ]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def agreement() -> Agreement:  # measured once for both tests: it takes a few seconds
    return measure(corpus_files())


def test_it_measures_every_call_with_reported_usage(agreement: Agreement) -> None:
    assert agreement.calls == 4360
    assert agreement.unknown_size < agreement.calls / 20


def test_it_agrees_with_the_reported_prompt_tokens(agreement: Agreement) -> None:
    print("\n" + report(agreement))
    assert agreement.equal_share >= EQUAL_FLOOR, report(agreement)
    assert agreement.within_share >= WITHIN_1_PERCENT_FLOOR, report(agreement)


def test_it_agrees_without_the_plain_text_source(agreement: Agreement) -> None:
    others = [g for g in agreement.gaps if not g.location.startswith(PLAIN_TEXT_SOURCE + " ")]
    assert len(others) < len(agreement.gaps)  # the source is in the corpus, and left out here
    equal = sum(g.gap == 0 for g in others) / len(others)
    within = sum(abs(g.gap) <= g.reported / 100 for g in others) / len(others)
    print(
        f"\nwithout {PLAIN_TEXT_SOURCE}: {len(others)} measured, {equal:.2%} equal, {within:.2%} within 1 %"
    )
    assert equal >= EQUAL_FLOOR_WITHOUT_PLAIN_TEXT
    assert within >= WITHIN_1_PERCENT_FLOOR_WITHOUT_PLAIN_TEXT
    assert within >= TARGET_WITHIN_1_PERCENT


def test_it_leaves_out_only_recordings_that_are_not_the_billed_request(
    agreement: Agreement,
) -> None:
    """The left-out calls are named by a check on their recording; none of them is one that
    costlab counts right (an exclusion must not hide a call the rules explain)."""
    edited = [gap for gaps in agreement.edited.values() for gap in gaps]
    assert len(agreement.edited[PLACEHOLDER_IMAGE]) == 29
    assert len(agreement.edited[UNDECLARED_CALL]) == 1
    assert [gap.location for gap in agreement.edited[UNASKED_STREAM_USAGE]] == [
        "dd-trace-py.jsonl line 135"
    ]
    assert [gap.location for gap in agreement.edited[COPIED_USAGE]] == ["dd-trace-py.jsonl line 58"]
    assert all(gap.gap != 0 for gap in edited)


def test_it_tells_a_stream_that_asked_for_usage_from_one_that_did_not() -> None:
    streamed = {"source": {"reassembled_from_stream": True}, "response": {"id": "a"}}
    asked = {**streamed, "request": {"stream_options": {"include_usage": True}}}
    unasked = {**streamed, "request": {"stream": True}}
    assert edited_recording(json.dumps(asked)) is None
    assert edited_recording(json.dumps(unasked)) == UNASKED_STREAM_USAGE


def test_it_blames_copied_usage_only_on_the_copy_whose_reply_outgrows_it() -> None:
    def record(completion_tokens: int) -> str:
        message = {"role": "assistant", "content": "one two three four five six"}
        response = {
            "id": "chatcmpl-same",
            "model": "gpt-4o",
            "choices": [{"message": message}],
            "usage": {"prompt_tokens": 9, "completion_tokens": completion_tokens},
        }
        return json.dumps({"request": {}, "response": response, "source": {}})

    billed, copied = record(6), record(2)
    usages = usages_by_response([billed, copied])
    assert edited_recording(billed, usages) is None
    assert edited_recording(copied, usages) == COPIED_USAGE
    # recorded once, a short usage is the recorder's edit of the reply, not copied usage
    assert edited_recording(copied, usages_by_response([copied])) is None
