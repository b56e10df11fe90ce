"""Offline tiktoken encodings and per-model counting profiles (design.md 2.4).

The vocabularies come from the `bpe-openai` wheel (`bpe_openai/data/<name>.tiktoken.gz`), never
from the network: deployments are air-gapped and tiktoken would otherwise download them. Only
the data files are read; bpe_openai's compiled bindings are never imported.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.util
import json
import sys
import types
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import tiktoken
from tiktoken_ext import openai_public

from .images import image_part_cost
from .types import ChatMessage

ENCODINGS = ("cl100k_base", "o200k_base")


class VocabularyError(RuntimeError):
    """The packaged vocabulary is missing or is not the file tiktoken expects."""


def _vocabulary_path(name: str) -> Path:
    # find_spec locates the package without executing its __init__ (which loads the bindings).
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise VocabularyError("the bpe-openai package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"


def _parse_ranks(contents: bytes) -> dict[bytes, int]:
    """Parse tiktoken's format: one `<base64 token> <rank>` pair per line."""
    ranks: dict[bytes, int] = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _packaged_ranks(name: str, expected_hash: str | None) -> dict[bytes, int]:
    path = _vocabulary_path(name)
    try:
        contents = gzip.decompress(path.read_bytes())
    except OSError as exc:
        raise VocabularyError(f"cannot read {path}: {exc}") from exc
    actual = hashlib.sha256(contents).hexdigest()
    if expected_hash is None or actual != expected_hash:
        raise VocabularyError(f"{path}: sha256 {actual} is not tiktoken's {expected_hash}")
    return _parse_ranks(contents)


