"""Tool definitions as the text the API shows the model (design.md 2.4).

Owns: a request's `tools` (or legacy `functions`) -> the TypeScript-like namespace text that
OpenAI renders them into, and the per-function quirks of its count.

The API does not send JSON schemas as JSON: each function becomes a commented TypeScript type
inside `namespace functions { ... }`. Rendering that text and encoding it reproduces the
reported counts (tests/formats/test_real_corpus.py); the cookbook's per-key constants only
approximated it, and missed nested objects, arrays and multi-line descriptions entirely.
"""

from __future__ import annotations

import json
from typing import Any


def _functions(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The function objects of `tools` entries or bare legacy `functions` entries."""
    found = []
    for tool in tools:
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            continue
        parameters = function.get("parameters")
        if isinstance(parameters, dict):
            definitions = {
                **(parameters.get("definitions") or {}),
                **(parameters.get("$defs") or {}),
            }
            function = {**function, "parameters": _resolved(parameters, definitions)}
        found.append(function)
    return found


def _enum_literal(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else json.dumps(value)


def _type(spec: object) -> str:
    if not isinstance(spec, dict):
        return "any"
    enum = spec.get("enum")
    if isinstance(enum, list) and enum:
        return " | ".join(_enum_literal(value) for value in enum)
    kind = spec.get("type")
    if isinstance(kind, list):
        return " | ".join(_type({**spec, "type": one}) for one in kind)
    if kind is None:
        variants = spec.get("anyOf") or spec.get("oneOf")
        if isinstance(variants, list) and variants:
            return " | ".join(_type(variant) for variant in variants)
    if kind == "object":
        # Nested properties are not indented: indenting them overcounted every nested
        # object by a token per line (activeagent.jsonl lines 3-24, 11 calls, +11/+12).
        return "{\n" + _properties(spec) + "\n}"
    if kind == "array":
        items = spec.get("items")
        if not isinstance(items, dict):
            return "any[]"
        label = _item_label(items)
        if label:
            return f"Array<\n// {label}\n{_type(items)}\n>"
        if _has_comments(items):
            return f"Array<\n{_type(items)}\n>"
        if _is_union(items):
            return f"Array<{_type(items)}>"
        return f"{_type(items)}[]"
    if kind == "integer":
        return "number"
    if kind in ("string", "number", "boolean", "null"):
        return str(kind)
    return "any"


def _is_union(spec: dict[str, Any]) -> bool:
    """Whether a type renders as alternatives (`"a" | "b"`), which `[]` cannot follow."""
    enum, kind = spec.get("enum"), spec.get("type")
    variants = spec.get("anyOf") or spec.get("oneOf")
    if isinstance(enum, list):
        return len(enum) > 1
    if isinstance(kind, list):
        return len(kind) > 1
    return kind is None and isinstance(variants, list) and len(variants) > 1


# An array's items are written `T[]`, except where that would be ambiguous or leave nowhere
# for a comment: alternatives are written `Array<"a" | "b">` and a labelled item object
# `Array<\n// label\n{...}\n>`.
# - Enum items: adala.jsonl lines 65-74 and 185-194 (20 calls, `choice2?: Array<"Red" |
#   "Green" | "Blue"> | null`) exact, 1 short as `"Red" | "Green" | "Blue"[]` and as
#   `("Red" | "Green" | "Blue")[]` (parentheses cost nothing more here). Only Adala has
#   arrays of enums (135 calls); items of other unions (type lists, anyOf) are unseen and
#   written the same way, as the one reading that `[]` would not change.
# - Labelled items: crewai.jsonl lines 667-840 (8 calls, items `$ref` to pydantic's titled
#   `Entity`) and sublayer.jsonl lines 11 and 17 (items described "a single review", "a single
#   step") are exact with the label inside `Array<...>`, which costs the 2 tokens that an
#   earlier rule added without placing them; it also makes Adala's labelled item objects
#   inside `anyOf` exact (below, _union_lines). Unlabelled item objects stay `{...}[]`:
#   pydantic-ai.jsonl lines 9-99 (`answers: {...}[]`, 18 calls) are 2 over as `Array<...>`.
# - Unlabelled items with comments inside (a property's description or title) are written
#   `Array<\n{...}\n>`, as labelled ones less the label: instructor-rb.jsonl line 1
#   (gpt-3.5-turbo-0125; `items` and, inside it, `subtasks` are such arrays) is exact with
#   it, 4 short as `{...}[]`; crewai.jsonl's create_reasoning_plan (11 calls) comes 2 tokens
#   closer (the rest of its gap was its type list `["string", "null"]`: _variants).
#   pydantic-ai's `answers` items have no comments and stay `{...}[]`.


def _item_label(items: dict[str, Any]) -> str | None:
    """The description (else the title) of an array's item object, which the model sees as a
    comment inside `Array<...>` before the object's brace (see above). Without it crewai's
    TaskEvaluation calls were 5 short and sublayer's 7."""
    if items.get("type") != "object" or not isinstance(items.get("properties"), dict):
        return None
    for key in ("description", "title"):
        value = items.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip().replace("\n", " ")
    return None


def _has_comments(items: dict[str, Any]) -> bool:
    """Whether an item object shows a comment inside: a property with a title or description."""
    properties = items.get("properties")
    if items.get("type") != "object" or not isinstance(properties, dict):
        return False
    return any(_comments(spec) for spec in properties.values())


_REF_DEPTH = 8


def _resolved(node: Any, definitions: dict[str, Any], depth: int = 0) -> Any:
    """A schema with its local `$ref`s (pydantic's `#/$defs/Name`) replaced by what they
    name: the model sees the referenced type inline (crewai.jsonl line 840, mirascope.jsonl
    line 112: 26 and 56 tokens short while they rendered as `any`)."""
    if isinstance(node, list):
        return [_resolved(item, definitions, depth) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/") and depth < _REF_DEPTH:
        target = definitions.get(ref.rsplit("/", 1)[-1])
        if isinstance(target, dict):
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolved(merged, definitions, depth + 1)
    parts = node.get("allOf")
    if isinstance(parts, list) and parts and all(isinstance(part, dict) for part in parts):
        # pydantic wraps a described `$ref` in a one-part `allOf`: the model sees the parts
        # merged, the referenced enum's title included (adala.jsonl lines 1-3 and 35-37,
        # gpt-3.5-turbo-0125: 12 short while it rendered as `any`, 1 short with it merged)
        combined: dict[str, Any] = {}
        for part in parts:
            combined.update(_resolved(part, definitions, depth + 1))
        combined.update({key: value for key, value in node.items() if key != "allOf"})
        return _resolved(combined, definitions, depth + 1) if depth < _REF_DEPTH else combined
    return {
        key: _resolved(value, definitions, depth)
        for key, value in node.items()
        if key not in ("$defs", "definitions")
    }


def _comments(spec: object) -> str:
    """The comment above a property: its title, then its description as a second paragraph
    (a bare `//` line between them), "" without either. Titles (pydantic adds one to every
    field) are shown: without them crewai's strict tools were 3 tokens short per titled
    property (crewai.jsonl lines 5-99 and 279-290, 41 calls exact with them, also
    dd-trace-py.jsonl line 140 and mirascope.jsonl line 185). The blank line is how OpenAI's
    harmony renderer separates a title from the description; it costs a token on cl100k
    models and none on o200k ones, where `\n//\n` is one token: with it every cl100k call
    with a titled and described property is exact (adala.jsonl, gpt-3.5-turbo-0125, 78 calls
    1 short before, one such property each; crewai.jsonl lines 170-172, gpt-3.5-turbo-0125, 2
    properties, and 621 and 624, gpt-4-0125-preview, 6 properties, as many tokens short), and
    none of the 900-odd o200k calls with such properties changes."""
    if not isinstance(spec, dict):
        return ""
    found = [
        value
        for value in (spec.get("title"), spec.get("description"))
        if isinstance(value, str) and value
    ]
    return "\n\n".join(found)


# Number constraints follow the default in the trailing comment (`evaluation: number, //
# minimum: 0, maximum: 5`): adala.jsonl lines 47-50 and 53-54 (6 calls, one property with
# both) were 11 and 12 short without them and are exact; `start: number, // minimum: 0`
# inside array items (adala.jsonl lines 85-134 and 205-299, 105 calls, two such properties)
# and `minItems: 1` on an array (adala.jsonl lines 339-348, 10 calls) are exact with the
# rules beside them. Only Adala's schemas carry constraints (no other source has any), so
# these three keys are the ones measured; other keywords (maxItems, minLength, pattern,
# uniqueItems, format) are not shown, and Adala's `uniqueItems: true` beside `minItems` is
# exact that way. A default and a constraint on one property are unseen: both are written,
# default first, as one comment.
_CONSTRAINTS = ("minimum", "maximum", "minItems")


def _trailing(spec: object) -> str:
    """What follows a property's comma: its default, as OpenAI's harmony renderer writes it (a
    string quoted unless it is one of the enum's values; magentic.jsonl lines 7-12 and
    crewai.jsonl line 122 exact with it, 7 tokens short without), then its constraints."""
    if not isinstance(spec, dict):
        return ""
    found = []
    if "default" in spec:
        value = spec["default"]
        if isinstance(value, str):
            found.append(value if isinstance(spec.get("enum"), list) else f'"{value}"')
        else:
            found.append(json.dumps(value))
        found[0] = f"default: {found[0]}"
    found += [f"{key}: {json.dumps(spec[key])}" for key in _CONSTRAINTS if key in spec]
    return ", ".join(found)


def _variants(spec: dict[str, Any]) -> list[Any] | None:
    """A property's alternatives: its `anyOf` (or `oneOf`), or one variant per entry of a
    type list, each keeping the property's other keywords (JSON Schema's own reading of
    `{"type": ["string", "null"], "description": d}` as two described alternatives).

    The type list is laid out like an anyOf of described variants: crewai.jsonl's
    create_reasoning_plan (lines 43, 51, 57, 69, 107, 113, 121, 150, 162, 806 and 812,
    gpt-4o-mini and gpt-4o, `tool_to_use: {"type": ["string", "null"], "description": ...}`
    inside its `steps` items) was 32 tokens short with the inline `string | null` and is 1
    short with this layout, within 1 % (the token left is not placed). These are the only
    tools in the corpus with a type list, and no other public recording of one was found
    (tests/fixtures/real/README.md, "Third round"), so the layout is the one the anyOf rule
    below measured on Adala and instructor-rb, not one fitted to crewAI. A type
    list without a description stays inline (like undescribed anyOf variants); type lists in
    response formats are JSON and need nothing (dspy-rb.jsonl lines 563, 584 and 586, exact)."""
    variants = spec.get("anyOf") or spec.get("oneOf")
    if isinstance(variants, list):
        return variants
    kind = spec.get("type")
    if isinstance(kind, list) and len(kind) > 1:
        rest = {key: value for key, value in spec.items() if key != "type"}
        return [{**rest, "type": one} for one in kind]
    return None


def _union_lines(name: str, spec: dict[str, Any]) -> list[str] | None:
    """A property whose `anyOf` (or `oneOf`) has a variant written over several lines or a
    described variant, laid out as OpenAI's harmony renderer lays out a `oneOf` property: the
    default as a comment line above, the name alone, each variant on a ` | ` line with its
    description after it, then a lone comma. Measured: adala.jsonl lines 51 and 85-134,
    205-299 (106 calls, `entities?: Array<// Entity {...}> | null` and the like) were 3 short
    inline and are exact; instructor-rb.jsonl line 1 (two nullable properties whose array
    variant is described) goes from 31 short to 4 short. Unions of one-line undescribed
    variants stay inline (`title?: string | null, // default: null`: 129 of Adala's calls,
    openinference.jsonl, ruby_llm.jsonl). None otherwise."""
    variants = _variants(spec)
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        return None
    if not any("\n" in _type(variant) or _described(variant) for variant in variants):
        return None
    trailing = _trailing(spec)
    lines = [f"// {trailing}"] if trailing else []
    lines.append(f"{name}:")
    for variant in variants:
        described = _described(variant)
        lines.append(f" | {_type(variant)}" + (f" // {described}" if described else ""))
    lines.append(",")
    return lines


def _described(spec: dict[str, Any]) -> str:
    value = spec.get("description")
    return value if isinstance(value, str) else ""


def _properties(schema: dict[str, Any]) -> str:
    properties = schema.get("properties")
    required = schema.get("required")
    required = required if isinstance(required, list) else []
    lines = []
    for name, spec in properties.items() if isinstance(properties, dict) else ():
        comments = _comments(spec)
        if comments:
            lines.append(_comment(comments))
        key = name if name in required else f"{name}?"
        union = _union_lines(key, spec) if isinstance(spec, dict) else None
        if union is not None:
            lines += union
            continue
        trailing = _trailing(spec)
        lines.append(f"{key}: {_type(spec)}," + (f" // {trailing}" if trailing else ""))
    return "\n".join(lines)


def _comment(text: str) -> str:
    """Text as `//` comment lines: each line stripped, blank ones a bare `//`. Counting a
    multi-line description as one comment overcounted pydantic-ai's docstrings (+11 to +18
    per call, pydantic-ai.jsonl lines 36-56) and undercounted crewai's by 2 (crewai.jsonl
    lines 503-559); stripped lines leave 48 of the 61 tools-only calls with multi-line
    descriptions exact (dd-trace-py.jsonl, mirascope.jsonl, langchaingo.jsonl too)."""
    return "\n".join(f"// {line.strip()}".rstrip() for line in text.strip().split("\n"))


def tools_text(tools: list[dict[str, Any]]) -> str:
    """`namespace functions { ... }`: per function its description as a comment, then
    `type name = (_: {...}) => any;`, or `() => any;` without properties."""
    lines = ["namespace functions {", ""]
    for function in _functions(tools):
        description = function.get("description")
        if isinstance(description, str) and description:
            lines.append(_comment(description))
        name = function.get("name", "")
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        if isinstance(parameters, dict) and isinstance(properties, dict) and properties:
            # The parameters' own title (pydantic's model name) is a comment on the first line
            # of the object: 9 of the 13 calls with one are exact (magentic.jsonl lines 45-48,
            # openinference.jsonl lines 3-14, dd-trace-py.jsonl line 144), 4 to 6 short before.
            title = parameters.get("title")
            inner = [_comment(title)] if isinstance(title, str) and title else []
            lines += [f"type {name} = (_: {{", *inner, _properties(parameters), "}) => any;"]
        else:
            lines.append(f"type {name} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


def undescribed_first_properties(tools: list[dict[str, Any]]) -> int:
    """Functions whose first property has no description: each counts one token fewer than
    its text encodes to (99 of 100 such calls in the corpus, e.g. activeagent.jsonl line 72,
    dd-trace-py.jsonl lines 10 and 149, activeagent.jsonl line 68 with two such functions).
    Not when that property is an object or an array of objects (_holds_objects):
    those count their text exactly (activeagent.jsonl lines 123-134, two such functions,
    2 short with the token taken off; pydantic-ai.jsonl lines 79-88, `answers: {...}[]`,
    1 short)."""
    count = 0
    for function in _functions(tools):
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        if isinstance(properties, dict) and properties:
            first = next(iter(properties.values()))
            count += not _comments(first) and not _holds_objects(first)
    return count


def _holds_objects(spec: object) -> bool:
    """An object (its type opens with `{`), or an array of objects however its items are
    written (`{...}[]` or `Array<...>`): what undescribed_first_properties leaves alone."""
    if _type(spec).startswith("{"):
        return True
    items = spec.get("items") if isinstance(spec, dict) else None
    return isinstance(items, dict) and items.get("type") == "object"


# A function whose parameters allow other properties (`additionalProperties: true`) counts 7
# tokens more. openai-dotnet.jsonl lines 133-138 send one function six times to gpt-4o with a
# system message: with `additionalProperties: true` (lines 133, 134, 137 and 138) it reported
# 95 prompt tokens, with `false` (lines 135 and 136) 88, all else equal. The text behind them
# is unknown: a TypeScript index signature line (`[key: string]: any,`) is 6 of them in place.
# So this is a count, measured on o200k only; these are the corpus's only open objects, and
# nested ones or a schema as the value (typed extra properties) are unseen and not counted.
OPEN_PARAMETERS_TOKENS = 7


def open_parameters(tools: list[dict[str, Any]]) -> int:
    """Functions whose parameters object is open (`additionalProperties: true`)."""
    count = 0
    for function in _functions(tools):
        parameters = function.get("parameters")
        count += isinstance(parameters, dict) and parameters.get("additionalProperties") is True
    return count


def undescribed_functions(tools: list[dict[str, Any]]) -> int:
    """Functions without a description (absent or empty): the gpt-5 family counts each one
    token fewer than its text (ModelProfile.undescribed_function_tokens). Custom tools and
    other non-function entries are not functions here."""
    count = 0
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type", "function") != "function":
            continue
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name"):
            description = function.get("description")
            count += not (isinstance(description, str) and description)
    return count
