"""The endpoint's body reader: every read equals json.loads of the whole body, while a
conversation's re-sent history is compared as bytes and never parsed again."""

from __future__ import annotations

import json
from typing import Any

import pytest

from calls import protocol, request_body
from calls.request_body import BodyReader


def sdk_bytes(body: dict[str, Any]) -> bytes:
    """As the openai SDK sends a body: compact, UTF-8."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def spaced_bytes(body: dict[str, Any]) -> bytes:
    """As Python's json.dumps writes it by default: spaces, \\u escapes."""
    return json.dumps(body).encode()


def read(reader: BodyReader, raw: bytes) -> dict[str, Any]:
    return protocol.request_parse(raw, reader=reader)


class Parses:
    """Counts the characters of JSON the reader parses itself (by either of its parsers)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.chars = 0
        scan, raw_decode = request_body._scan, request_body._decoder.raw_decode

        def counted_scan(text: str, at: int) -> tuple[Any, int]:
            value, end = scan(text, at)
            self.chars += end - at
            return value, end

        def counted_raw_decode(text: str, at: int = 0) -> tuple[Any, int]:
            value, end = raw_decode(text, at)
            self.chars += end - at
            return value, end

        monkeypatch.setattr(request_body, "_scan", counted_scan)
        monkeypatch.setattr(request_body._decoder, "raw_decode", counted_raw_decode)


@pytest.mark.parametrize("dump", [sdk_bytes, spaced_bytes])
def test_interleaved_repeated_and_edited_conversations_read_as_json_loads(
    dump: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses = Parses(monkeypatch)
    reader = BodyReader()
    system = {"role": "system", "content": "Réponds pour ACME. " + "Cite la règle ☃. " * 200}
    lines: dict[str, list[dict[str, Any]]] = {"a": [system], "b": [system]}
    plan = ["a", "b", "a", "b", "a", "a=", "b", "a!", "b", "a", "b"]
    previous: dict[str, dict[str, Any]] = {}
    sent_bytes: dict[str, bytes] = {}
    for turn, step in enumerate(plan):
        line = lines[step[0]]
        if step.endswith("!"):  # an early question, same length, one letter changed
            line[1] = {"role": "user", "content": line[1]["content"].replace("q", "Q", 1)}
        elif not step.endswith("="):
            line.append({"role": "user", "content": f'{step} question {turn}: "why?" é ' * 9})
        sent = {"model": "gpt-4o", "stream": True, "messages": line, "max_completion_tokens": 9}
        sent["stream_options"] = {"include_usage": True}
        # "=": the previous request of the line again, byte for byte (a retry).
        raw = sent_bytes[step[0]] if step.endswith("=") else dump(sent)
        sent_bytes[step[0]] = raw
        parses.chars = 0
        body = read(reader, raw)
        assert body == json.loads(raw)
        assert list(body) == list(json.loads(raw))  # the fields in their order too
        before = previous.get(step[0])
        text = raw.decode()
        if before is not None and not step.endswith("!"):
            # The history is the previous request's objects, not parsed again: only the
            # new messages are (the reply and the question; none for a repeated request),
            # and the fields after them.
            known = len(before["messages"])
            assert len(body["messages"]) - known == (0 if step[1:] else 2)
            assert all(
                a is b for a, b in zip(body["messages"], before["messages"][:known], strict=False)
            )
            history = dump({"m": before["messages"]}).decode()
            new = dump({"m": body["messages"][known:]}).decode()
            assert len(new) - 12 <= parses.chars <= len(text) - len(history) + 12
        else:
            assert parses.chars >= len(dump({"m": line}).decode()) - 12  # read whole
        previous[step[0]] = body
        if plan[turn + 1 : turn + 2] != [step + "="]:
            line.append({"role": "assistant", "content": f"answer {turn} ✓"})


@pytest.mark.parametrize(
    "tail",
    [
        b',"messages":[{"role":"user","content":"other"}]}',  # a second key: json.loads takes it
        b',"model":"gpt-4o-mini"}',  # a field again: the later one wins
        b',{"role":"user","content":"new"}]  ,  "n" : 2 }  \n',
        b"]}",
    ],
)
def test_a_body_after_a_known_history_reads_as_json_loads(tail: bytes) -> None:
    reader = BodyReader()
    first = b'{"model":"gpt-4o","messages":[{"role":"system","content":"S"}]}'
    read(reader, first)
    prefix = first[: first.index(b"}]") + 1]
    raw = prefix + (b"]" + tail if tail.startswith(b',"') else tail)
    assert read(reader, raw) == json.loads(raw)


@pytest.mark.parametrize(
    "tail",
    [
        b'],"messages":[{"content":"no role"}]}',  # the second "messages" is checked
        b",]}",
        b"],}",
        b'], "n": }',
        b"]} x",
        b',{"role":"user","content":"x"}',
        b',{"role":1}]}',
        b',{"role":"user","content":"\xff"}]}',  # not UTF-8 where the tail is decoded
    ],
)
def test_a_broken_body_after_a_known_history_is_refused_as_before(tail: bytes) -> None:
    reader = BodyReader()
    first = b'{"model":"gpt-4o","messages":[{"role":"system","content":"S"}]}'
    read(reader, first)
    raw = first[: first.index(b"}]") + 1] + tail
    with pytest.raises(protocol.RequestInvalid) as refused:
        read(reader, raw)
    with pytest.raises(protocol.RequestInvalid) as before:
        protocol.request_parse(raw)
    assert refused.value.message == before.value.message


def test_a_refused_body_is_not_kept_so_its_bad_message_is_checked_again() -> None:
    reader = BodyReader()
    bad = sdk_bytes({"model": "gpt-4o", "messages": [{"role": "user", "content": "a"}, {}]})
    for _ in range(2):
        with pytest.raises(protocol.RequestInvalid, match=r"messages\[1\]"):
            read(reader, bad)
    longer = bad[:-2] + b',{"role":"user","content":"b"}]}'
    with pytest.raises(protocol.RequestInvalid, match=r"messages\[1\]"):
        read(reader, longer)


def test_it_keeps_a_bounded_number_of_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request_body, "KEPT_BYTES", 4000)
    reader = BodyReader()
    for n in range(request_body.KEPT_BODIES + 10):
        read(reader, sdk_bytes({"model": "m", "messages": [{"role": "user", "content": str(n)}]}))
    assert len(reader.kept) == request_body.KEPT_BODIES
    read(reader, sdk_bytes({"model": "m", "messages": [{"role": "user", "content": "x" * 3000}]}))
    assert reader.bytes == sum(len(k.body) for k in reader.kept.values()) <= 4000


def test_its_byte_count_stays_true_when_a_kept_body_is_read_again() -> None:
    """A body object read again after a later one grew from the same history (a retry of
    the very bytes) replaces its own entry: the bytes kept count it once."""
    reader = BodyReader()
    first = sdk_bytes({"model": "m", "messages": [{"role": "user", "content": "a"}]})
    grown = sdk_bytes(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        }
    )
    read(reader, first)
    read(reader, grown)  # renews the entry of the history it grows
    again = sdk_bytes({"model": "m", "messages": [{"role": "user", "content": "a"}]})
    read(reader, again)
    read(reader, grown)  # the same object again, after another entry matched it
    assert reader.bytes == sum(len(k.body) for k in reader.kept.values())
    assert sum(k.body is grown for k in reader.kept.values()) == 1


_IMAGE = b'{"type":"image_url","image_url":{"url":"https://example.com/a.png","detail":"low"}}'
_CALL = (
    b'{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function",'
    b'"function":{"name":"f","arguments":"{\\"a\\":[1]}"}}]}'
)


@pytest.mark.parametrize(
    ("new", "after"),
    [
        # Non-ASCII, escapes, and brackets, braces and quotes inside strings.
        (',{"role":"user","content":"café ☃ 😀 \\"] }, {\\" \\u00e9"}'.encode(), b'],"n":2}'),
        (b',{"role":"user","content":[{"type":"text","text":"look"},' + _IMAGE + b"]}", b"]}"),
        (
            b"," + _CALL + b',{"role":"tool","tool_call_id":"c","content":"ok"}',
            b'],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto"}',
        ),
        (b',{"role":"user","content":"x"}', b" \n ]}"),  # whitespace before the "]"
        (b',{"role":"user","content":"x"}', b'],"stream":true}  \n'),
        (b',{"role":"user","content":"x"}', b'],"model":"gpt-4o-mini"}'),  # a field again
    ],
)
def test_new_messages_read_in_one_scan_are_json_loads_and_the_next_request_reads_on(
    new: bytes, after: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual tail of a body after its known history (new messages, then the fields)
    is read in one scan of the messages and one of the fields: the body equals json.loads'
    and the next request, which repeats it and adds a message, is read on from the end of
    its last message."""
    reader = BodyReader()
    first = '{"model":"gpt-4o","messages":[{"role":"system","content":"Sé"}]}'.encode()
    read(reader, first)
    prefix = first[: first.index(b"}]") + 1]
    raw = prefix + new + after
    body = read(reader, raw)
    assert body == json.loads(raw) and list(body) == list(json.loads(raw))
    then = prefix + new + b',{"role":"user","content":"z"}' + after
    parses = Parses(monkeypatch)
    more = read(reader, then)
    assert more == json.loads(then)
    assert len(more["messages"]) == len(body["messages"]) + 1
    assert all(a is b for a, b in zip(more["messages"], body["messages"], strict=False))
    assert parses.chars <= len(b',{"role":"user","content":"z"}' + after)