def _encoding_spec(name: str) -> dict[str, Any]:
    """Run tiktoken's own constructor for `name` with its loader swapped for ours.

    o200k_base's pattern only exists inside its constructor, so calling the constructor is the
    one way to reuse tiktoken's pat_str, special tokens and expected hash without copying them.
    A copy of the function with patched globals leaves tiktoken_ext itself untouched.
    """
    constructor = openai_public.ENCODING_CONSTRUCTORS[name]

    def load_packaged(_blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        return _packaged_ranks(name, expected_hash)

    patched_globals = {**vars(openai_public), "load_tiktoken_bpe": load_packaged}
    offline: Callable[[], dict[str, Any]] = types.FunctionType(
        constructor.__code__, patched_globals, constructor.__name__
    )
    return offline()


@functools.cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """cl100k_base or o200k_base, loaded from the packaged file and hash-checked."""
    if name not in ENCODINGS:
        raise ValueError(f"unknown encoding {name!r}; expected one of {', '.join(ENCODINGS)}")
    spec = _encoding_spec(name)
    return tiktoken.Encoding(
        name=spec["name"],
        pat_str=spec["pat_str"],
        mergeable_ranks=spec["mergeable_ranks"],
        special_tokens=spec["special_tokens"],
    )


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """How one model turns a request into prompt tokens. Every field can be overridden: the
    Django layer builds profiles from its price rows (seed 001 shows gpt-4.1-nano reporting 18
    where the cookbook rule gives 26, so overheads must stay configurable)."""

    encoding: str = "o200k_base"
    tokens_per_message: int = 3
    tokens_per_name: int = 1
    reply_priming: int = 3
    # num_tokens_for_tools constants (OpenAI cookbook)
    func_init: int = 7
    prop_init: int = 3
    prop_key: int = 3
    enum_init: int = -3
    enum_item: int = 3
    func_end: int = 12
    # image_url parts: base + per 512px tile at high detail; base alone at low detail
    image_base_tokens: int = 85
    image_tile_tokens: int = 170
    context_window: int | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class _Family:
    prefix: str
    encoding: str
    context_window: int | None = None
    max_output_tokens: int | None = None
    legacy_0301: bool = False
    image_base: int = 85
    image_tile: int = 170


# Longest matching prefix wins, so "gpt-4o-mini" beats "gpt-4o" beats "gpt-4".
_FAMILIES = (
    _Family("gpt-5-chat", "o200k_base", 128_000, 16_384),
    _Family("gpt-5", "o200k_base", 400_000, 128_000),
    _Family("gpt-4.1", "o200k_base", 1_047_576, 32_768),
    _Family("gpt-4.5", "o200k_base", 128_000, 16_384),
    # gpt-4o-mini bills images at ~33x the tokens of gpt-4o (same dollars): OpenAI vision docs.
    _Family("gpt-4o-mini", "o200k_base", 128_000, 16_384, image_base=2833, image_tile=5667),
    _Family("gpt-4o-2024-05-13", "o200k_base", 128_000, 4_096),
    _Family("gpt-4o", "o200k_base", 128_000, 16_384),
    _Family("chatgpt-4o", "o200k_base", 128_000, 16_384),
    _Family("o1-mini", "o200k_base", 128_000, 65_536),
    _Family("o1-preview", "o200k_base", 128_000, 32_768),
    _Family("o1", "o200k_base", 200_000, 100_000, image_base=75, image_tile=150),
    _Family("o3", "o200k_base", 200_000, 100_000, image_base=75, image_tile=150),
    _Family("o4", "o200k_base", 200_000, 100_000),
    _Family("gpt-4-turbo", "cl100k_base", 128_000, 4_096),
    _Family("gpt-4-1106", "cl100k_base", 128_000, 4_096),
    _Family("gpt-4-0125", "cl100k_base", 128_000, 4_096),
    _Family("gpt-4-vision", "cl100k_base", 128_000, 4_096),
    _Family("gpt-4-32k", "cl100k_base", 32_768, 4_096),
    _Family("gpt-4", "cl100k_base", 8_192, 4_096),
    _Family("gpt-3.5-turbo-0301", "cl100k_base", 4_096, 4_096, legacy_0301=True),
    _Family("gpt-3.5-turbo-0613", "cl100k_base", 4_096, 4_096),
    _Family("gpt-3.5-turbo-16k", "cl100k_base", 16_385, 4_096),
    _Family("gpt-3.5-turbo", "cl100k_base", 16_385, 4_096),
)


def _family(model: str | None) -> _Family | None:
    if not model:
        return None
    name = model.strip().lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" -> "gpt-4o"
    matches = [f for f in _FAMILIES if name.startswith(f.prefix)]
    return max(matches, key=lambda f: len(f.prefix)) if matches else None


def default_profile(model: str | None) -> ModelProfile:
    """The cookbook's profile for a model name; unknown models get o200k_base and defaults."""
    family = _family(model)
    if family is None:
        return ModelProfile()
    cl100k = family.encoding == "cl100k_base"
    return ModelProfile(
        encoding=family.encoding,
        tokens_per_message=4 if family.legacy_0301 else 3,
        tokens_per_name=-1 if family.legacy_0301 else 1,
        func_init=10 if cl100k else 7,
        image_base_tokens=family.image_base,
        image_tile_tokens=family.image_tile,
        context_window=family.context_window,
        max_output_tokens=family.max_output_tokens,
    )


# --- Requests into tokens ---------------------------------------------------------------
#
# Chat-format tokens that are not text (<|start|>, <|message|>, <|end|>, tool-schema framing)
# become negative placeholder ids: they can never collide with a real token, and they make
# `len(tokens)` the cookbook count. A message renders as
#   START role [name] MESSAGE body [tool_call_id] END...  (one END per extra overhead token)
# and reply priming as START "assistant" MESSAGE, which is exactly how the next assistant
# message starts: the previous prompt is then a true prefix of the next one, as on the API.

# Not -1: hash(-1) == hash(-2) in CPython, and block hashes hash token tuples.
START = -5
MESSAGE = -6
_END = -10  # -10, -11, ...: trailing per-message overhead
_PRIMING = -200  # priming, when it cannot be the start of an assistant message
_TOOL = -1_000  # tool-definition framing: one range per cookbook constant
_PROP = -1_100
_PROP_KEY = -1_200
_FUNC_END = -1_400
# Images and synthetic messages: hashed runs far below the framing ids.
_HASHED_BASE = -(10**6)
_HASHED_SPAN = 2**30

# A synthetic message (e.g. a strategy's summary of assumed size) carries its token count here
# instead of text; its `content` is only used to make different synthetic messages differ.
SYNTHETIC_TOKENS_KEY = "costlab_synthetic_tokens"


@functools.cache
def _fillers(base: int, count: int) -> tuple[int, ...]:
    return tuple(base - i for i in range(count))


def _filler(base: int, count: int) -> list[int]:
    return list(_fillers(base, count))


def _hashed_run(seed: str, count: int) -> list[int]:
    """`count` placeholder ids derived from `seed`: equal seeds give equal runs."""
    start = int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=8).digest(), "big")
    return [_HASHED_BASE - (start + i) % _HASHED_SPAN for i in range(count)]


