"""Per-model counting profiles (design.md 2.4).

Owns: every per-model fact (encoding, chat overheads, image rates, context and output limits).

Defaults follow the OpenAI cookbook and model docs, by longest matching model-name prefix; the
Django layer overrides any field from its price rows. A new fact that differs between models
(such as a cache policy) belongs here, as a field, so that overriding it works the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """How one model turns a request into prompt tokens. Every field can be overridden: the
    Django layer builds profiles from its price rows (seed 001 shows gpt-4.1-nano reporting 18
    where the cookbook rule gives 26, so overheads must stay configurable)."""

    encoding: str = "o200k_base"
    tokens_per_message: int = 3
    tokens_per_name: int = 1
    reply_priming: int = 3
    # Tools: their namespace text (schemas.py) plus this framing, 4 fewer when the request
    # opens with a system or developer message (the tools join it instead of a message of
    # their own): the cookbook's 101/105 and the corpus's tool calls (render.encode_tools).
    tools_overhead: int = 9
    # On the gpt-5 family 3 of those 4 come back: with tools, the system text is headed
    # "# Instructions" as in OpenAI's harmony format (developer-led tool calls of gpt-5-nano,
    # ruby_llm.jsonl lines 127-129 and 204-205, mirascope.jsonl); on o4-mini all 4 (_FAMILIES).
    tools_system_saving: int = 4
    # Each tool call's framing beyond its name (twice) and arguments: the call's and its
    # result's (messages.py). 5 by the corpus's single-call rounds; 9 on the gpt-5 family,
    # whose call names its channel and recipient and whose result its author and channel:
    # 39 rounds of gpt-5, -mini, -nano, gpt-5.4 and -mini (pydantic-ai.jsonl lines 113-230,
    # ruby_llm.jsonl lines 141-207, crewai.jsonl lines 79-106).
    tool_round_tokens: int = 5
    # image_url parts: base + per 512px tile at high detail; base alone at low detail
    image_base_tokens: int = 85
    image_tile_tokens: int = 170
    # Patch-based image models: tokens per 32px patch (images.patch_tokens); None: tiles.
    image_patch_multiplier: float | None = None
    # Reasoning models (o3, o4-mini, the gpt-5 family) render chats the way OpenAI's harmony
    # format does: the reply priming stops after the role (`<|start|>assistant`, the model
    # writes its own channel), and each earlier assistant message names its channel
    # (`<|channel|>final`, 2 tokens). Measured on 146 text-only calls of 11 reasoning models:
    # one token fewer than the cookbook rule without an assistant message in the request
    # (ruby_llm.jsonl, crewai.jsonl, dd-trace-py.jsonl, pydantic-ai.jsonl, ...), one more with
    # one (openinference, activeagent, ruby_llm "uau" calls); o1-mini follows the cookbook.
    harmony: bool = False
    # Tokens the gpt-5 family's own instructions add whenever a request has tools (how to
    # call them, presumably): 82 over every tools-only call of gpt-5, gpt-5-mini, gpt-5-nano,
    # gpt-5.4 and gpt-5.4-mini (pydantic-ai.jsonl lines 112-229, ruby_llm.jsonl); o3-mini
    # adds none (crewai.jsonl).
    tools_preamble: int = 0
    # Tokens per function without a description, beyond its text: -1 on the gpt-5 family.
    # pydantic-ai.jsonl lines 130-169 (30 gpt-5-mini calls, one parameterless function with
    # `"description": ""`) were each 1 over; its 5 calls of the same function shape with a
    # description (and 34 of chatlas.jsonl and ruby_llm.jsonl) are exact. Other models count
    # such a function by its text: 158 of the 168 calls with one are exact (pydantic-ai.jsonl
    # line 9, gpt-4o); of the other 10, 9 are one short and 1 one over.
    undescribed_function_tokens: int = 0
    context_window: int | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class _Family:
    prefix: str
    encoding: str
    context_window: int | None = None
    max_output_tokens: int | None = None
    legacy_0301: bool = False
    search: bool = False
    image_base: int = 85
    image_tile: int = 170
    patch: float | None = None
    harmony: bool = False
    tools_preamble: int = 0
    tools_system_saving: int = 4
    tool_round_tokens: int = 5
    undescribed_function_tokens: int = 0


# The gpt-5 family: harmony chats and the tools preamble (ModelProfile).
_GPT5: dict[str, Any] = {
    "harmony": True,
    "tools_preamble": 82,
    "tools_system_saving": 1,
    "tool_round_tokens": 9,
    "undescribed_function_tokens": -1,
}

# o4 and o4-mini: harmony chats whose tools cost as much after a system message as alone,
# and tool rounds of the gpt-5 family's size (_FAMILIES).
_O4: dict[str, Any] = {"harmony": True, "tools_system_saving": 0, "tool_round_tokens": 9}

# Longest matching prefix wins, so "gpt-4o-mini" beats "gpt-4o" beats "gpt-4".
_FAMILIES = (
    _Family("gpt-5-chat", "o200k_base", 128_000, 16_384, **_GPT5),
    # gpt-5 bills images by tiles of 70 + 140 (activeagent.jsonl lines 46-48, crewai.jsonl
    # line 345); its mini and nano by patches, x1.2 and x1.5 (crewai.jsonl lines 344 and 346,
    # ruby_llm.jsonl line 217).
    _Family("gpt-5", "o200k_base", 400_000, 128_000, **_GPT5, image_base=70, image_tile=140),
    _Family("gpt-5-mini", "o200k_base", 400_000, 128_000, **_GPT5, patch=1.2),
    _Family("gpt-5-nano", "o200k_base", 400_000, 128_000, **_GPT5, patch=1.5),
    _Family("gpt-4.1", "o200k_base", 1_047_576, 32_768),
    # OpenAI's vision guide: patches x1.62 (mini), x2.46 (nano), x1.72 (o4-mini); crewai.jsonl
    # lines 3-4, pydantic-ai.jsonl line 177, ruby_llm.jsonl lines 1 and 211-215.
    _Family("gpt-4.1-mini", "o200k_base", 1_047_576, 32_768, patch=1.62),
    _Family("gpt-4.1-nano", "o200k_base", 1_047_576, 32_768, patch=2.46),
    _Family("gpt-4.5", "o200k_base", 128_000, 16_384),
    # gpt-4o-mini bills images at ~33x the tokens of gpt-4o (same dollars): OpenAI vision docs.
    _Family("gpt-4o-mini", "o200k_base", 128_000, 16_384, image_base=2833, image_tile=5667),
    # The search models bill only the messages' text: no framing, no role, no priming
    # (gpt-4o-search-preview: activeagent.jsonl line 83, openai-dotnet.jsonl lines 101-102,
    # pydantic-ai.jsonl lines 208-209; gpt-4o-mini-search-preview: ruby_llm.jsonl line 71).
    _Family("gpt-4o-search", "o200k_base", 128_000, 16_384, search=True),
    _Family("gpt-4o-mini-search", "o200k_base", 128_000, 16_384, search=True),
    _Family("gpt-4o-2024-05-13", "o200k_base", 128_000, 4_096),
    _Family("gpt-4o", "o200k_base", 128_000, 16_384),
    _Family("chatgpt-4o", "o200k_base", 128_000, 16_384),
    _Family("o1-mini", "o200k_base", 128_000, 65_536),
    _Family("o1-preview", "o200k_base", 128_000, 32_768),
    _Family("o1", "o200k_base", 200_000, 100_000, image_base=75, image_tile=150),
    _Family("o3", "o200k_base", 200_000, 100_000, image_base=75, image_tile=150, harmony=True),
    # o4-mini's tools save nothing after a system message (ModelProfile.tools_system_saving):
    # fantasy.jsonl lines 9, 11, 51 and 53 (one request to OpenAI and to Azure, two recordings
    # each) reported 64 where the saving gave 60. Its tool rounds cost the gpt-5 family's 9:
    # lines 52 and 54 (api.openai.com) are exact with it, 4 short with 5; the same request to
    # Azure minutes earlier (lines 10 and 12) reported 3 fewer, 92, which nothing here
    # explains. No other o3 or o4 call has either, so o3 keeps the defaults, unmeasured
    # (o3-mini's own tool rounds are 1 over with 5: crewai.jsonl lines 183 and 185). A plain
    # "o4" (no such call in the corpus) is given o4-mini's, by extrapolation.
    _Family("o4", "o200k_base", 200_000, 100_000, **_O4),
    _Family("o4-mini", "o200k_base", 200_000, 100_000, **_O4, patch=1.72),
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
    # Azure names deployments of gpt-3.5-turbo "gpt-35-turbo" (dd-trace-py.jsonl lines 118-126,
    # openllmetry.jsonl line 110, openllmetry-js.jsonl line 1: cl100k counts, not o200k's).
    if name.startswith("gpt-35"):
        name = "gpt-3.5" + name[len("gpt-35") :]
    matches = [f for f in _FAMILIES if name.startswith(f.prefix)]
    return max(matches, key=lambda f: len(f.prefix)) if matches else None


def default_profile(model: str | None) -> ModelProfile:
    """The cookbook's profile for a model name; unknown models get o200k_base and defaults."""
    family = _family(model)
    if family is None:
        return ModelProfile()
    if family.search:  # the role's one token is taken back (render.with_overhead)
        return ModelProfile(
            encoding=family.encoding,
            tokens_per_message=-1,
            tokens_per_name=0,
            reply_priming=0,
            context_window=family.context_window,
            max_output_tokens=family.max_output_tokens,
        )
    return ModelProfile(
        encoding=family.encoding,
        tokens_per_message=4 if family.legacy_0301 else 3,
        tokens_per_name=-1 if family.legacy_0301 else 1,
        image_base_tokens=family.image_base,
        image_tile_tokens=family.image_tile,
        image_patch_multiplier=family.patch,
        context_window=family.context_window,
        max_output_tokens=family.max_output_tokens,
        harmony=family.harmony,
        tools_preamble=family.tools_preamble,
        tools_system_saving=family.tools_system_saving,
        tool_round_tokens=family.tool_round_tokens,
        undescribed_function_tokens=family.undescribed_function_tokens,
    )
