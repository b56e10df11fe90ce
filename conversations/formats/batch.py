"""OpenAI Batch API files: the input file (`{"custom_id", "method", "url", "body"}` lines)
and the output file (`{"id", "custom_id", "response": {"status_code", "request_id",
"body"}, "error"}` lines), joined by custom_id into one Transcript per request, its single
Call marked `batch` (batch rates, no caching discount).

Which file is which is read from the content: output lines have `response`, input lines
`body`. The output files are read first and kept in memory (one response message and
usage per custom_id, small next to the prompts); the input files then stream, each line
joined with its output as it is read.

Not a crash, a warning: a failed request (`error`, or a status other than 200) and an
input line with no output line become pending calls. Output lines without an input line
(including an output file uploaded alone) are still imported, with request messages
unknown (Call.request == []) and the reported usage and model kept, and a warning saying
so. A repeated custom_id is an error: the join would be ambiguous (upload each batch's
pair separately). Only /v1/chat/completions batches are supported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from conversations.engine.types import Call, ChatMessage, Transcript, Usage

from .completions import (
    call_from,
    lenient_request_messages,
    reported_usage,
    request_messages,
    response_message,
)
from .errors import ParseError, describe
from .records import Record, record_object

# Either role of a batch file, from the keys of its first record (see detect.py).
INPUT = "input"
OUTPUT = "output"


def batch_role(keys: Iterable[str]) -> str | None:
    names = set(keys)
    if "custom_id" not in names:
        return None
    if "response" in names or "error" in names:
        return OUTPUT
    if "body" in names:
        return INPUT
    return None


@dataclass(slots=True)
class _Outcome:
    """What the output file says about one custom_id."""

    location: str
    file: str
    message: ChatMessage | None
    body: dict[str, Any]
    usage: Usage | None = None
    warnings: list[str] = field(default_factory=list)


def parse_batch(
    inputs: Iterable[Record], outputs: Iterable[Record], *, warn: Callable[[str], None]
) -> Iterator[Transcript]:
    """Join the files by custom_id. A pair that shares no custom_id is refused once the
    input has been read (the caller's transaction drops what was yielded); one where most
    output lines match no input line is imported with a warning giving the counts."""
    outcomes = _read_outputs(outputs)
    output_count = len(outcomes)
    output_file = next((outcome.file for outcome in outcomes.values()), "")
    seen: dict[str, str] = {}
    matched = 0
    input_file = ""
    for record in inputs:
        custom_id = _custom_id(record)
        if custom_id in seen:
            raise record.error(
                f"custom_id {custom_id!r} repeats {seen[custom_id]}; upload each batch's input "
                "and output files separately",
                "custom_id",
            )
        seen[custom_id] = record.location
        input_file = input_file or record.file
        outcome = outcomes.pop(custom_id, None)
        matched += outcome is not None
        yield _joined(record, custom_id, outcome, have_outputs=output_count > 0)
    pair = f"{input_file} + {output_file}"
    if seen and output_count and not matched:
        raise ParseError(
            f"the input and output files share no custom_id ({len(seen):,} input lines, "
            f"{output_count:,} output lines): they are not one batch's pair; upload each "
            "batch's input file with its own output file",
            file=pair,
        )
    if seen and len(outcomes) * 2 > output_count:
        warn(
            f"{pair}: {len(outcomes):,} of {output_count:,} output lines match no input line "
            f"({matched:,} matched, {len(seen) - matched:,} input lines without output): "
            "is this the output of another batch?"
        )
    for custom_id, outcome in outcomes.items():
        yield _output_only(custom_id, outcome, have_inputs=bool(seen))


def _read_outputs(outputs: Iterable[Record]) -> dict[str, _Outcome]:
    outcomes: dict[str, _Outcome] = {}
    for record in outputs:
        custom_id = _custom_id(record)
        if custom_id in outcomes:
            raise record.error(
                f"custom_id {custom_id!r} repeats {outcomes[custom_id].location}; upload each "
                "batch's input and output files separately",
                "custom_id",
            )
        outcomes[custom_id] = _outcome(record, custom_id)
    return outcomes


def _outcome(record: Record, custom_id: str) -> _Outcome:
    obj = record_object(record)
    outcome = _Outcome(location=record.location, file=record.file, message=None, body={})

    def warn(text: str) -> None:
        outcome.warnings.append(f"{record.location}: {custom_id}: {text}")

    error, response = obj.get("error"), obj.get("response")
    if error:
        detail = error.get("message") or error.get("code") if isinstance(error, dict) else error
        warn(f"the batch request failed ({detail}): kept as a pending call")
        return outcome
    if not isinstance(response, dict):
        warn("no response: kept as a pending call")
        return outcome
    body = response.get("body")
    status = response.get("status_code")
    if status != 200 or not isinstance(body, dict):
        detail = body.get("error") if isinstance(body, dict) else None
        message = detail.get("message") if isinstance(detail, dict) else detail
        warn(f"status {status} ({message or 'no body'}): kept as a pending call")
        return outcome
    kind = body.get("object")
    if kind not in (None, "chat.completion"):
        raise record.error(
            f"not a chat.completions response (object {kind!r}): only /v1/chat/completions "
            "batches are supported",
            "response.body.object",
        )
    outcome.body = body
    outcome.message = response_message(body, record, "response.body", warn)
    outcome.usage = reported_usage(body, record, "response.body", warn)
    return outcome


def _joined(
    record: Record, custom_id: str, outcome: _Outcome | None, *, have_outputs: bool
) -> Transcript:
    obj = record_object(record)
    url = obj.get("url")
    if isinstance(url, str) and not url.rstrip("/").endswith("/chat/completions"):
        raise record.error(
            f"only /v1/chat/completions batch requests are supported, got {url!r}", "url"
        )
    body = obj.get("body")
    warnings: list[str] = []

    def warn(text: str) -> None:
        warnings.append(f"{record.location}: {custom_id}: {text}")

    if outcome is not None and outcome.message is None and isinstance(body, dict):
        # A request the API refused may be malformed: keep what can be rendered, pending.
        messages = lenient_request_messages(body, record, "body", warn)
    else:
        messages = request_messages(body, record, "body")
    assert isinstance(body, dict)  # request_messages checked it

    call = call_from(
        body,
        outcome.body if outcome else {},
        usage=outcome.usage if outcome else None,
        location=record.location,
    )
    call.request = list(range(len(messages)))
    if outcome is None:
        reason = "no line in the batch output" if have_outputs else "no batch output file given"
        warn(f"{reason}: kept as a pending call")
    else:
        warnings.extend(outcome.warnings)
        if outcome.message is not None:
            messages.append(outcome.message)
            call.response = len(messages) - 1
    return _transcript(custom_id, messages, call, record.location, warnings)


def _output_only(custom_id: str, outcome: _Outcome, *, have_inputs: bool) -> Transcript:
    reason = "not in the batch input file" if have_inputs else "no batch input file given"
    warnings = [
        f"{outcome.location}: {custom_id}: {reason}: the request messages are unknown, only "
        "the reported usage and the reply are imported",
        *outcome.warnings,
    ]
    call = call_from({}, outcome.body, usage=outcome.usage, location=outcome.location)
    messages = [outcome.message] if outcome.message is not None else []
    call.response = 0 if messages else None
    return _transcript(custom_id, messages, call, outcome.location, warnings)


def _transcript(
    custom_id: str, messages: list[ChatMessage], call: Call, location: str, warnings: list[str]
) -> Transcript:
    call.batch = True
    # A batch call is known by its custom_id: that is what joins it back to the batch.
    call.external_id = custom_id
    return Transcript(
        messages=messages,
        calls=[call],
        external_id=custom_id,
        model=call.model,
        created_at=call.started_at,
        location=location,
        warnings=warnings,
    )


def _custom_id(record: Record) -> str:
    obj = record_object(record)
    value = obj.get("custom_id")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        got = "missing" if value is None else f"expected a string, got {describe(value)}"
        raise record.error(got, "custom_id")
    return str(value)
