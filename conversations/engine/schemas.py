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
        if isinstance(parameters, dict) and ("$defs" in parameters or "definitions" in parameters):
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
        return f"// {label}\n{_type(items)}[]" if label else f"{_type(items)}[]"
    if kind == "integer":
        return "number"
    if kind in ("string", "number", "boolean", "null"):
        return str(kind)
    return "any"


def _item_label(items: dict[str, Any]) -> str | None:
    """The description (else the title) of an array's item object, which the model sees as a
    comment before the object's brace, as OpenAI's harmony renderer writes an object's
    description, and 2 tokens more that this text does not place (labelled_item_objects).
    Measured on two sources: crewai.jsonl lines 667-840 (8 calls of the TaskEvaluation tool,
    items `$ref` to pydantic's `Entity`, titled) 5 short without it; sublayer.jsonl lines 11 and 17 (items described "a
    single review", "a single step") 7 short; both exact with it. Items without either
    (pydantic-ai.jsonl lines 9-99, `answers: {...}[]`, 18 calls) stay exact."""
    if items.get("type") != "object" or not isinstance(items.get("properties"), dict):
        return None
    for key in ("description", "title"):
        value = items.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip().replace("\n", " ")
    return None


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
    return {
        key: _resolved(value, definitions, depth)
        for key, value in node.items()
        if key not in ("$defs", "definitions")
    }


def _comments(spec: object) -> list[str]:
    """The comment lines above a property: its title, then its description. Titles (pydantic
    adds one to every field) are shown: without them crewai's strict tools were 3 tokens
    short per titled property (crewai.jsonl lines 5-99 and 279-290, 41 calls exact with them,
    also dd-trace-py.jsonl line 140 and mirascope.jsonl line 185)."""
    if not isinstance(spec, dict):
        return []
    found = []
    for key in ("title", "description"):
        value = spec.get(key)
        if isinstance(value, str) and value:
            found.append(value)
    return found


def _default(spec: object) -> str:
    """A property's default as a trailing comment, as OpenAI's harmony renderer writes it; a
    string is quoted unless it is one of the enum's values. Measured: magentic.jsonl lines
    7-12 and crewai.jsonl line 122 exact with it, 7 tokens short without."""
    if not isinstance(spec, dict) or "default" not in spec:
        return ""
    value = spec["default"]
    if isinstance(value, str):
        shown = value if isinstance(spec.get("enum"), list) else f'"{value}"'
    else:
        shown = json.dumps(value)
    return f" // default: {shown}"


def _properties(schema: dict[str, Any]) -> str:
    properties = schema.get("properties")
    required = schema.get("required")
    required = required if isinstance(required, list) else []
    lines = []
    for name, spec in properties.items() if isinstance(properties, dict) else ():
        lines += [_comment(comment) for comment in _comments(spec)]
        optional = "" if name in required else "?"
        lines.append(f"{name}{optional}: {_type(spec)},{_default(spec)}")
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


_ITEM_LABEL_TOKENS = 2


def _labelled_items(node: object) -> int:
    if isinstance(node, list):
        return sum(_labelled_items(item) for item in node)
    if not isinstance(node, dict):
        return 0
    found = 0
    items = node.get("items")
    if node.get("type") == "array" and isinstance(items, dict) and _item_label(items):
        found += 1
    return found + sum(_labelled_items(value) for value in node.values())


def labelled_item_objects(tools: list[dict[str, Any]]) -> int:
    """The tokens the labels of array item objects cost beyond their comment (_item_label)."""
    return _ITEM_LABEL_TOKENS * sum(
        _labelled_items(function.get("parameters")) for function in _functions(tools)
    )


def undescribed_first_properties(tools: list[dict[str, Any]]) -> int:
    """Functions whose first property has no description: each counts one token fewer than
    its text encodes to (99 of 100 such calls in the corpus, e.g. activeagent.jsonl line 72,
    dd-trace-py.jsonl lines 10 and 149, activeagent.jsonl line 68 with two such functions).
    Not when that property is an object or an array of objects (its line ends with `{`):
    those count their text exactly (activeagent.jsonl lines 123-134, two such functions,
    2 short with the token taken off; pydantic-ai.jsonl lines 79-88, `answers: {...}[]`,
    1 short)."""
    count = 0
    for function in _functions(tools):
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        if isinstance(properties, dict) and properties:
            first = next(iter(properties.values()))
            count += not _comments(first) and not _type(first).startswith("{")
    return count
