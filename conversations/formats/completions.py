"""chat.completions request bodies and response objects, shared by api_log and batch: both
formats log the same two objects, only the envelope differs."""

from __future__ import annotations

from typing import Any

from conversations.engine.types import Call, ChatMessage, Usage

from .errors import ParseError, describe
from .messages import normalize_message, parse_time
from .records import Record
from .usage import Warn, usage_of


def request_messages(body: Any, record: Record, path: str) -> list[ChatMessage]:
    """The request's messages, validated; `path` names the body in errors."""
    if not isinstance(body, dict):
        raise record.error(f"expected the request body object, got {describe(body)}", path)
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        problem = "no messages" if raw_messages == [] else "missing"
        raise record.error(
            f"{problem}: expected a chat.completions request (with messages) or a "
            "Responses API request (with input)",
            f"{path}.messages",
        )
    return [
        normalize_message(raw, record, f"{path}.messages[{i}]")
        for i, raw in enumerate(raw_messages)
    ]


def lenient_request_messages(body: Any, record: Record, path: str, warn: Warn) -> list[ChatMessage]:
    """The messages of a request the API refused: those that can be rendered, and a warning
    naming each one left out (a refused request may be malformed, and it still cost a
    round trip worth seeing)."""
    raw_messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(raw_messages, list) or not raw_messages:
        warn(f"{path}.messages: no messages to render; the pending call counts none")
        return []
    messages: list[ChatMessage] = []
    for i, raw in enumerate(raw_messages):
        try:
            messages.append(normalize_message(raw, record, f"{path}.messages[{i}]"))
        except ParseError as err:
            warn(f"{err.field}: {err.message}; not rendered")
    return messages


def response_message(
    response: dict[str, Any], record: Record, path: str, warn: Warn
) -> ChatMessage | None:
    """choices[0].message of a chat.completion, or None (with a warning) when the call
    produced none: the call is then kept as pending."""
    if not response:
        warn("no response logged: kept as a pending call")
        return None
    error = response.get("error")
    if error:
        detail = error.get("message") if isinstance(error, dict) else error
        warn(f"the call failed ({detail}): kept as a pending call")
        return None
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        warn("the response has no choices: kept as a pending call")
        return None
    if len(choices) > 1:
        warn(f"{len(choices)} choices: only the first is kept (usage covers all of them)")
    raw = choices[0].get("message")
    if raw is None and "finish_reason" in choices[0]:
        # A reply withheld by the content filter: billed (usage says so) but never shown.
        reason = choices[0].get("finish_reason")
        warn(
            f"{path}.choices[0] has no message (finish_reason {reason!r}): the reply was "
            "withheld; kept as an empty assistant message, billed as reported"
        )
        return {"role": "assistant", "content": ""}
    # Some proxies log the message without its role; a choice is always the assistant's.
    if isinstance(raw, dict) and "role" not in raw:
        raw = {"role": "assistant", **raw}
    return normalize_message(raw, record, f"{path}.choices[0].message")


def reported_usage(response: dict[str, Any], record: Record, path: str, warn: Warn) -> Usage | None:
    """The response's `usage` (at `path`.usage), validated; None when it reports none."""
    usage = response.get("usage")
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise record.error(f"expected an object, got {describe(usage)}", f"{path}.usage")
    return usage_of(usage, record=record, path=f"{path}.usage", warn=warn)


def call_from(
    body: dict[str, Any], response: dict[str, Any], *, usage: Usage | None, location: str
) -> Call:
    """A Call with everything the two objects say; request/response indexes come later.
    Model and service tier come from the response first: that is what was billed."""
    response_format = body.get("response_format")
    tool_choice = body.get("tool_choice") or body.get("function_call")
    cache_options = body.get("prompt_cache_options")
    return Call(
        request=[],
        response=None,
        model=text(response.get("model")) or text(body.get("model")),
        tools=dicts(body.get("tools")) or legacy_functions(body),
        response_format=response_format if isinstance(response_format, dict) else None,
        tool_choice=tool_choice if isinstance(tool_choice, dict) or tool_choice == "none" else None,
        prompt_cache_key=text(body.get("prompt_cache_key")),
        end_user=text(body.get("safety_identifier")) or text(body.get("user")),
        cache_retention=text(body.get("prompt_cache_retention")),
        cache_options=cache_options if isinstance(cache_options, dict) else None,
        service_tier=text(response.get("service_tier")) or text(body.get("service_tier")),
        started_at=parse_time(response.get("created")),
        max_output_tokens=integer(body.get("max_completion_tokens"))
        or integer(body.get("max_tokens")),
        usage=usage,
        external_id=text(response.get("id")),
        location=location,
    )


def legacy_functions(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Legacy `functions` as `tools` entries: the API shows both to the model alike (the
    real-log corpus's openllmetry.jsonl lines 25-30, 97 and 241-259 and langchaingo.jsonl
    line 80 count exactly so)."""
    functions = dicts(body.get("functions"))
    if functions is None:
        return None
    return [{"type": "function", "function": function} for function in functions]


def text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def dicts(value: Any) -> list[dict[str, Any]] | None:
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return value
    return None
