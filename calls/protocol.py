"""The built-in endpoint's side of OpenAI's chat-completions protocol: request checks,
response and stream-chunk bodies, errors in the API's shape, and faults on demand.

Faults (README, "Calling models"), asked for by request headers:
  X-Costlab-Fault: 429 | 500 | timeout | slow
  X-Costlab-Fault-Times: N     only the first N identical requests of a key get the fault
  X-Costlab-Retry-After: S     the 429's Retry-After, in seconds (default 1)
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from conversations.engine.messages import SYNTHETIC_TOKENS_KEY

from .request_body import BodyReader
from .simulated import SimulatedCall

FAULTS = ("429", "500", "timeout", "slow")
SERVICE_TIERS = ("default", "flex", "priority", "scale")
FINGERPRINT = "fp_costlab"
WORDS_PER_CHUNK = 4
_randbits = random.getrandbits
_PIECES = re.compile(rf"(?:\s*\S+){{1,{WORDS_PER_CHUNK}}}\s*")


class RequestInvalid(Exception):
    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int = 400,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


def error_body(
    message: str,
    *,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def request_parse(raw: bytes, *, reader: BodyReader | None = None) -> dict[str, Any]:
    """The request body, checked as far as the simulation needs it. With a `reader` (the
    caller's simulated organization's), a conversation's re-sent history is not parsed
    again (calls/request_body.py)."""
    try:
        if reader is not None:
            return reader.read(raw or b"null", _check)
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise RequestInvalid("We could not parse the JSON body of your request.") from None
    _check(body, 0)
    return body  # type: ignore[no-any-return]


def _check(body: Any, start: int) -> None:
    """Refuses a body that is not a request (its messages from `start` on: those before it
    were checked before).

    A parsed JSON value is exactly a dict, list, str, int, float, bool or None (no
    subclass), so `type(x) is` tells what isinstance would, and is cheaper: ~1,800 fewer
    instructions (valgrind) a body of the endpoint's bench, about a quarter of the check."""
    if type(body) is not dict:
        raise RequestInvalid("The request body must be a JSON object.")
    model = body.get("model")
    if type(model) is not str or not model:
        raise RequestInvalid("you must provide a model parameter", param="model")
    messages = body.get("messages")
    if type(messages) is not list or not messages:
        raise RequestInvalid("'messages' must be a non-empty array.", param="messages")
    for number in range(start, len(messages)):
        message = messages[number]
        if type(message) is not dict or type(message.get("role")) is not str:
            raise RequestInvalid(
                f"Invalid value for 'messages[{number}]': a message needs a role.",
                param=f"messages[{number}]",
            )
        calls = message.get("tool_calls")
        if calls is not None and type(calls) is not list:
            raise _type_invalid(f"messages[{number}].tool_calls", "an array", calls)
        # The engine's own marker for a message it stands in for by its length (strategies,
        # projections): from a client, a length to hash through, unbounded.
        if SYNTHETIC_TOKENS_KEY in message:
            param = f"messages[{number}].{SYNTHETIC_TOKENS_KEY}"
            raise RequestInvalid(
                f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter"
            )
    # The fields the simulation reads, of the types the API accepts (it refuses others with
    # a 400 too); checked here, since the engine takes them as typed.
    tools = body.get("tools")
    if tools is not None:
        if type(tools) is not list:
            raise _type_invalid("tools", "an array", tools)
        for number, tool in enumerate(tools):
            if type(tool) is not dict:
                raise _type_invalid(f"tools[{number}]", "an object", tool)
    response_format = body.get("response_format")
    if response_format is not None and type(response_format) is not dict:
        raise _type_invalid("response_format", "an object", response_format)
    key = body.get("prompt_cache_key")
    if key is not None and type(key) is not str:
        raise _type_invalid("prompt_cache_key", "a string", key)
    # (bool is not int here, as JSON's true is no number.)
    limit = body.get("max_completion_tokens")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise _limit_invalid("max_completion_tokens")
    limit = body.get("max_tokens")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise _limit_invalid("max_tokens")
    tier = body.get("service_tier")
    if tier is not None and tier != "auto" and tier not in SERVICE_TIERS:
        raise RequestInvalid(f"Invalid 'service_tier': {tier!r}.", param="service_tier")


# A parsed JSON value's type, in the API's words ("... but got a decimal number instead.").
_JSON_TYPES: dict[type, str] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a decimal number",
    type(None): "null",
}