def test_a_second_messages_field_after_new_messages_is_json_loads_too() -> None:
    reader = BodyReader()
    first = b'{"model":"gpt-4o","messages":[{"role":"system","content":"S"}]}'
    read(reader, first)
    raw = (
        first[:-2] + b',{"role":"user","content":"x"}],"messages":[{"role":"user","content":"y"}]}'
    )
    assert read(reader, raw) == json.loads(raw)
    assert read(reader, raw[:-2] + b',{"role":"user","content":"z"}]}') == json.loads(
        raw[:-2] + b',{"role":"user","content":"z"}]}'
    )


@pytest.mark.parametrize(
    ("fields", "others"),
    [
        (
            b',"max_completion_tokens":120,"stream_options":{"include_usage":true}}',
            [
                b',"max_completion_tokens":121,"stream_options":{"include_usage":true}}',
                b',"max_completion_tokens":120,"stream_options":{"include_usage":true}} ',
                b',"n":1,"max_completion_tokens":120,"stream_options":{"include_usage":true}}',
                b',"messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}',
            ],
        ),
        (b"}", [b" }", b',"n":1}', b',"messages":[{"role":"user","content":"x"}]}']),
        (
            b'  ,  "n" : 2 , "tools":[{"type":"function","function":{"name":"f"}}] }  \n',
            [
                b'  ,  "n" : 3 , "tools":[{"type":"function","function":{"name":"f"}}] }  \n',
                b'  ,  "n" : 2 , "tools":[{"type":"function","function":{"name":"g"}}] }  \n',
                b',"n":1,  "n" : 2 , "tools":[{"type":"function","function":{"name":"f"}}] }  \n',
            ],
        ),
    ],
)
def test_fields_with_the_text_of_the_kept_requests_are_its_parse_and_others_are_read(
    fields: bytes, others: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request whose text after its messages is the kept request's, byte for byte, has its
    fields (not parsed again: the same objects); any other text is read, even of the same
    length or ending the same."""
    reader = BodyReader()
    prefix = b'{"model":"gpt-4o","messages":[{"role":"system","content":"S"}'
    turn = b',{"role":"user","content":"q"}'
    previous = read(reader, prefix + b"]" + fields)
    step, kept = 0, fields
    for other in [fields, *others]:
        for after in (other, fields):  # read on from another request's fields, and back
            step += 1
            raw = prefix + turn * step + b"]" + after
            parses = Parses(monkeypatch)
            body = read(reader, raw)
            assert body == json.loads(raw) and list(body) == list(json.loads(raw))
            if after == kept:
                assert parses.chars <= len(turn) + 1  # the new message (and "]") only
                assert all(body[k] is previous[k] for k in body if k != "messages")
            kept, previous = after, body


def test_the_endpoint_changes_no_body_it_read() -> None:
    """Bodies share their objects with the reader's kept parses (the messages, the fields
    before them, and the fields after them when their text repeats), so a later read is
    json.loads only while nothing the endpoint does with a body changes it: render, the cache
    simulation and the answer, with tools, a response format and stream options."""
    import copy

    from calls import simulated
    from conversations.engine.cache_policy import PREFIX_128
    from conversations.engine.profiles import default_profile

    simulated.simulate_reset()
    profile = default_profile("gpt-4o")
    tool = {
        "type": "function",
        "function": {
            "name": "order_status",
            "description": "Where an order is",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
        },
    }
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You help. " * 300}]
    for turn in range(6):
        messages.append({"role": "user", "content": f"Question {turn}: where is order {turn}?"})
        sent = {
            "model": "gpt-4o",
            "messages": messages,
            "tools": [tool],
            "response_format": {"type": "json_object"},
            "stream_options": {"include_usage": True},
            "max_completion_tokens": 30,
        }
        raw = json.dumps(sent, separators=(",", ":")).encode()
        body = simulated.request_read(
            "o", raw, lambda data, r: protocol.request_parse(data, reader=r)
        )
        before = copy.deepcopy(body)
        call = simulated.simulate_usage(
            org_key="o",
            body=body,
            now=1_000.0 + turn,
            profile=profile,
            policy=PREFIX_128,
            retention_seconds=600,
            default_reply_tokens=30,
        )
        protocol.Completion.new(model="gpt-4o", tier="default", call=call, now=0.0).body()
        assert body == before == json.loads(raw)
        messages.append({"role": "assistant", "content": call.reply})
    assert call.cached_tokens > 0  # the conversation went the reader's and simulator's way
