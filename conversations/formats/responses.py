"""Responses API calls (`/v1/responses`) in an API log, read as chat messages.

A log line holds the request body (`model`, `input`, `instructions`, `tools`, `text`,
`previous_response_id`, `conversation`, ...) and the `response` object (`output` items,
`usage` with `input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens` and
`output_tokens_details.reasoning_tokens`). The engine counts chat messages, so both sides
become them:

- `instructions` -> a developer message before the input (not carried over a
  `previous_response_id` chain, as the API does not carry it either);
- `input` as a string -> one user message; input items: messages (any role; `input_text`,
  `output_text`, `refusal`, `input_image`, `input_file`, `input_audio` parts),
  `function_call` (merged into the assistant message before it, as chat tool_calls) and
  `function_call_output` (a tool message);
- the `output` items -> one assistant message: the text of its message items, its
  function calls as tool_calls.

Reasoning items are not rendered (their tokens are reported in the usage); other items
(built-in tool calls, item references, MCP listings) and built-in tools are left out with a
warning that names them. A failed response (or one still queued) is a pending call; an
incomplete one is kept, with a warning.

Which call continues which is the log's job (api_log.py): `previous_response_id` and
`conversation` are returned as they are.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from conversations.engine.types import Call, ChatMessage

from .completions import integer, reported_usage, text
from .errors import ParseError, describe
from .messages import normalize_message, parse_time
from .records import Record
from .usage import Warn

_TEXT_PARTS = {"input_text": "text", "output_text": "text"}
_PENDING_STATUSES = {"failed", "queued", "in_progress", "cancelled"}


@dataclass(slots=True)
class Exchange:
    """One Responses call as chat messages. `request` starts with the `instructions`
    messages (how many: `instructions`)."""

    request: list[ChatMessage]
    instructions: int
    response: ChatMessage | None
    call: Call
    previous_response_id: str | None
    conversation_id: str | None


def is_responses_call(body: Any, response: dict[str, Any]) -> bool:
    if response.get("object") == "response":
        return True
    return isinstance(body, dict) and "messages" not in body and "input" in body


def responses_exchange(
    body: Any,
    body_path: str,
    response: dict[str, Any],
    response_path: str,
    record: Record,
    warn: Warn,
) -> Exchange:
    if not isinstance(body, dict):
        raise record.error(f"expected the request body object, got {describe(body)}", body_path)
    skipped: Counter[str] = Counter()
    instructions = body.get("instructions")
    if instructions is None:
        instructions = response.get("instructions")
    # A call the API refused may hold input it could not read either: keep what can be
    # rendered, warn about the rest, and keep the call as pending.
    lenient = warn if response.get("error") or response.get("status") == "failed" else None
    head = _instructions(instructions, record, f"{body_path}.instructions", skipped, lenient)
    request = head + _input(body.get("input"), record, f"{body_path}.input", skipped, lenient)
    if isinstance(body.get("prompt"), dict):
        warn(f"{body_path}.prompt: a stored prompt's text is not in the log; not counted")
    message = _output(response, record, response_path, warn, skipped)
    if skipped:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(skipped.items()))
        warn(f"Responses items not rendered (not counted in estimates): {kinds}")
    usage = reported_usage(response, record, response_path, warn)
    tool_choice = body.get("tool_choice")
    call = Call(
        request=[],
        response=None,
        model=text(response.get("model")) or text(body.get("model")),
        tools=_tools(body.get("tools"), warn, body_path),
        response_format=_response_format(body.get("text")),
        tool_choice=tool_choice if isinstance(tool_choice, dict) else None,
        prompt_cache_key=text(body.get("prompt_cache_key")),
        end_user=text(body.get("safety_identifier")) or text(body.get("user")),
        service_tier=text(response.get("service_tier")) or text(body.get("service_tier")),
        started_at=parse_time(response.get("created_at")),
        max_output_tokens=integer(body.get("max_output_tokens")),
        usage=usage,
        external_id=text(response.get("id")),
        location=record.location,
        cache_retention=text(body.get("prompt_cache_retention")),
        responses_api=True,
    )
    previous = text(body.get("previous_response_id")) or text(response.get("previous_response_id"))
    return Exchange(
        request=request,
        instructions=len(head),
        response=message,
        call=call,
        previous_response_id=previous,
        conversation_id=_conversation(body.get("conversation"))
        or _conversation(response.get("conversation")),
    )


def _conversation(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return text(value)


def _instructions(
    value: Any, record: Record, path: str, skipped: Counter[str], lenient: Warn | None
) -> list[ChatMessage]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [{"role": "developer", "content": value}]
    return _input(value, record, path, skipped, lenient)


def _input(
    value: Any, record: Record, path: str, skipped: Counter[str], lenient: Warn | None
) -> list[ChatMessage]:
    """The input items as chat messages. `lenient`: warn about an unreadable item and go
    on (a refused call), rather than refuse the file."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if value is None:
        return []
    if not isinstance(value, list):
        error = record.error(f"expected a string or a list of items, got {describe(value)}", path)
        if lenient is None:
            raise error
        lenient(f"{path}: {error.message}; not rendered")
        return []
    messages: list[ChatMessage] = []
    for i, item in enumerate(value):
        try:
            _item(messages, item, record, f"{path}[{i}]", skipped)
        except ParseError as err:
            if lenient is None:
                raise
            lenient(f"{err.field}: {err.message}; not rendered")
    return messages