def _type_invalid(param: str, expected: str, value: object) -> RequestInvalid:
    """As the API words it: "Invalid type for 'tools': expected an array, but got an object
    instead." (code invalid_type)."""
    got = _JSON_TYPES.get(type(value), "a value of another type")
    return RequestInvalid(
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        param=param,
        code="invalid_type",
    )


def _limit_invalid(name: str) -> RequestInvalid:
    return RequestInvalid(f"Invalid '{name}': expected an integer of at least 1.", param=name)


def service_tier(body: dict[str, Any]) -> str:
    """The tier the response reports: the one asked for; "auto" and none run on default."""
    tier = body.get("service_tier")
    return tier if isinstance(tier, str) and tier in SERVICE_TIERS else "default"


def include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


@dataclass(slots=True)  # a value, but built per call: a frozen init costs a setattr per field
class Completion:
    """One answer, ready to be written whole or as a stream."""

    id: str
    created: int
    model: str
    tier: str
    call: SimulatedCall

    @classmethod
    def new(cls, *, model: str, tier: str, call: SimulatedCall, now: float) -> Completion:
        # 24 random hex digits. An id only has to be unique, not secret: the random module
        # (seeded from os.urandom at start, and again in a forked child) gives them without
        # the system call os.urandom makes each time, which cost 4 % of a call's time in the
        # endpoint's bench (py-spy), more than all of the answer's dict. getrandbits itself:
        # randbytes(12) is this very expression, behind a Python frame of its own.
        hex_id = _randbits(96).to_bytes(12, "little").hex()
        return cls(f"chatcmpl-{hex_id}", int(now), model, tier, call)

    def _base(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "service_tier": self.tier,
            "system_fingerprint": FINGERPRINT,
        }

    def body(self) -> dict[str, Any]:
        call = self.call
        # One literal, in _base's order: built once a call, where completing _base's dict
        # cost a call and two insertions more.
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "service_tier": self.tier,
            "system_fingerprint": FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": call.reply,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": call.finish_reason,
                }
            ],
            "usage": call.usage(),
        }

    def chunks(self, *, usage: bool) -> Iterator[dict[str, Any]]:
        """The stream: the role, the reply a few words at a time, the finish reason, then
        (stream_options.include_usage) a last chunk with no choices and the usage."""
        extra: dict[str, Any] = {"usage": None} if usage else {}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**self._base("chat.completion.chunk"), "choices": [choice], **extra}

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        # A few words a chunk, each with the space before it: the pieces add up to the reply.
        for piece in _PIECES.findall(self.call.reply):
            yield chunk({"content": piece})
        yield chunk({}, self.call.finish_reason)
        if usage:
            yield {**self._base("chat.completion.chunk"), "choices": [], "usage": self.call.usage()}


def sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


@dataclass(frozen=True)
class Fault:
    kind: str
    retry_after: float


class _FaultCounter:
    """How many times each (key, fault, request) got its fault, for X-Costlab-Fault-Times."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, str, str], int] = {}

    def take(self, key: tuple[str, str, str], times: int) -> bool:
        with self.lock:
            done = self.counts.get(key, 0)
            if done >= times:
                return False
            self.counts[key] = done + 1
            return True


_faults = _FaultCounter()


def fault_requested(headers: Any, *, org_key: str, raw_body: bytes) -> Fault | None:
    """The fault a request asks for, if it is still due; None to answer normally."""
    kind = str(headers.get("X-Costlab-Fault", "")).strip().lower()
    if not kind:
        return None
    if kind not in FAULTS:
        raise RequestInvalid(
            f"X-Costlab-Fault must be one of {', '.join(FAULTS)}; got {kind!r}.",
            param="X-Costlab-Fault",
        )
    try:
        retry_after = float(headers.get("X-Costlab-Retry-After", "1"))
        times_text = headers.get("X-Costlab-Fault-Times")
        times = int(times_text) if times_text else None
    except ValueError:
        raise RequestInvalid(
            "X-Costlab-Retry-After and X-Costlab-Fault-Times take numbers."
        ) from None
    if times is not None:
        digest = hashlib.sha256(raw_body).hexdigest()
        if not _faults.take((org_key, kind, digest), times):
            return None
    return Fault(kind=kind, retry_after=max(0.0, retry_after))


def latency_seconds(call: SimulatedCall, *, base_ms: float, hit_speedup: float) -> float:
    """The modelled time to the first token: a cached prefix is not recomputed, so a hit
    answers faster in proportion to the cached share of the prompt."""
    return max(0.0, base_ms * (1 - hit_speedup * call.cached_share)) / 1000
