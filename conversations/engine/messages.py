"""Messages into tokens, by the cookbook rule (design.md 2.4).

Owns: a message -> its packed tokens, and each transcript's messages encoded once (MessageTokens).

A message's tokens are its framing placeholders (sequences.py), its role, name and every
counted value. Text is encoded with the vocabularies of vocabulary.py, straight into packed
form; system prompts that repeat across conversations are encoded once per process.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tiktoken

from .images import image_part_cost
from .profiles import ModelProfile
from .sequences import (
    CHANNEL,
    END,
    MESSAGE,
    START,
    TOKEN_BYTES,
    fillers,
    hashed_run,
    pack,
    unpack,
    with_overhead,
)
from .types import ChatMessage
from .vocabulary import get_encoding

# A synthetic message (e.g. a strategy's summary of assumed size) carries its token count here
# instead of text; its `content` is only used to make different synthetic messages differ.
SYNTHETIC_TOKENS_KEY = "costlab_synthetic_tokens"

_NATIVE = sys.byteorder
_NO_SPECIAL: frozenset[str] = frozenset()


@functools.cache
def _packer(encoding: str) -> Callable[[str], bytes]:
    """encode_ordinary's tokens, packed, without building a Python int per token.

    tiktoken's public encoders return lists; its core writes a uint32 buffer (what
    `encode_to_numpy` wraps). With no special token allowed, the core encodes
    "<|endoftext|>" typed by a user as text, exactly as encode_ordinary does (tested)."""
    enc = get_encoding(encoding)
    core = getattr(enc, "_core_bpe", None)
    if core is None or _NATIVE != "little":  # pragma: no cover - another tiktoken layout
        return lambda text: pack(enc.encode_ordinary(text))
    encode = core.encode_to_tiktoken_buffer

    def packed(text: str) -> bytes:
        try:
            return bytes(encode(text, _NO_SPECIAL))
        except UnicodeEncodeError:  # a lone surrogate (half an emoji, legal in JSON):
            return pack(enc.encode_ordinary(text))  # tiktoken's own repair, then encode

    return packed


@functools.lru_cache(maxsize=64)
def _shared_text_packed(encoding: str, text: str) -> bytes:
    # System and developer prompts repeat across an organization's conversations: they are
    # encoded once per process instead of once per conversation. At most 64 prompts of at
    # most SHARED_TEXT_CHARS each stay cached (the text and its tokens: ~13 MB at worst).
    return _packer(encoding)(text)


SHARED_TEXT_CHARS = 100_000


_SHARED_ROLES = frozenset({"system", "developer"})


@dataclass(slots=True)  # not frozen: a frozen init costs a setattr call per field
class EncodedMessage:
    """One message's tokens (packed), overhead included. `body` counts content, refusal and
    tool calls only: the completion-token estimate when this message is a response."""

    packed: bytes
    body: int
    unknown_images: int = 0

    @property
    def length(self) -> int:
        return len(self.packed) // TOKEN_BYTES

    @property
    def tokens(self) -> list[int]:
        return unpack(self.packed)


def encode_text(enc: tiktoken.Encoding, text: Any) -> list[int]:
    """A value's tokens when it is non-empty text, else none."""
    # encode_ordinary: "<|endoftext|>" typed by a user is text to the API, not a special token.
    return enc.encode_ordinary(text) if isinstance(text, str) and text else []


def _encode_parts(
    enc: tiktoken.Encoding, parts: list[Any], profile: ModelProfile
) -> tuple[list[int], int]:
    tokens: list[int] = []
    unknown = 0
    # Adjacent text parts are one text to the tokenizer: encoded apart, "?" + "<file" or
    # "." + "Now" counted a token too many (ruby_llm.jsonl lines 172-177, activeagent.jsonl
    # lines 39, 55 and 57).
    text: list[str] = []
    for part in parts:
        if isinstance(part, str):
            text.append(part)
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("text", "refusal"):
            value = part.get(kind)
            text += [value] if isinstance(value, str) else []
            continue
        tokens += encode_text(enc, "".join(text))
        text = []
        if kind == "image_url":
            cost = image_part_cost(
                part,
                base=profile.image_base_tokens,
                tile=profile.image_tile_tokens,
                patch_multiplier=profile.image_patch_multiplier,
            )
            unknown += not cost.known
            seed = json.dumps(part.get("image_url"), sort_keys=True, default=str)
            tokens += hashed_run(seed, cost.tokens)
        else:  # audio, files: no documented rule; reported like an unknown image
            unknown += 1
    tokens += encode_text(enc, "".join(text))
    return tokens, unknown


