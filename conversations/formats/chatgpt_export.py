"""ChatGPT data export (`conversations.json`): a list of conversations, or one conversation.

Each conversation is a tree: `mapping` (node id -> {id, message, parent, children}) and
`current_node`, the leaf the user last saw. The transcript is the active path: walk parents
from `current_node` to the root, reversed. Other branches (edited prompts, regenerated
answers) are counted in a warning, not imported. Nodes without a message are skipped, and
so are system messages hidden from the conversation (metadata
`is_visually_hidden_from_conversation`), with a count.

Content: `text` (parts joined), `multimodal_text` (text parts kept; an image asset pointer
becomes an `image_url` part whose url is the pointer, with `width`/`height` from the export
or None when unknown, and a warning: the export holds no pixels), `code`,
`execution_output`, `tether_browsing_display`, `tether_quote`, `user_editable_context`; any
other type is kept when it has text and otherwise skipped with a warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conversations.engine.types import ChatMessage, Transcript

from .errors import describe
from .messages import ROLES, parse_time
from .records import Record, record_object


@dataclass(slots=True)
class _Notes:
    """What was left out or approximated, turned into warnings once per conversation."""

    hidden: int = 0
    images: int = 0
    images_unknown_size: int = 0
    skipped: list[str] | None = None

    def skip(self, text: str) -> None:
        if self.skipped is None:
            self.skipped = []
        self.skipped.append(text)


def parse_chatgpt_export(records: Iterable[Record]) -> Iterator[Transcript]:
    for record in records:
        yield export_transcript(record)


def export_transcript(record: Record) -> Transcript:
    obj = record_object(record)
    mapping = obj.get("mapping")
    if not isinstance(mapping, dict):
        got = "missing field" if mapping is None else f"expected an object, got {describe(mapping)}"
        raise record.error(got, "mapping")
    warnings: list[str] = []
    path = _active_path(mapping, obj.get("current_node"), record, warnings)

    notes = _Notes()
    messages: list[ChatMessage] = []
    times: list[datetime | None] = []
    model: str | None = None
    for node_id in path:
        raw = mapping[node_id].get("message")
        if raw is None:
            continue
        field = f"mapping[{node_id!r}].message"
        message = _message(raw, record, field, notes)
        if message is None:
            continue
        messages.append(message)
        times.append(parse_time(raw.get("create_time")))
        metadata = raw.get("metadata")
        slug = metadata.get("model_slug") if isinstance(metadata, dict) else None
        if message["role"] == "assistant" and isinstance(slug, str):
            model = slug

    warnings.extend(_notes_warnings(notes))
    warnings.extend(_branch_warnings(mapping, path))
    if not messages:
        warnings.append("no messages on the active path")
    default_model = obj.get("default_model_slug")
    title = obj.get("title")
    conversation_id = obj.get("conversation_id") or obj.get("id")
    return Transcript(
        messages=messages,
        external_id=None if conversation_id is None else str(conversation_id),
        title=title if isinstance(title, str) else "",
        model=model or (default_model if isinstance(default_model, str) else None),
        created_at=parse_time(obj.get("create_time")),
        message_times=times if any(t is not None for t in times) else None,
        location=record.location,
        warnings=warnings,
    )


def _active_path(
    mapping: dict[str, Any], current: Any, record: Record, warnings: list[str]
) -> list[str]:
    for key, node in mapping.items():
        if not isinstance(node, dict):
            raise record.error(f"expected a node object, got {describe(node)}", f"mapping[{key!r}]")
    if not mapping:
        return []
    if current is None:
        current = _latest_leaf(mapping)
        warnings.append("no current_node: took the most recent leaf as the active path")
    elif not isinstance(current, str) or current not in mapping:
        raise record.error(f"node {current!r} is not in mapping", "current_node")
    path: list[str] = []
    seen: set[str] = set()
    node_id: Any = current
    while node_id is not None:
        if node_id in seen:
            raise record.error(f"parent links form a cycle at node {node_id!r}", "mapping")
        if node_id not in mapping:
            warnings.append(f"node {path[-1]!r} names a missing parent {node_id!r}; path cut there")
            break
        seen.add(node_id)
        path.append(node_id)
        node_id = mapping[node_id].get("parent")
    path.reverse()
    return path


def _latest_leaf(mapping: dict[str, Any]) -> str:
    def when(node_id: str) -> float:
        message = mapping[node_id].get("message")
        created = message.get("create_time") if isinstance(message, dict) else None
        return float(created) if isinstance(created, (int, float)) else 0.0

    leaves = [node_id for node_id, node in mapping.items() if not node.get("children")]
    return max(leaves or list(mapping), key=when)


def _message(raw: Any, record: Record, field: str, notes: _Notes) -> ChatMessage | None:
    if not isinstance(raw, dict):
        raise record.error(f"expected a message object, got {describe(raw)}", field)
    author = raw.get("author")
    role = author.get("role") if isinstance(author, dict) else None
    if role not in ROLES:
        expected = ", ".join(ROLES)
        raise record.error(f"unknown role {role!r} (expected {expected})", f"{field}.author.role")
    metadata = raw.get("metadata")
    hidden = isinstance(metadata, dict) and metadata.get("is_visually_hidden_from_conversation")
    if role == "system" and hidden:
        notes.hidden += 1
        return None
    content = raw.get("content")
    if not isinstance(content, dict):
        notes.skip(f"{field}.content: expected an object, got {describe(content)}; message skipped")
        return None
    converted = _content(content, field, notes)
    if converted is None:
        return None
    return {"role": role, "content": converted}


def _content(content: dict[str, Any], field: str, notes: _Notes) -> str | list[Any] | None:
    kind = content.get("content_type")
    if kind == "multimodal_text":
        return _multimodal(content.get("parts"), field, notes)
    if kind == "user_editable_context":
        return _joined(content, ("user_profile", "user_instructions"))
    if kind == "tether_quote":
        return _joined(content, ("title", "text"))
    # text, code, execution_output, tether_browsing_display and unknown types keep their
    # text in `parts`, `text` or `result`.
    parts = content.get("parts")
    if isinstance(parts, list):
        texts = [part for part in parts if isinstance(part, str)]
        if len(texts) < len(parts):
            notes.skip(f"{field}.content.parts: {len(parts) - len(texts)} non-text part(s) dropped")
        return "\n".join(texts)
    for key in ("text", "result"):
        if isinstance(content.get(key), str):
            return str(content[key])
    notes.skip(f"{field}.content: content type {kind!r} has no text; message skipped")
    return None


def _joined(content: dict[str, Any], keys: tuple[str, ...]) -> str:
    texts = [content.get(key) for key in keys]
    return "\n\n".join(text for text in texts if isinstance(text, str) and text)


def _multimodal(parts: Any, field: str, notes: _Notes) -> str | list[Any]:
    if not isinstance(parts, list):
        notes.skip(f"{field}.content.parts: expected a list, got {describe(parts)}")
        return ""
    out: list[dict[str, Any]] = []
    for i, part in enumerate(parts):
        if isinstance(part, str):
            out.append({"type": "text", "text": part})
        elif isinstance(part, dict) and part.get("content_type") == "image_asset_pointer":
            out.append(_image(part, notes))
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            out.append({"type": "text", "text": part["text"]})  # e.g. audio transcriptions
        else:
            kind = part.get("content_type") if isinstance(part, dict) else describe(part)
            notes.skip(f"{field}.content.parts[{i}]: unsupported part {kind!r} dropped")
    if all(part["type"] == "text" for part in out):
        return "\n".join(part["text"] for part in out)
    return out


def _image(part: dict[str, Any], notes: _Notes) -> dict[str, Any]:
    width, height = part.get("width"), part.get("height")
    known = isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0
    notes.images += 1
    notes.images_unknown_size += not known
    return {
        "type": "image_url",
        "image_url": {"url": str(part.get("asset_pointer") or ""), "detail": "auto"},
        "width": width if known else None,
        "height": height if known else None,
    }


def _notes_warnings(notes: _Notes) -> list[str]:
    warnings: list[str] = []
    if notes.hidden:
        warnings.append(f"{notes.hidden} hidden system message(s) skipped")
    if notes.images:
        unknown = (
            f"; {notes.images_unknown_size} of unknown size, their tokens cannot be counted"
            if notes.images_unknown_size
            else ""
        )
        warnings.append(
            f"{notes.images} image(s) kept as parts pointing at export assets (no pixels "
            f"in the export){unknown}"
        )
    warnings.extend(notes.skipped or [])
    return warnings


def _branch_warnings(mapping: dict[str, Any], path: list[str]) -> list[str]:
    on_path = set(path)
    branches = sum(
        1
        for node_id in path
        for child in mapping[node_id].get("children") or []
        if child not in on_path
    )
    off_path = sum(
        1 for node_id, node in mapping.items() if node_id not in on_path and node.get("message")
    )
    if not branches and not off_path:
        return []
    return [f"{branches} other branch(es) ({off_path} message(s)) not on the active path"]