def _with_overhead(
    base: int, overhead: int, tokens: list[int], *, after: bool = False
) -> list[int]:
    """Framing placeholders around text tokens; a negative overhead (the cookbook's enum_init,
    0301's per-name -1) eats into the text so the length stays the documented count."""
    if overhead < 0:
        return tokens[: max(0, len(tokens) + overhead)]
    filler = _filler(base, overhead)
    return tokens + filler if after else filler + tokens


# --- Packed token sequences --------------------------------------------------------------
#
# The engine keeps token sequences as bytes of native int32 ("packed"), not as lists of Python
# ints: a list costs ~36 bytes and one object allocation per token, a packed sequence 4 bytes
# and none. Blocks are then hashed straight from byte slices, and retained messages stay small.
# Every id fits: real ids are < 2**31 and the placeholders above are > -2**31.
PACKED: Final = "i"
TOKEN_BYTES = array(PACKED).itemsize
if TOKEN_BYTES != 4:  # pragma: no cover - every platform CPython supports has a 4-byte int
    raise ImportError("costlab needs a 4-byte C int for packed token sequences")
_NATIVE = sys.byteorder


def pack(tokens: Iterable[int]) -> bytes:
    return array(PACKED, tokens).tobytes()


def unpack(packed: bytes) -> list[int]:
    return memoryview(packed).cast(PACKED).tolist()


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


def _encode_text(enc: tiktoken.Encoding, text: Any) -> list[int]:
    # encode_ordinary: "<|endoftext|>" typed by a user is text to the API, not a special token.
    return enc.encode_ordinary(text) if isinstance(text, str) and text else []


def _encode_parts(
    enc: tiktoken.Encoding, parts: list[Any], profile: ModelProfile
) -> tuple[list[int], int]:
    tokens: list[int] = []
    unknown = 0
    for part in parts:
        if isinstance(part, str):
            tokens += _encode_text(enc, part)
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            tokens += _encode_text(enc, part.get("text"))
        elif kind == "refusal":
            tokens += _encode_text(enc, part.get("refusal"))
        elif kind == "image_url":
            cost = image_part_cost(
                part, base=profile.image_base_tokens, tile=profile.image_tile_tokens
            )
            unknown += not cost.known
            seed = json.dumps(part.get("image_url"), sort_keys=True, default=str)
            tokens += _hashed_run(seed, cost.tokens)
        else:  # audio, files: no documented rule; reported like an unknown image
            unknown += 1
    return tokens, unknown


def _encode_tool_calls(enc: tiktoken.Encoding, message: ChatMessage) -> list[int]:
    """Function name and arguments of each tool call (estimate: the API's framing of tool calls
    is undocumented). The legacy `function_call` is counted the same way."""
    calls = list(message.get("tool_calls") or [])
    if isinstance(message.get("function_call"), dict):
        calls.append({"function": message["function_call"]})
    tokens: list[int] = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            tokens += _encode_text(enc, function.get("name"))
            tokens += _encode_text(enc, function.get("arguments"))
    return tokens


@functools.cache
def _role_tokens(encoding: str, role: str) -> tuple[int, ...]:
    return tuple(get_encoding(encoding).encode_ordinary(role))