def _file_kind(part: dict[str, Any]) -> str:
    file = part.get("file")
    file = file if isinstance(file, dict) else {}
    name = str(file.get("filename") or "").lower()
    data = str(file.get("file_data") or "")[:40]
    if name.endswith(".pdf") or data.startswith("data:application/pdf"):
        return "a PDF file"
    return "a file"


def unknown_size_parts(message: ChatMessage, profile: ModelProfile) -> list[str]:
    """What each part of unknown size in a message is ("an image", "a PDF file", "a file",
    "audio"): the parts _encode_parts counts as 0, for warnings that name them. OpenAI
    documents no token rule for files and input audio, and an image by URL has no size."""
    content = message.get("content")
    found = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict) or part.get("type") in (None, "text", "refusal"):
            continue
        kind = part.get("type")
        if kind == "image_url":
            cost = image_part_cost(
                part,
                base=profile.image_base_tokens,
                tile=profile.image_tile_tokens,
                patch_multiplier=profile.image_patch_multiplier,
            )
            if not cost.known:
                found.append("an image")
        elif kind == "file":
            found.append(_file_kind(part))
        elif kind in ("input_audio", "audio"):
            found.append("audio")
        else:
            found.append(f"a {kind} part")
    return found


def _compact_arguments(arguments: object) -> object:
    """Tool-call arguments as the API re-serializes them: compact JSON. Counting them as sent
    left a spread of -1..+1 per call that follows the client's spacing; compact, 113 instead of
    91 of 260 single-call tool rounds were exact (`{"location": "San Francisco"}` in
    openllmetry.jsonl lines 158-174, `{"a":6,"b":7}` in openllmetry.jsonl line 4)."""
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.dumps(json.loads(arguments), separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        return arguments


# Each tool call costs, beyond its name and arguments, the framing of the call and of its
# result's message, whose author is the function's name (the result message itself carries
# only a tool_call_id, which the API does not show the model: counting the id overcounted
# every result by 8-15 tokens). Measured: 5 per round on single-call rounds, e.g.
# activeagent.jsonl lines 29 and 67, ruby_llm.jsonl lines 6-43, simonw-llm.jsonl line 4.
# (profiles.ModelProfile.tool_round_tokens: 4 more on the gpt-5 family.)


# Several calls in one message: one call of `multi_tool_use.parallel` whose JSON lists them
# (_parallel_call_text), and their results one message whose text is a JSON array of them
# (parallel_result_text), together 16 tokens beyond the two JSON texts, whatever the number
# of calls and the functions' names (the results' author is not each function, as it is
# after a single call). Exact so on 62 of the 63 such calls of 10 sources, two and three
# calls a message (the old rule, 4 tokens per call and per result and 4 once over the results
# as sent, was exact on 26 and missed by -75 to +500): elastic-otel-python.jsonl lines 40-63,
# otel-python-contrib.jsonl lines 13-31, openai-dotnet.jsonl lines 126-128, pydantic-ai.jsonl
# lines 10-99, mirascope.jsonl lines 62-84 and 288-294, openinference.jsonl lines 11-26 and
# 121-124, activeagent.jsonl lines 19-23 and 69, crewai.jsonl lines 100 and 809-816,
# ruby_llm.jsonl lines 90-92 and 194, ruby-openai.jsonl line 4. crewai.jsonl line 607 (gpt-4o,
# 2026-03) is 9 over: exact if its three non-ASCII characters were not escaped.
# The gpt-5 family does the same, with 4 framing tokens more (as its single-call rounds cost 4
# more, profiles.ModelProfile.tool_round_tokens) and the results' non-ASCII text not escaped:
# 8 of the 9 such calls of 4 sources exact, the other 1 short (fantasy.jsonl lines 40 and 42,
# gpt-5; crewai.jsonl lines 81-106, gpt-5-nano, 5 calls of three calls a message;
# ruby_llm.jsonl line 131, gpt-5-nano, whose `°` alone shows the escaping; chatlas.jsonl line
# 23, gpt-5.4). Kept apart as separate rounds, the two-call ones were 14 to 16 short.
PARALLEL_TOKENS = 16
# The single-call round's cost that PARALLEL_TOKENS goes with (profiles.ModelProfile).
_ROUND_TOKENS = 5


def parallel_framing(profile: ModelProfile) -> int:
    """What a parallel call and its results cost beyond their two JSON texts."""
    return PARALLEL_TOKENS + profile.tool_round_tokens - _ROUND_TOKENS


def _parallel_call_text(functions: list[dict[str, Any]]) -> str:
    """Several tool calls in one message as the model wrote them: one call of
    `multi_tool_use.parallel` whose JSON lists each function and its parameters."""
    uses = []
    for function in functions:
        arguments = function.get("arguments")
        try:
            parameters = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
        except ValueError:
            parameters = arguments
        uses.append(
            {"recipient_name": f"functions.{function.get('name')}", "parameters": parameters}
        )
    return json.dumps({"tool_uses": uses}, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ParallelResult:
    """Where a tool result stands in the results of a parallel call."""

    first: bool
    last: bool


def parallel_results(messages: list[ChatMessage]) -> dict[int, ParallelResult]:
    """The tool results that answer an assistant message with several tool calls (the
    results up to the next message of another role), by index."""
    groups: list[list[int]] = []
    calls = 0
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "assistant":
            tool_calls = message.get("tool_calls")
            calls = len(tool_calls) if isinstance(tool_calls, list) else 0
            groups.append([])
        elif role == "tool" and calls > 1:
            groups[-1].append(index)
        elif role != "tool":
            calls = 0
    return {
        index: ParallelResult(first=index == group[0], last=index == group[-1])
        for group in groups
        for index in group
    }


def _result_value(content: object) -> object:
    """A result as the array holds it: a text that is a JSON object or array as that value
    (openinference.jsonl lines 23-25, JSON results of 5,000 tokens: -71 and +500 counted as
    text, exact as values; activeagent.jsonl line 69, openinference.jsonl lines 121-124),
    any other text as a string; text parts joined."""
    if isinstance(content, list):
        content = "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    if not isinstance(content, str):
        return ""
    if content[:1] in ("{", "["):
        try:
            value = json.loads(content)
        except ValueError:
            return content
        if isinstance(value, (dict, list)):
            return value
    return content


def parallel_result_text(
    message: ChatMessage, place: ParallelResult, *, escaped: bool = True
) -> str:
    """This result's share of the results' JSON array, as Python's json.dumps writes it
    (`", "` and `": "` separators, non-ASCII escaped: `°` is `\\u00b0`, 4 tokens more than
    after a single call; ruby_llm.jsonl lines 92 and 194, ruby-openai.jsonl line 4; not
    `escaped` on the gpt-5 family, PARALLEL_TOKENS): `[` before the first, `,` after all but
    the last, `]` after it. Cut after the comma, before the space, the shares tokenize as the
    whole array does."""
    text = json.dumps(_result_value(message.get("content")), ensure_ascii=escaped)
    return ("[" if place.first else " ") + text + ("]" if place.last else ",")


def encode_parallel_result(
    message: ChatMessage, place: ParallelResult, profile: ModelProfile
) -> EncodedMessage:
    """A result of a parallel call: its share of the array; the first carries the framing
    (parallel_framing). Parts other than text (an image in a result) count as elsewhere."""
    enc = get_encoding(profile.encoding)
    body = encode_text(enc, parallel_result_text(message, place, escaped=not profile.harmony))
    content = message.get("content")
    unknown = 0
    if isinstance(content, list):
        others = [
            part for part in content if not (isinstance(part, dict) and part.get("type") == "text")
        ]
        extra, unknown = _encode_parts(enc, others, profile)
        body += extra
    tokens = with_overhead(START, parallel_framing(profile), body) if place.first else body
    return EncodedMessage(pack(tokens), body=len(body), unknown_images=unknown)


def _addressed_length(enc: tiktoken.Encoding, name: object) -> int:
    """A function's name where the round addresses it, `functions.<name>`: usually the dot
    merges with the name's first token and it counts as the name alone, but "calculator" is
    ".cal" + "culator", one token more. Counted in context, 31 calls one short are exact, none
    changed of those that were (ruby_llm.jsonl lines 6-43, 16 calls; crewai.jsonl lines 97,
    143, 335 and 505, 9 calls; pydantic-ai.jsonl, logfire.jsonl, langchaingo.jsonl,
    openllmetry-js.jsonl, dd-trace-py.jsonl)."""
    if not isinstance(name, str) or not name:
        return 0
    return len(enc.encode_ordinary(f"functions.{name}")) - len(enc.encode_ordinary("functions"))


def _encode_tool_calls(
    enc: tiktoken.Encoding, message: ChatMessage, round_tokens: int
) -> tuple[list[int], int]:
    """Function name and compact arguments of each tool call (the body), and the tokens its
    result adds (the function name again, `round_tokens`). Several calls in one message are
    one `multi_tool_use.parallel` call (its framing is counted with the results,
    encode_parallel_result). The legacy
    `function_call` and its `function` result are the same round as a single tool call, at
    the same cost (openai-dotnet.jsonl lines 118 and 120: 5 short without the round's
    tokens, 6 over with the round and the result's `name` both counted; exact with the
    round, the name being its function's)."""
    tokens: list[int] = []
    extra = 0
    functions = [
        call["function"]
        for call in message.get("tool_calls") or []
        if isinstance(call, dict) and isinstance(call.get("function"), dict)
    ]
    if len(functions) > 1:
        tokens = encode_text(enc, _parallel_call_text(functions))  # its cost: parallel_framing
        functions = []
    for function in functions:
        name = encode_text(enc, function.get("name"))
        tokens += name + encode_text(enc, _compact_arguments(function.get("arguments")))
        extra += _addressed_length(enc, function.get("name")) + round_tokens
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        tokens += encode_text(enc, legacy.get("name"))
        tokens += encode_text(enc, _compact_arguments(legacy.get("arguments")))
        extra += _addressed_length(enc, legacy.get("name")) + round_tokens
    return tokens, extra


@functools.cache
def role_tokens(encoding: str, role: str) -> tuple[int, ...]:
    return tuple(get_encoding(encoding).encode_ordinary(role))


@functools.cache
def channel_tokens(encoding: str, role: str, harmony: bool) -> tuple[int, ...]:
    """What follows the role in a reasoning model's assistant message: `<|channel|>final`
    (profiles.ModelProfile.harmony); nothing for other roles and models."""
    if not harmony or role != "assistant":
        return ()
    return (CHANNEL, *get_encoding(encoding).encode_ordinary("final"))


@functools.cache
def _framing_packed(
    encoding: str, role: str, tokens_per_message: int, harmony: bool
) -> tuple[bytes, bytes]:
    """The packed tokens around a plain message's content: START role [channel] MESSAGE,
    then ENDs."""
    channel = channel_tokens(encoding, role, harmony)
    head = pack((START, *role_tokens(encoding, role), *channel, MESSAGE))
    return head, pack(fillers(END, tokens_per_message - 2))


def encode_message(message: ChatMessage, profile: ModelProfile) -> EncodedMessage:
    """Tokens of one message by the cookbook rule: tokens_per_message, the role, every value,
    tokens_per_name when there is a name. Keys outside the chat format are not counted."""
    content = message.get("content")
    if len(message) == 2 and isinstance(content, str) and profile.tokens_per_message >= 2:
        # The common case, {"role", "content": str}: packed pieces joined, no per-token work.
        role = str(message.get("role") or "")
        if not content:
            text = b""
        elif role in _SHARED_ROLES and len(content) <= SHARED_TEXT_CHARS:
            text = _shared_text_packed(profile.encoding, content)
        else:
            text = _packer(profile.encoding)(content)
        opening, closing = _framing_packed(
            profile.encoding, role, profile.tokens_per_message, profile.harmony
        )
        return EncodedMessage(opening + text + closing, len(text) // TOKEN_BYTES)
    enc = get_encoding(profile.encoding)
    synthetic = message.get(SYNTHETIC_TOKENS_KEY)
    unknown = round_tokens = 0
    calls: list[int] = []
    if isinstance(synthetic, int):
        body = hashed_run(f"synthetic:{message.get('content')}", synthetic)
    else:
        if isinstance(content, list):
            body, unknown = _encode_parts(enc, content, profile)
        else:
            body = encode_text(enc, content)
        body += encode_text(enc, message.get("refusal"))
        calls, round_tokens = _encode_tool_calls(enc, message, profile.tool_round_tokens)
    role = str(message.get("role") or "")
    # A tool result's author is its function (counted with the call): neither its
    # tool_call_id nor a `name` some clients add (openinference.jsonl line 47) is shown;
    # nor the `name` of a legacy `function` result, which is that function's.
    name = message.get("name") if role not in ("tool", "function") else None
    author = [*role_tokens(profile.encoding, role)]
    overhead = profile.tokens_per_message + round_tokens
    if isinstance(name, str) and name:
        if profile.tokens_per_name == 1:
            # The author is written `role:name` and tokenized as one text: the cookbook's one
            # token per name is the colon, until it merges with the name. "user:user" is one
            # token fewer (openinference.jsonl lines 27-36, 10 calls), and so is
            # "assistant:not_your_average_bostonian" (dd-trace-py.jsonl lines 2 and 18); the
            # cookbook's "system:example_user" keeps it (../shared/oracles).
            author = encode_text(enc, f"{role}:{name}")
        else:
            author += encode_text(enc, name)
            overhead += profile.tokens_per_name
    channel = channel_tokens(profile.encoding, role, profile.harmony)
    head = [*author, *channel]
    said: list[int] = []
    if body and calls and profile.tokens_per_message >= 2:
        # Text beside tool calls is a message of its own before the call: one message's
        # framing and author more. dd-trace-py.jsonl line 142 (gpt-4o: "After conducting
        # thorough research, I'll hand this over..." with a transfer call) and
        # activeagent.jsonl line 132 (gpt-4o-mini: "It seems there was an issue..." with a
        # search call), the corpus's only such messages, were both 4 short (3 + the role) and
        # are exact. On reasoning models (the channel written again) it is unmeasured.
        said = [START, *head, MESSAGE, *body, *fillers(END, profile.tokens_per_message - 2)]
    tail = calls if said else body + calls
    if overhead >= 2:
        tokens = [*said, START, *head, MESSAGE, *tail, *fillers(END, overhead - 2)]
    else:
        tokens = with_overhead(START, overhead, head + tail)
    return EncodedMessage(pack(tokens), body=len(body) + len(calls), unknown_images=unknown)


def encode_plain_known(
    role: str, packed_text: bytes, profile: ModelProfile
) -> EncodedMessage | None:
    """What encode_message gives {"role": role, "content": text} when the text's tokens
    (encode_ordinary's, packed) are already known: `packed_text`, which the caller vouches
    for (the built-in endpoint's own replies, cut from a tape it encoded whole). None where
    encode_message would not take its plain path (a profile of fewer than 2 tokens per
    message): the caller encodes then."""
    if profile.tokens_per_message < 2 or not packed_text:
        return None
    opening, closing = _framing_packed(
        profile.encoding, role, profile.tokens_per_message, profile.harmony
    )
    return EncodedMessage(opening + packed_text + closing, len(packed_text) // TOKEN_BYTES)


# --- One transcript's messages ------------------------------------------------------------

# Prompts usually diverge early: a shared system prompt, then each conversation's own first
# message. Messages that start in a prompt's first EARLY_TOKENS and are no longer than that
# keep their tokens (4 bytes each: under 32 kB a transcript) so that diagnosing that
# divergence reads them instead of encoding them again; others are re-encoded on demand.
EARLY_TOKENS = 4096


class EncodingCache:
    """Encoded messages shared between analyses of the same message objects (the strategies
    of one transcript re-send the same dicts). Keyed by identity, checked against reuse."""

    def __init__(self) -> None:
        self._profiles: dict[ModelProfile, dict[int, tuple[ChatMessage, EncodedMessage]]] = {}

    def items(self, profile: ModelProfile) -> dict[int, tuple[ChatMessage, EncodedMessage]]:
        """One profile's encodings by message identity (a profile hashes 16 fields: it is
        looked up once per transcript, not once per message)."""
        return self._profiles.setdefault(profile, {})


def _cached_encode(
    items: dict[int, tuple[ChatMessage, EncodedMessage]],
    message: ChatMessage,
    profile: ModelProfile,
) -> EncodedMessage:
    item = items.get(id(message))
    if item is None or item[0] is not message:  # an id can be reused once its owner is gone
        item = items[id(message)] = (message, encode_message(message, profile))
    return item[1]


@functools.lru_cache(maxsize=64)
def _reencode(profile: ModelProfile, message_json: str) -> bytes:
    # Diagnosis reads back a few blocks after token lists were released; shared system
    # prompts make the same message come back often, hence the cache.
    return encode_message(json.loads(message_json), profile).packed


class MessageTokens:
    """Each message of one transcript encoded once for one profile; lengths always stay.

    In the manual flow a message is hashed once, so its tokens are dropped as soon as they
    are consumed; once requests stop extending each other (a window, a trim) `retain` is set
    and tokens are kept (packed: 4 bytes a token): re-encoding at most once each."""

    def __init__(
        self,
        messages: list[ChatMessage],
        profile: ModelProfile,
        cache: EncodingCache | None = None,
        parallel: dict[int, ParallelResult] | None = None,
    ) -> None:
        self.messages = messages
        self.profile = profile
        self._cache = cache.items(profile) if cache is not None else None
        self._tokens: list[bytes | None] = [None] * len(messages)
        self._length = [-1] * len(messages)
        self._body = [0] * len(messages)
        self._unknown = [0] * len(messages)
        self.retain = False
        self._released = False
        self._early: set[int] = set()
        # Results of a parallel call (encode_parallel_result), by index: found in `messages`
        # unless the caller places them (`parallel`, kept: an arena of slots it fills later).
        self._parallel = parallel_results(messages) if parallel is None else parallel

    def _encode(self, index: int) -> bytes:
        message = self.messages[index]
        place = self._parallel.get(index)
        if place is not None:  # encoded in its place, neither cached nor kept by the LRU
            encoded = encode_parallel_result(message, place, self.profile)
            if self._released:
                return encoded.packed
        elif self._released:  # diagnosis reading back after the analysis: a small LRU
            return _reencode(self.profile, json.dumps(message, sort_keys=True, default=str))
        elif self._cache is not None:  # _cached_encode inline: a call a message less
            item = self._cache.get(id(message))
            if item is None or item[0] is not message:
                item = self._cache[id(message)] = (message, encode_message(message, self.profile))
            encoded = item[1]
        else:
            encoded = encode_message(message, self.profile)
        packed = encoded.packed
        self._length[index] = len(packed) // TOKEN_BYTES
        self._body[index] = encoded.body
        self._unknown[index] = encoded.unknown_images
        self._tokens[index] = packed
        return packed

    def tokens(self, index: int) -> bytes:
        """The message's packed tokens."""
        tokens = self._tokens[index]
        return tokens if tokens is not None else self._encode(index)

    def encode_all(self) -> None:
        """Encode every message not yet encoded, in one tight loop: the tokenizer's tables
        stay in the CPU caches instead of being evicted by bookkeeping between messages."""
        for index, length in enumerate(self._length):
            if length < 0:
                self._encode(index)

    def length(self, index: int) -> int:
        if self._length[index] < 0:
            self._encode(index)
        return self._length[index]

    def body(self, index: int) -> int:
        self.length(index)
        return self._body[index]

    def unknown_images(self, index: int) -> int:
        self.length(index)
        return self._unknown[index]

    def take(self, index: int, *, early: bool = False) -> tuple[bytes, int]:
        """A message's packed tokens and unknown-image count, for a chain that hashes them
        now: in the manual flow nothing reads them again, so they are not kept, except for
        an `early` message (one starting in the first EARLY_TOKENS of a prompt) that is
        itself no longer than EARLY_TOKENS."""
        packed = self._tokens[index]
        cache = self._cache
        if packed is None and cache is not None and not self._released:
            # _encode inline for a message first taken (the manual flow's every message):
            # nothing stored that is dropped at once, a call less.
            message = self.messages[index]
            if index not in self._parallel:
                item = cache.get(id(message))
                if item is None or item[0] is not message:
                    item = cache[id(message)] = (message, encode_message(message, self.profile))
                encoded = item[1]
                packed = encoded.packed
                length = self._length[index] = len(packed) // TOKEN_BYTES
                self._body[index] = encoded.body
                unknown = self._unknown[index] = encoded.unknown_images
                if early and length <= EARLY_TOKENS:
                    self._early.add(index)
                    self._tokens[index] = packed
                elif self.retain:
                    self._tokens[index] = packed
                return packed, unknown
        if packed is None:
            packed = self._encode(index)
        if early and self._length[index] <= EARLY_TOKENS:
            self._early.add(index)
        elif not self.retain:
            self._tokens[index] = None
        return packed, self._unknown[index]

    def release(self) -> None:
        """Drop every token list but the early messages' (lengths always stay)."""
        self._tokens = [
            tokens if index in self._early else None for index, tokens in enumerate(self._tokens)
        ]
        self._released = True
