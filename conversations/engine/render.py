"""Requests rendered into token sequences, each message encoded once (design.md 2.4, 2.6).

Owns: a request -> its token sequence: tools, response format, messages, reply priming, in order.

A request renders as: tools block, response-format schema, every message (messages.py),
reply priming; its length is `count_request`. In the manual flow each request extends the
previous one, so a `TranscriptRenderer` keeps one growing *chain* (message tokens, full-block
hashes, the partial block still open) and a call only pays for the messages it adds: no history
is re-tokenized and no shared block is re-hashed. Token sequences are packed int32 bytes
(sequences.pack); `tokens()` unpacks on demand.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain as chain_iter
from itertools import islice
from typing import Any, overload

from .breakpoints import Cut, CutKind
from .cache import ROOT_HASH, STEP, hash_blocks_into
from .messages import (
    EARLY_TOKENS,
    EncodingCache,
    MessageTokens,
    ParallelResult,
    encode_message,
    encode_parallel_result,
    encode_text,
    parallel_results,
    role_tokens,
    unknown_size_parts,
)
from .profiles import ModelProfile
from .schemas import (
    OPEN_PARAMETERS_TOKENS,
    open_parameters,
    tools_text,
    undescribed_first_properties,
    undescribed_functions,
)
from .sequences import (
    FORCED,
    MESSAGE,
    PRIMING,
    RESULTS,
    START,
    STRUCTURED,
    TOKEN_BYTES,
    TOOL,
    filler,
    pack,
    unpack,
    with_overhead,
)
from .types import ChatMessage
from .vocabulary import get_encoding


def priming_tokens(profile: ModelProfile) -> list[int]:
    """Reply priming: the opening of an assistant message when the counts allow it. A
    reasoning model's stops after the role (profiles.ModelProfile.harmony): the model
    writes its channel itself, so `<|message|>` is not part of the prompt."""
    opening = [START, *role_tokens(profile.encoding, "assistant"), MESSAGE]
    if profile.tokens_per_message >= 2 and profile.reply_priming == len(opening):
        return opening[:-1] if profile.harmony else opening
    return filler(PRIMING, max(0, profile.reply_priming - profile.harmony))


# The tools join an opening system or developer message after its text and a blank line; the
# tokenizer folds that "\n\n" into the text's last token when it ends with punctuation or a
# space, else it costs one token. Measured on the tools-only calls that open with a system
# message: 67 ending "." or " " are exact with the joined blank line, 20 ending with a letter,
# a digit or empty text (crewai.jsonl lines 214, 622, 738; openllmetry.jsonl lines 3, 8, 25;
# activeagent.jsonl lines 95, 98) count the extra token.
_SYSTEM_TAIL_CHARS = 32


def system_tail(messages: Sequence[ChatMessage]) -> str | None:
    """The end of the opening system or developer message's text, which the tools block
    joins (encode_tools); None when the request opens with another message."""
    if not messages or messages[0].get("role") not in ("system", "developer"):
        return None
    content = messages[0].get("content")
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        content = next((t for t in reversed(texts) if isinstance(t, str)), "")
    return content[-_SYSTEM_TAIL_CHARS:] if isinstance(content, str) else ""


def _separator_tokens(encoding: str, tail: str) -> int:
    """What a blank line adds after `tail` once tokenized together (0 or 1)."""
    enc = get_encoding(encoding)
    return len(enc.encode_ordinary(tail + "\n\n")) - len(enc.encode_ordinary(tail))


# A tool_choice naming one function addresses the reply to it: the prompt grows by
# " to=functions.<name>" and 4 framing tokens, on cl100k and o200k models alike. Measured on
# all 89 forced calls whose tools count exactly otherwise (openllmetry.jsonl lines 32-70,
# magentic.jsonl lines 4-57, langsmith-sdk.jsonl lines 16-56, ruby_llm.jsonl line 198,
# mirascope.jsonl line 56). "required" adds nothing (64 calls), nor does any tool_choice on
# the gpt-5 family (pydantic-ai.jsonl line 226, ruby_llm.jsonl lines 187-206 on gpt-5-nano).
# "none" adds one token elsewhere: every such call was one short (openai-dotnet.jsonl lines 110
# and 114, ruby_llm.jsonl line 192).
_FORCED_FRAMING = 4
_NONE_FRAMING = 1


def _forced_name(tool_choice: object) -> str | None:
    if not isinstance(tool_choice, dict):
        return None
    function = tool_choice.get("function")
    name = function.get("name") if isinstance(function, dict) else tool_choice.get("name")
    return name if isinstance(name, str) and name else None


def forced_call_tokens(tool_choice: object, profile: ModelProfile) -> list[int]:
    """What a forced (or "none") tool_choice adds after the reply priming (a per-request
    suffix: the next request's messages do not contain it)."""
    if profile.harmony:
        return []
    if tool_choice == "none":
        return filler(FORCED, _NONE_FRAMING)
    name = _forced_name(tool_choice)
    if name is None:
        return []
    text = encode_text(get_encoding(profile.encoding), f" to=functions.{name}")
    return text + filler(FORCED, _FORCED_FRAMING)


# Under a json_schema response format each earlier assistant reply with text (the structured
# replies the format produced) costs 3 tokens more, presumably marking its content type:
# mirascope.jsonl lines 36-50 (6 calls) and ruby_llm.jsonl line 35 exact with them, crewai.jsonl
# lines 287, 353, 708 and 715 one short; assistant messages that only call tools cost nothing
# more (pydantic-ai.jsonl lines 197-199, 27 calls). Counted after the reply priming, so that
# a message's tokens stay the same whatever the request around it.
_STRUCTURED_REPLY_TOKENS = 3


def structured_reply_tokens(
    response_format: object, messages: Iterable[ChatMessage], profile: ModelProfile
) -> list[int]:
    """What earlier replies cost under a json_schema response format (a per-request suffix)."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return []
    if profile.harmony:
        return []
    replies = sum(
        1
        for message in messages
        if message.get("role") == "assistant"
        and isinstance(message.get("content"), str)
        and message.get("content")
    )
    return filler(STRUCTURED, _STRUCTURED_REPLY_TOKENS * replies)


# The Responses API (`/v1/responses`) frames function tools and a json_schema format more
# tightly than Chat Completions on the models that do not use the harmony format (gpt-4o,
# gpt-4o-mini, gpt-4.1, -nano, computer-use-preview); measured on the corpus's Responses files
# (tests/formats/test_real_responses_corpus.py). Function tools cost 6 tokens fewer than a chat
# request's tools as a message of their own, and joining the opening system or developer
# message (instructions, or a system input item) they save nothing more: 2 fewer than chat's
# there. Without one, 6 over on every such call of six sources: dd-trace-py.responses.jsonl
# lines 3-4, otel-python-contrib.responses.jsonl line 4, activeagent.responses.jsonl line 12,
# openllmetry-js.responses.jsonl lines 3-5, ruby_llm.responses.jsonl line 4,
# openai-dotnet.responses.jsonl line 11 (5 over: line 6); with one, 2 over on every such
# call of five: langsmith-sdk.responses.jsonl lines 4, 8 and 10, openllmetry.responses.jsonl
# lines 1, 8, 10, 15, 17, 20 and 22, braintrust-py.responses.jsonl line 1,
# openinference.responses.jsonl lines 3, 10 and 13, braintrust-js.responses.jsonl lines 1-7.
RESPONSES_TOOLS_SAVING = 6
# On the gpt-5 family the tools preamble (profiles.tools_preamble, 82 tokens on chat) is not
# billed: every tools call without earlier rounds was 82 over with it (gpt-5.5:
# simonw-llm.responses.jsonl lines 3, 7, 10 and 12; gpt-5-mini: pydantic-ai.responses.jsonl
# line 14), and gpt-5.6-luna's 75 (braintrust-js.responses.jsonl line 11).
# A json_schema `text.format` costs its name and 5 tokens fewer than chat's response_format:
# every such call was name + 5 over, 7 for "NumberAnswer" or "MathResponse", 6 for "Format"
# or "Person" (19 calls of nine sources: braintrust-py.responses.jsonl lines 14-23,
# langsmith-sdk.responses.jsonl lines 16-27, braintrust-js.responses.jsonl line 22,
# crewai.responses.jsonl line 18, dd-trace-py.responses.jsonl line 5,
# openai-dotnet.responses.jsonl line 15, openllmetry-js.responses.jsonl line 7,
# openllmetry.responses.jsonl line 25). Measured only as a message of its own (no
# instructions, no tools); applied wherever it stands.
_RESPONSES_FORMAT_SAVING = 3


# Each function_call_output item costs one token more than the chat tool message it is read
# as (formats/responses.py): every single-call round was one short, and n short with n rounds
# (17 calls of seven sources: langsmith-sdk.responses.jsonl lines 5, 9 and 11,
# openllmetry.responses.jsonl lines 2, 9, 11, 16, 18, 21 and 23, and lines 3-5 with 2-4 rounds,
# braintrust-py.responses.jsonl line 2, activeagent.responses.jsonl line 13,
# logfire.responses.jsonl line 2, openinference.responses.jsonl lines 4 and 14,
# openai-dotnet.responses.jsonl line 7). Counted after the reply priming, as
# structured_reply_tokens. Not explained: braintrust-js.responses.jsonl lines 14 and 16,
# ruby_llm.responses.jsonl line 5 and openllmetry.responses.jsonl line 19, 3, 2 and 3 over
# with it.
_RESPONSES_RESULT_TOKENS = 1


def responses_result_tokens(
    messages: Iterable[ChatMessage], profile: ModelProfile, responses_api: bool
) -> list[int]:
    """What a Responses API request's tool results add (a per-request suffix)."""
    if not responses_api or profile.harmony:
        return []
    results = sum(1 for message in messages if message.get("role") == "tool")
    return filler(RESULTS, _RESPONSES_RESULT_TOKENS * results)


def encode_tools(
    tools: list[dict[str, Any]] | None,
    profile: ModelProfile,
    *,
    after_system: str | None = ".",
    responses_api: bool = False,
) -> list[int]:
    """Tool definitions: their namespace text (schemas.py) and the profile's framing.
    `after_system`: the end of the system or developer message the request opens with
    (system_tail), which the tools join: 4 tokens fewer (no message of their own), one
    back when the blank line between them is a token of its own. Each function whose first
    property has no description counts one token fewer than its text, each whose parameters
    are open (additionalProperties) OPEN_PARAMETERS_TOKENS more (schemas.py), and each
    without a description the profile's undescribed_function_tokens more. `responses_api`:
    a Responses API request's tools (RESPONSES_TOOLS_SAVING)."""
    if not tools:
        return []
    responses = responses_api and not profile.harmony
    text = encode_text(get_encoding(profile.encoding), tools_text(tools))
    overhead = profile.tools_overhead + profile.tools_preamble
    overhead -= undescribed_first_properties(tools)
    overhead += OPEN_PARAMETERS_TOKENS * open_parameters(tools)
    overhead += profile.undescribed_function_tokens * undescribed_functions(tools)
    if responses_api and profile.harmony:
        overhead -= profile.tools_preamble
    if responses:
        overhead -= RESPONSES_TOOLS_SAVING
    elif after_system is not None:
        overhead -= profile.tools_system_saving
    if after_system is not None:
        overhead += _separator_tokens(profile.encoding, after_system)

    return with_overhead(TOOL, overhead, text, after=True)


# The keys of a json_schema response format that reach the prompt: the others (required,
# additionalProperties, default, minimum, maximum, format, ...) are enforced by constrained
# decoding instead. With ASCII-escaped compact JSON under a "# Response Formats" heading, 273
# of the corpus's 296 structured-output calls on non-reasoning models are exact, from seven
# sources (ruby_llm.jsonl lines 34-36, activeagent.jsonl lines 60 and 101-103,
# openai-dotnet.jsonl lines 71-87, openllmetry.jsonl lines 192-285, mirascope.jsonl,
# elastic-otel-python.jsonl line 68, crewai.jsonl); keeping `required` leaves 3 exact,
# keeping `default` or `minimum` 36 fewer, dropping `const` 28 fewer (crewai.jsonl line 9).
_SCHEMA_KEYS = frozenset(
    {"type", "properties", "items", "enum", "const", "description", "title", "anyOf"}
    | {"$defs", "$ref", "strict"}
)
# Beyond its text the format costs its name once more and 2 tokens, 4 more as a message of
# its own (no system message or tools to join); joining a system message, the blank line
# before it counts like the tools' (render.encode_tools).
_FORMAT_TOKENS = 2
_FORMAT_MESSAGE_TOKENS = 4
# After a tools block it costs 3 fewer: 54 calls with both (mirascope.jsonl lines 183-184,
# pydantic-ai.jsonl lines 196-199, crewai.jsonl lines 352-353).
_FORMAT_AFTER_TOOLS_TOKENS = -3
# The gpt-5 family (and o4-mini) costs neither those 2 tokens nor the name once more: every
# such call was 2 + the name's tokens over, 3 for "response", "Person" or "Book", 5 for
# "PersonSchemaClass", 4 for "structured_data" (ruby_llm.jsonl lines 233-242, gpt-5-nano;
# 8 of fantasy.jsonl lines 55-70, gpt-5 and o4-mini; chatlas.jsonl line 1, gpt-5.4), and is
# exact without them. Measured only as a message of its own (no system message, no tools).
# (Earlier structured replies then seem to cost 4 each: chatlas.jsonl lines 2 and 3, one and
# two replies, 4 and 8 short; one source, so not counted, structured_reply_tokens.)
_TOOLS_END = "} // namespace functions"


def _prompt_schema(value: Any, *, names: bool = False) -> Any:
    if isinstance(value, dict):
        if names:  # property names are data, not keywords
            return {key: _prompt_schema(item) for key, item in value.items()}
        return {
            key: _prompt_schema(item, names=key in ("properties", "$defs"))
            for key, item in value.items()
            if key in _SCHEMA_KEYS
        }
    if isinstance(value, list):
        return [_prompt_schema(item) for item in value]
    return value


def response_format_text(response_format: dict[str, Any]) -> tuple[str, str] | None:
    """A json_schema response format as the prompt shows it, and its name; None for other
    formats (json_object and text add nothing measurable)."""
    if response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        return None
    name = spec.get("name") if isinstance(spec.get("name"), str) else ""
    schema = spec.get("schema", {})
    description = spec.get("description")
    lines = ["# Response Formats", "", f"## {name}", ""]
    if isinstance(description, str) and description:
        lines.append(f"// {description}")
    lines.append(json.dumps(_prompt_schema(schema), separators=(",", ":")))
    return "\n".join(lines), str(name)


def encode_response_format(
    response_format: dict[str, Any] | None,
    profile: ModelProfile,
    *,
    after: str | None = None,
    responses_api: bool = False,
) -> list[int]:
    """A json_schema response format: its text (response_format_text) and framing. `after`:
    the end of the text it joins (the system message's or the tools block's), None when it
    is a message of its own. `responses_api`: a Responses API `text.format`
    (_RESPONSES_FORMAT_SAVING)."""
    if not isinstance(response_format, dict):
        return []
    found = response_format_text(response_format)
    if found is None:
        return []
    text, name = found
    enc = get_encoding(profile.encoding)
    if profile.harmony:
        overhead = 0
    elif responses_api:
        overhead = -_RESPONSES_FORMAT_SAVING
    else:
        overhead = _FORMAT_TOKENS + len(encode_text(enc, name))
    if after is None:
        overhead += _FORMAT_MESSAGE_TOKENS
    elif after == _TOOLS_END:
        overhead += _FORMAT_AFTER_TOOLS_TOKENS
    else:
        overhead += _separator_tokens(profile.encoding, after)
    return with_overhead(TOOL, overhead, encode_text(enc, text), after=True)


def encode_header(
    tools: list[dict[str, Any]] | None,
    response_format: dict[str, Any] | None,
    profile: ModelProfile,
    *,
    after_system: str | None = ".",
    responses_api: bool = False,
) -> list[int]:
    """What a request sends before its messages: the tools block, then the response format.
    `responses_api`: a Responses API request (its framing differs, encode_tools)."""
    tools_tokens = encode_tools(
        tools, profile, after_system=after_system, responses_api=responses_api
    )
    after = _TOOLS_END if tools_tokens else after_system
    return tools_tokens + encode_response_format(
        response_format, profile, after=after, responses_api=responses_api
    )


def count_request(
    messages: list[ChatMessage],
    *,
    profile: ModelProfile,
    tools: list[dict[str, Any]] | None = None,
    response_format: dict[str, Any] | None = None,
    tool_choice: object = None,
    responses_api: bool = False,
) -> int:
    """Prompt tokens of one chat-completions request (cookbook rules, tools included), or
    of a Responses API request read as one (`responses_api`)."""
    after_system = system_tail(messages)
    total = len(
        encode_header(
            tools,
            response_format,
            profile,
            after_system=after_system,
            responses_api=responses_api,
        )
    )
    parallel = parallel_results(messages)
    for index, message in enumerate(messages):
        place = parallel.get(index)
        encoded = (
            encode_message(message, profile)
            if place is None
            else encode_parallel_result(message, place, profile)
        )
        total += encoded.length
    total += len(structured_reply_tokens(response_format, messages, profile))
    total += len(responses_result_tokens(messages, profile, responses_api))
    return total + len(priming_tokens(profile)) + len(forced_call_tokens(tool_choice, profile))


def _span(packed: bytes, start: int, end: int) -> bytes:
    """Tokens [start, end) of a packed sequence, clipped like a list slice of non-negatives."""
    return packed[max(0, start) * TOKEN_BYTES : max(0, end) * TOKEN_BYTES]


# --- One transcript's requests, rendered incrementally ------------------------------------


class BlockView(Sequence[int]):
    """A call's block hashes: the first `count` hashes of its chain (shared, never copied)
    plus the block(s) closed by its reply priming."""

    __slots__ = ("_base", "_count", "_length", "_tail")

    def __init__(self, base: list[int], count: int, tail: tuple[int, ...]) -> None:
        self._base = base
        self._count = count
        self._tail = tail
        self._length = count + len(tail)

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> list[int]: ...

    def __getitem__(self, index: int | slice) -> int | list[int]:
        if isinstance(index, slice):
            start, stop, stride = index.indices(self._length)
            if stride != 1:
                return [self[i] for i in range(start, stop, stride)]
            head = self._base[start : min(stop, self._count)]
            return [*head, *self._tail[max(0, start - self._count) : max(0, stop - self._count)]]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(index)
        return self._base[index] if index < self._count else self._tail[index - self._count]

    def __iter__(self) -> Iterator[int]:
        return chain_iter(islice(self._base, self._count), self._tail)


@dataclass(slots=True)
class _Chain:
    """The token stream of the latest request: header, then messages in request order."""

    header_key: str
    header: bytes  # packed
    indices: list[int]
    offsets: list[int]  # token offset where each message starts
    length: int
    hashes: list[int]  # chained hashes of every full block so far
    pending: bytes  # packed tokens after the last full block (fewer than one block)
    unknown: int  # images of unknown size in the messages so far
    # Exact hash of the prefix ending with each message: where a breakpoint cache can cut.
    # Kept only for models that cache at breakpoints (one more hash per message).
    ends: list[int] | None = None

    def append(self, index: int, packed: bytes, unknown: int, step: int) -> None:
        self.indices.append(index)
        self.offsets.append(self.length)
        self.unknown += unknown
        self.feed(packed, step)
        if self.ends is not None:
            self.ends.append(hash((self.hashes[-1] if self.hashes else ROOT_HASH, self.pending)))

    def feed(self, packed: bytes, step: int) -> None:
        """Add packed tokens to the stream, hashing every block they complete (without
        copying them into the stream: only the open block's few tokens are carried over)."""
        size = len(packed)
        self.length += size // TOKEN_BYTES
        need = step * TOKEN_BYTES - len(self.pending)  # bytes that close the open block
        if size < need:
            self.pending += packed
            return
        hashes = self.hashes
        parent = hashes[-1] if hashes else ROOT_HASH
        parent = hash((parent, self.pending + packed[:need]))
        hashes.append(parent)
        block = step * TOKEN_BYTES
        if size - need >= block:  # more full blocks (a long message): hashed in one loop
            hash_blocks_into(packed, step, parent, hashes, start=need // TOKEN_BYTES)
        self.pending = packed[size - (size - need) % block :]


def _marked(message: ChatMessage) -> bool:
    content = message.get("content")
    if isinstance(content, list):
        return any(isinstance(p, dict) and p.get("prompt_cache_breakpoint") for p in content)
    return False


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    if len(a) <= len(b) and b[: len(a)] == a:  # the manual flow: C-speed comparison
        return len(a)
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


class RenderedRequest:
    """One call's prompt: its length (= count_request), its block hashes (a CachePrompt) and
    a way to read its tokens back and map a token to its message (a TokenSource, for
    diagnosis). One small object per call: it shares its chain's append-only lists."""

    __slots__ = (
        "_count",
        "_end",
        "_ends",
        "_full",
        "_hashes",
        "_header",
        "_indices",
        "_messages",
        "_offsets",
        "_priming",
        "_tail",
        "length",
        "unknown_images",
    )

    def __init__(
        self, messages: MessageTokens, chain: _Chain, priming: bytes, tail: tuple[int, ...]
    ) -> None:
        self._messages = messages
        self._header = chain.header
        self._indices = chain.indices  # only the first `_count` belong to this request
        self._offsets = chain.offsets
        self._count = len(chain.indices)
        self._end = chain.length  # where reply priming starts
        self._priming = priming
        self._hashes = chain.hashes  # only the first `_full` belong to this request
        self._ends = chain.ends  # only the first `_count` belong to this request
        self._full = len(chain.hashes)
        self._tail = tail  # the block(s) closed by reply priming
        self.length = chain.length + len(priming) // TOKEN_BYTES
        self.unknown_images = chain.unknown

    @property
    def blocks(self) -> BlockView:
        return BlockView(self._hashes, self._full, self._tail)

    def block_list(self) -> list[int]:
        hashes = self._hashes
        if not self._tail and len(hashes) == self._full:
            # The chain's own list, not a copy: a chain's list is only ever appended to (a
            # fork starts a new one), so what the simulator keeps of it (each segment reads
            # it below the length it had then) stays true. A copy increfs every block's int,
            # and dropping the previous one decrefs them: O(history) a call, in memory the
            # tokenizer has just evicted.
            return hashes
        # Later calls append to the chain's list (and the tail is not in it): a copy.
        blocks = hashes[: self._full]
        blocks += self._tail
        return blocks

    @property
    def source(self) -> RenderedRequest:
        return self

    def cut_points(self) -> list[Cut]:
        """Where a breakpoint cache can cut this prompt: after each message, with the exact
        hash of the prefix up to there (breakpoints.py). A user or tool message's end is an
        implicit breakpoint; a message with a part marked `prompt_cache_breakpoint` is an
        explicit one (at the message's end: parts are not tracked one by one)."""
        if self._ends is None:
            raise ValueError("rendered without cut points: TranscriptRenderer(cut_points=True)")
        messages = self._messages.messages
        cuts = []
        for position in range(self._count):
            end = self._offsets[position + 1] if position + 1 < self._count else self._end
            message = messages[self._indices[position]]
            kind: CutKind = "other"
            if _marked(message):
                kind = "explicit"
            elif message.get("role") in ("user", "tool"):
                kind = "implicit"
            cuts.append(Cut(end, self._ends[position], kind))
        return cuts

    def unknown_parts(self) -> list[str]:
        """What each part of unknown size in this prompt is (messages.unknown_size_parts)."""
        if not self.unknown_images:
            return []
        messages = self._messages.messages
        profile = self._messages.profile
        return [
            kind
            for position in range(self._count)
            for kind in unknown_size_parts(messages[self._indices[position]], profile)
        ]

    def message_at(self, index: int) -> int | None:
        """The position in this request (0 = its first message) of the message holding
        token `index`. The position, not the transcript's message index: a call that sends
        its own copy of the system prompt (a timestamped one, say) stores it as a new
        message, and its miss must group with the other calls' misses at message 0."""
        position = bisect.bisect_right(self._offsets, index, 0, self._count) - 1
        if position < 0 or index >= self._end:
            return None  # tools/response-format header, or reply priming
        return position

    def packed(self, start: int, end: int) -> bytes:
        """Tokens [start, end) of the prompt, packed."""
        parts = [_span(self._header, start, end)]
        first = max(0, bisect.bisect_right(self._offsets, start, 0, self._count) - 1)
        for position in range(first, self._count):
            offset = self._offsets[position]
            if offset >= end:
                break
            packed = self._messages.tokens(self._indices[position])
            parts.append(_span(packed, start - offset, end - offset))
        parts.append(_span(self._priming, start - self._end, end - self._end))
        return b"".join(parts)

    def tokens(self, start: int, end: int) -> Sequence[int]:
        return unpack(self.packed(start, end))


class TranscriptRenderer:
    """Renders the calls of one transcript for one model profile, in order."""

    def __init__(
        self,
        messages: list[ChatMessage],
        profile: ModelProfile,
        *,
        step: int = STEP,
        cache: EncodingCache | None = None,
        cut_points: bool = False,
        parallel: dict[int, ParallelResult] | None = None,
    ) -> None:
        self.messages = MessageTokens(messages, profile, cache, parallel)
        self.profile = profile
        self.step = step
        self.cut_points = cut_points  # track where breakpoint caches can cut (breakpoints.py)
        self._priming = pack(priming_tokens(profile))
        self._headers: dict[str, bytes] = {"": b""}
        # One chain per tools/format header, so calls that alternate tool sets keep theirs.
        self._chains: dict[str, _Chain] = {}
        self._latest_key: str | None = None  # the header key of the latest render

    def _header(
        self,
        tools: list[dict[str, Any]] | None,
        response_format: dict[str, Any] | None,
        after_system: str | None,
        responses_api: bool,
    ) -> tuple[str, bytes]:
        """Called only with tools or a response format (render checks first)."""
        key = json.dumps(
            [tools, response_format, after_system, *([True] if responses_api else [])],
            sort_keys=True,
            default=str,
        )
        if key not in self._headers:
            header = encode_header(
                tools,
                response_format,
                self.profile,
                after_system=after_system,
                responses_api=responses_api,
            )
            self._headers[key] = pack(header)
        return key, self._headers[key]

    def _read(self, chain: _Chain, start: int, end: int) -> bytes:
        return RenderedRequest(self.messages, chain, b"", ()).packed(start, end)

    def _fork(self, chain: _Chain, keep: int) -> _Chain:
        """A new chain sharing the first `keep` messages: their full blocks are reused, only
        the open partial block is read back."""
        length = chain.offsets[keep] if keep < len(chain.indices) else chain.length
        full = length // self.step
        return _Chain(
            header_key=chain.header_key,
            header=chain.header,
            indices=chain.indices[:keep],
            offsets=chain.offsets[:keep],
            length=length,
            hashes=chain.hashes[:full],
            pending=self._read(chain, full * self.step, length),
            unknown=sum(self.messages.unknown_images(i) for i in chain.indices[:keep]),
            ends=chain.ends[:keep] if chain.ends is not None else None,
        )

    def render(
        self,
        request: Sequence[int],
        *,
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
        tool_choice: object = None,
        known: int = 0,
        responses_api: bool = False,
    ) -> RenderedRequest:
        """`known`: the caller vouches that request[:known] is the request of this
        renderer's previous call (as a conversation that only grows knows it): when that
        call rendered it whole on the same header, the history is not compared again."""
        if tools or response_format:  # a header, which joins the opening system message
            first = [self.messages.messages[request[0]]] if request else []
            key, header = self._header(tools, response_format, system_tail(first), responses_api)
        else:
            key, header = "", b""
        chain = self._chains.get(key)
        if chain is None:
            chain = _Chain(key, header, [], [], 0, [], b"", 0, [] if self.cut_points else None)
            chain.feed(header, self.step)
        if known and known == len(chain.indices) and key == self._latest_key:
            keep = known  # the previous request, grown: no O(history) comparison
        else:
            keep = _common_prefix(chain.indices, request)
        self._latest_key = None  # (until this render is complete)
        if keep < len(chain.indices):
            self.messages.retain = True  # requests no longer just grow: messages come back
            chain = self._fork(chain, keep)
        take, append, step = self.messages.take, chain.append, self.step
        for index in request[keep:]:
            packed, unknown = take(index, early=chain.length < EARLY_TOKENS)
            append(index, packed, unknown, step)
        self._chains[key] = chain
        self._latest_key = key
        priming = self._priming
        if tool_choice is not None:
            priming += pack(forced_call_tokens(tool_choice, self.profile))
        if response_format is not None:  # (lists, not generators: compiled, mypyc makes lists)
            messages = [self.messages.messages[index] for index in request]
            priming += pack(structured_reply_tokens(response_format, messages, self.profile))
        if responses_api:
            messages = [self.messages.messages[index] for index in request]
            priming += pack(responses_result_tokens(messages, self.profile, responses_api))
        return self._snapshot(chain, priming)

    def _snapshot(self, chain: _Chain, priming: bytes) -> RenderedRequest:
        if len(chain.pending) + len(priming) < self.step * TOKEN_BYTES:
            # Reply priming closes no block (most calls): no list built to be copied.
            return RenderedRequest(self.messages, chain, priming, ())
        tail: list[int] = []
        parent = chain.hashes[-1] if chain.hashes else ROOT_HASH
        hash_blocks_into(chain.pending + priming, self.step, parent, tail)
        return RenderedRequest(self.messages, chain, priming, tuple(tail))

    def release(self) -> None:
        """Drop token lists but the early ones (lengths and hashes stay); diagnosis
        re-encodes the rest on demand."""
        self.messages.release()


def render_tokens(
    messages: list[ChatMessage],
    *,
    profile: ModelProfile,
    tools: list[dict[str, Any]] | None = None,
    response_format: dict[str, Any] | None = None,
    tool_choice: object = None,
    responses_api: bool = False,
) -> list[int]:
    """The full token sequence of one request (len == count_request)."""
    rendered = TranscriptRenderer(messages, profile).render(
        list(range(len(messages))),
        tools=tools,
        response_format=response_format,
        tool_choice=tool_choice,
        responses_api=responses_api,
    )
    return list(rendered.source.tokens(0, rendered.length))