@functools.cache
def _framing_packed(encoding: str, role: str, tokens_per_message: int) -> tuple[bytes, bytes]:
    """The packed tokens around a plain message's content: START role MESSAGE, then ENDs."""
    head = pack((START, *_role_tokens(encoding, role), MESSAGE))
    return head, pack(_fillers(_END, tokens_per_message - 2))


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
        opening, closing = _framing_packed(profile.encoding, role, profile.tokens_per_message)
        return EncodedMessage(opening + text + closing, len(text) // TOKEN_BYTES)
    enc = get_encoding(profile.encoding)
    synthetic = message.get(SYNTHETIC_TOKENS_KEY)
    unknown = 0
    if isinstance(synthetic, int):
        body = _hashed_run(f"synthetic:{message.get('content')}", synthetic)
    else:
        if isinstance(content, list):
            body, unknown = _encode_parts(enc, content, profile)
        else:
            body = _encode_text(enc, content)
        body += _encode_text(enc, message.get("refusal"))
        body += _encode_tool_calls(enc, message)
    name_tokens = _encode_text(enc, message.get("name"))
    overhead = profile.tokens_per_message + (profile.tokens_per_name if name_tokens else 0)
    head = [*_role_tokens(profile.encoding, str(message.get("role") or "")), *name_tokens]
    tail = body + _encode_text(enc, message.get("tool_call_id"))
    if overhead >= 2:
        tokens = [START, *head, MESSAGE, *tail, *_fillers(_END, overhead - 2)]
    else:
        tokens = _with_overhead(START, overhead, head + tail)
    return EncodedMessage(pack(tokens), body=len(body), unknown_images=unknown)


def priming_tokens(profile: ModelProfile) -> list[int]:
    """Reply priming: the opening of an assistant message when the counts allow it."""
    opening = [START, *_role_tokens(profile.encoding, "assistant"), MESSAGE]
    if profile.tokens_per_message >= 2 and profile.reply_priming == len(opening):
        return opening
    return _filler(_PRIMING, max(0, profile.reply_priming))


def _strip_period(text: object) -> str:
    text = "" if text is None else str(text)
    return text[:-1] if text.endswith(".") else text


def _encode_properties(
    enc: tiktoken.Encoding, properties: dict[str, Any], profile: ModelProfile
) -> list[int]:
    tokens = _filler(_PROP, profile.prop_init)
    for key, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        overhead = profile.prop_key
        enum_tokens: list[int] = []
        if "enum" in spec:
            items = spec["enum"] if isinstance(spec["enum"], list) else []
            overhead += profile.enum_init + profile.enum_item * len(items)
            for item in items:
                enum_tokens += _encode_text(enc, str(item))
        line = f"{key}:{spec.get('type', '')}:{_strip_period(spec.get('description'))}"
        tokens += _with_overhead(_PROP_KEY, overhead, enum_tokens + _encode_text(enc, line))
    return tokens


def encode_tools(tools: list[dict[str, Any]] | None, profile: ModelProfile) -> list[int]:
    """Tool definitions by the cookbook's num_tokens_for_tools (API-verified: 101 / 105).
    Only names, types, descriptions and enums count there; `required` is ignored."""
    if not tools:
        return []
    enc = get_encoding(profile.encoding)
    tokens: list[int] = []
    for tool in tools:
        # {"type": "function", "function": {...}} or the legacy bare `functions` entry
        function = tool.get("function", tool) if isinstance(tool, dict) else {}
        if not isinstance(function, dict):
            continue
        line = f"{function.get('name', '')}:{_strip_period(function.get('description'))}"
        tokens += _with_overhead(_TOOL, profile.func_init, _encode_text(enc, line))
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        if isinstance(properties, dict) and properties:
            tokens += _encode_properties(enc, properties, profile)
    return _with_overhead(_FUNC_END, profile.func_end, tokens, after=True)


def encode_response_format(
    response_format: dict[str, Any] | None, profile: ModelProfile
) -> list[int]:
    """A json_schema response format counted as its schema's compact JSON. This is an
    estimate: OpenAI does not document how structured-output schemas are rendered."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return []
    spec = response_format.get("json_schema")
    schema = spec.get("schema", spec) if isinstance(spec, dict) else spec
    text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    return _encode_text(get_encoding(profile.encoding), text)


def count_message(message: ChatMessage, profile: ModelProfile) -> int:
    return encode_message(message, profile).length


def count_request(
    messages: list[ChatMessage],
    *,
    profile: ModelProfile,
    tools: list[dict[str, Any]] | None = None,
    response_format: dict[str, Any] | None = None,
) -> int:
    """Prompt tokens of one chat-completions request (cookbook rules, tools included)."""
    total = len(encode_tools(tools, profile)) + len(
        encode_response_format(response_format, profile)
    )
    total += sum(count_message(message, profile) for message in messages)
    return total + len(priming_tokens(profile))