def _item(
    messages: list[ChatMessage], item: Any, record: Record, where: str, skipped: Counter[str]
) -> None:
    if not isinstance(item, dict):
        raise record.error(f"expected an input item object, got {describe(item)}", where)
    kind = item.get("type")
    if kind in (None, "message"):
        messages.append(_message(item, record, where))
    elif kind == "function_call":
        _tool_call(messages, item)
    elif kind == "function_call_output":
        messages.append(_tool_output(item, record, where))
    else:
        skipped[str(kind)] += 1


def _message(item: dict[str, Any], record: Record, where: str) -> ChatMessage:
    content = _content(item.get("content"), record, f"{where}.content")
    return normalize_message({"role": item.get("role"), "content": content}, record, where)


def _content(value: Any, record: Record, where: str) -> Any:
    """Responses content as chat content: one text part becomes a plain string, so a reply
    re-sent as input compares equal to the output it came from."""
    if not isinstance(value, list):
        return value
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(value):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise record.error("expected a content part object with a 'type'", f"{where}[{i}]")
        parts.append(_part(part))
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def _part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part["type"]
    if kind in _TEXT_PARTS:
        return {"type": "text", "text": str(part.get("text") or "")}
    if kind == "refusal":
        return {"type": "refusal", "refusal": str(part.get("refusal") or "")}
    if kind == "input_image":
        url = part.get("image_url") or (f"file:{part['file_id']}" if part.get("file_id") else "")
        return {
            "type": "image_url",
            "image_url": {"url": url, "detail": part.get("detail") or "auto"},
        }
    if kind == "input_file":
        keys = ("filename", "file_data", "file_id", "file_url")
        return {"type": "file", "file": {key: part[key] for key in keys if key in part}}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": part.get("input_audio") or {}}
    return part  # unknown to costlab: kept, and counted as an attachment of unknown size


def _tool_call(messages: list[ChatMessage], item: dict[str, Any]) -> None:
    """A function_call item joins the assistant message just before it, as in chat."""
    call = {
        "id": str(item.get("call_id") or item.get("id") or ""),
        "type": "function",
        "function": {
            "name": str(item.get("name") or ""),
            "arguments": str(item.get("arguments") or ""),
        },
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last["tool_calls"] = [*(last.get("tool_calls") or []), call]
        return
    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_output(item: dict[str, Any], record: Record, where: str) -> ChatMessage:
    output = item.get("output")
    content = _content(output, record, f"{where}.output") if isinstance(output, list) else output
    if not isinstance(content, (str, list)):
        content = "" if content is None else str(content)
    return {"role": "tool", "tool_call_id": str(item.get("call_id") or ""), "content": content}


def _output(
    response: dict[str, Any], record: Record, path: str, warn: Warn, skipped: Counter[str]
) -> ChatMessage | None:
    """The reply as one assistant message, or None (with a warning): a pending call."""
    if not response:
        warn("no response logged: kept as a pending call")
        return None
    error, status = response.get("error"), response.get("status")
    if error or status in _PENDING_STATUSES:
        detail = error.get("message") if isinstance(error, dict) else error
        warn(f"the call {status or 'failed'} ({detail or 'no detail'}): kept as a pending call")
        return None
    if status == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        warn(f"the response is incomplete ({reason or 'no reason given'}): kept as it stopped")
    items = response.get("output")
    if not isinstance(items, list):
        raise record.error(
            f"expected a list of output items, got {describe(items)}", f"{path}.output"
        )
    texts: list[str] = []
    refusals: list[str] = []
    message: ChatMessage = {"role": "assistant", "content": None}
    holder = [message]
    for item in items:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            assert isinstance(item, dict)
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    texts.append(str(part.get("text") or ""))
                elif isinstance(part, dict) and part.get("type") == "refusal":
                    refusals.append(str(part.get("refusal") or ""))
        elif kind == "function_call":
            assert isinstance(item, dict)
            _tool_call(holder, item)
        elif kind != "reasoning":
            skipped[f"output {kind}"] += 1
    message["content"] = "".join(texts) if texts or not message.get("tool_calls") else None
    if refusals:
        message["refusal"] = "".join(refusals)
    try:
        return normalize_message(message, record, f"{path}.output")
    except ParseError:  # nothing but reasoning: an empty reply, billed as reported
        return {"role": "assistant", "content": ""}


def _tools(value: Any, warn: Warn, body_path: str) -> list[dict[str, Any]] | None:
    """Function tools in chat form; built-in tools are named in a warning."""
    if not isinstance(value, list) or not value:
        return None
    tools: list[dict[str, Any]] = []
    builtin: Counter[str] = Counter()
    for tool in value:
        if isinstance(tool, dict) and tool.get("type") == "function":
            keys = ("name", "description", "parameters", "strict")
            function = {key: tool[key] for key in keys if tool.get(key) is not None}
            tools.append({"type": "function", "function": function})
        else:
            builtin[str(tool.get("type")) if isinstance(tool, dict) else describe(tool)] += 1
    if builtin:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(builtin.items()))
        warn(f"{body_path}.tools: built-in tools not counted in estimates: {kinds}")
    return tools or None


def _response_format(value: Any) -> dict[str, Any] | None:
    """`text.format` in chat's response_format form (only a schema adds prompt tokens)."""
    form = value.get("format") if isinstance(value, dict) else None
    if not isinstance(form, dict) or form.get("type") != "json_schema":
        return (
            {"type": "json_object"}
            if isinstance(form, dict) and form.get("type") == "json_object"
            else None
        )
    keys = ("name", "description", "schema", "strict")
    return {"type": "json_schema", "json_schema": {key: form[key] for key in keys if key in form}}
