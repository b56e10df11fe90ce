"""costlab's own OpenAI-compatible endpoint, driven by the official `openai` SDK: usage as
the engine bills it, per simulated organization, streaming, faults on demand, keys."""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import openai
import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django import Settings

from calls import protocol, selectors, simulated
from calls.models import EndpointKey
from calls.services.connections import endpoint_key_issue, endpoint_key_revoke
from conversations.engine import messages as engine_messages
from conversations.engine.cache import CacheSimulator
from conversations.engine.cache_policy import PREFIX_128
from conversations.engine.profiles import ModelProfile, default_profile
from conversations.engine.render import TranscriptRenderer, count_request
from conversations.engine.sequences import pack
from conversations.engine.vocabulary import get_encoding
from conversations.models import Role
from tests.factories import MembershipFactory, OrganizationFactory

from .conftest import cached, complete, in_process_client, prompt_of, stream


def _billed(
    body: dict[str, Any], *, now: float, profile: ModelProfile, reply_tokens: int = 30
) -> simulated.SimulatedCall:
    """What the endpoint bills organization "o" for `body` on a prefix_128 model."""
    return simulated.simulate_usage(
        org_key="o",
        body=body,
        now=now,
        profile=profile,
        policy=PREFIX_128,
        retention_seconds=600,
        default_reply_tokens=reply_tokens,
    )


pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("in_process")]

HI = [{"role": "user", "content": "Hi."}]


def test_it_reports_0_then_1920_cached_tokens_for_a_2006_token_prompt_sent_twice(
    sdk: openai.OpenAI,
) -> None:
    messages = prompt_of(2006)
    first = complete(sdk, model="gpt-4o", messages=messages)
    second = complete(sdk, model="gpt-4o", messages=messages)
    assert first.usage is not None and first.usage.prompt_tokens == 2006
    assert (cached(first), cached(second)) == (0, 1920)
    # Another key is another organization: its cache is its own, and cold.
    third = complete(in_process_client(key="sk-test-two"), model="gpt-4o", messages=messages)
    assert cached(third) == 0


def test_it_streams_the_same_usage_in_a_final_chunk(sdk: openai.OpenAI) -> None:
    messages = prompt_of(1500)
    plain = complete(sdk, model="gpt-4o-mini", messages=messages)
    chunks = stream(
        sdk, model="gpt-4o-mini", messages=messages, stream_options={"include_usage": True}
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and plain.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert last.usage.prompt_tokens == plain.usage.prompt_tokens == 1500
    assert (cached(plain), cached(last)) == (0, 1408)
    # The streamed pieces add up to the reply, of exactly completion_tokens tokens.
    assert text == plain.choices[0].message.content
    assert len(get_encoding("o200k_base").encode_ordinary(text)) == last.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # Without include_usage, no chunk carries usage.
    assert all(c.usage is None for c in stream(sdk, model="gpt-4o-mini", messages=messages))


def test_it_answers_with_as_many_tokens_as_asked(sdk: openai.OpenAI, settings: Settings) -> None:
    settings.COSTLAB_ENDPOINT_REPLY_TOKENS = 7
    messages = [{"role": "user", "content": "Tell me a long story."}]
    asked = complete(sdk, model="gpt-4.1", messages=messages, max_completion_tokens=57)
    legacy = complete(sdk, model="gpt-4.1", messages=messages, max_tokens=3)
    default = complete(sdk, model="gpt-4.1", messages=messages)
    responses = (asked, legacy, default)
    assert [r.usage.completion_tokens for r in responses if r.usage] == [57, 3, 7]
    assert [r.choices[0].finish_reason for r in responses] == ["length", "length", "stop"]
    content = asked.choices[0].message.content or ""
    assert len(get_encoding("o200k_base").encode_ordinary(content)) == 57
    # Deterministic: the same request gets the same reply.
    again = complete(sdk, model="gpt-4.1", messages=messages, max_completion_tokens=57)
    assert again.choices[0].message.content == content


def test_it_counts_prompts_with_the_engine_renderer(sdk: openai.OpenAI) -> None:
    tools: list[dict[str, Any]] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "description": "The city."}},
                },
            },
        }
    ]
    messages = [
        {"role": "system", "content": "You answer with the weather."},
        {"role": "user", "content": "Weather in Paris?", "name": "ann"},
    ]
    for model in ("gpt-4o", "gpt-4"):
        response = complete(sdk, model=model, messages=messages, tools=tools)
        expected = count_request(messages, profile=default_profile(model), tools=tools)
        assert response.usage is not None and response.usage.prompt_tokens == expected


def test_it_never_caches_for_a_model_without_caching(sdk: openai.OpenAI) -> None:
    messages = prompt_of(2006, model="gpt-4")
    for _ in range(2):
        response = complete(sdk, model="gpt-4", messages=messages)
        assert response.usage is not None and response.usage.prompt_tokens == 2006
        assert cached(response) == 0


def test_it_keeps_caches_apart_by_prompt_cache_key(sdk: openai.OpenAI) -> None:
    messages = prompt_of(2006)
    for key, expected in (("a", 0), ("a", 1920), ("b", 0), (None, 0), ("b", 1920)):
        extra = {"prompt_cache_key": key} if key else {}
        assert cached(complete(sdk, model="gpt-4o", messages=messages, **extra)) == expected


def test_it_forgets_a_prefix_after_the_retention(sdk: openai.OpenAI, settings: Settings) -> None:
    settings.COSTLAB_ENDPOINT_RETENTION_SECONDS = 1
    messages = prompt_of(1300, marker="retention")
    complete(sdk, model="gpt-4o", messages=messages)
    assert cached(complete(sdk, model="gpt-4o", messages=messages)) == 1280
    time.sleep(1.3)
    assert cached(complete(sdk, model="gpt-4o", messages=messages)) == 0


def test_it_echoes_the_service_tier(sdk: openai.OpenAI) -> None:
    asked: list[dict[str, str]] = [
        {},
        {"service_tier": "auto"},
        {"service_tier": "flex"},
        {"service_tier": "priority"},
    ]
    tiers = [complete(sdk, model="gpt-4o", messages=HI, **extra).service_tier for extra in asked]
    assert tiers == ["default", "default", "flex", "priority"]


def test_it_answers_faster_when_more_of_the_prompt_is_cached(
    sdk: openai.OpenAI, settings: Settings
) -> None:
    settings.COSTLAB_ENDPOINT_LATENCY_MS = 300
    settings.COSTLAB_ENDPOINT_HIT_SPEEDUP = 0.8
    messages = prompt_of(4000)
    timings = []
    for _ in range(2):
        start = time.monotonic()
        complete(sdk, model="gpt-4o", messages=messages)
        timings.append(time.monotonic() - start)
    cold, hit = timings
    assert cold >= 0.3
    # 3,968 of 4,000 tokens cached: 0.3 s x (1 - 0.8 x 0.992) = 0.062 s, plus overhead.
    assert hit < cold * 0.5


def test_it_lists_the_price_books_models(sdk: openai.OpenAI) -> None:
    names = [m.id for m in sdk.models.list()]
    assert {"gpt-4o", "gpt-4o-mini", "gpt-4"} <= set(names)
    assert not any("*" in name for name in names)


def test_it_refuses_an_unknown_model_and_a_bad_request_in_the_apis_shape(
    sdk: openai.OpenAI,
) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        complete(sdk, model="gpt-nonexistent", messages=HI)
    assert missing.value.code == "model_not_found"
    assert "gpt-nonexistent" in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        complete(sdk, model="gpt-4o", messages=[])
    assert bad.value.param == "messages"
    assert isinstance(bad.value.body, dict) and bad.value.body["type"] == "invalid_request_error"
    # Fields the simulation reads, of a type the API refuses: a 400 naming the field (the
    # compiled engine takes them as typed, so unchecked they were a 500).
    for field, value in (
        ("tools", {"type": "function"}),
        ("response_format", "json_object"),
        ("prompt_cache_key", 42),
    ):
        with pytest.raises(openai.BadRequestError) as bad:
            complete(sdk, model="gpt-4o", messages=HI, extra_body={field: value})
        assert bad.value.param == field and "Invalid type" in bad.value.message
        assert bad.value.code == "invalid_type"


def test_it_answers_a_429_with_retry_after_as_often_as_asked(sdk: openai.OpenAI) -> None:
    headers = {
        "X-Costlab-Fault": "429",
        "X-Costlab-Retry-After": "2.5",
        "X-Costlab-Fault-Times": "2",
    }
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as limited:
            complete(sdk, model="gpt-4o", messages=HI, extra_headers=headers)
        assert limited.value.response.headers["Retry-After"] == "2.5"
        assert limited.value.code == "rate_limit_exceeded"
    assert complete(sdk, model="gpt-4o", messages=HI, extra_headers=headers).usage is not None


def test_it_fails_with_a_500_and_times_out_on_demand(
    sdk: openai.OpenAI, settings: Settings
) -> None:
    with pytest.raises(openai.InternalServerError):
        complete(sdk, model="gpt-4o", messages=HI, extra_headers={"X-Costlab-Fault": "500"})
    settings.COSTLAB_ENDPOINT_TIMEOUT_FAULT_SECONDS = 0.6
    start = time.monotonic()
    late = complete(sdk, model="gpt-4o", messages=HI, extra_headers={"X-Costlab-Fault": "timeout"})
    assert time.monotonic() - start >= 0.6 and late.usage is not None
    with pytest.raises(openai.BadRequestError):
        complete(sdk, model="gpt-4o", messages=HI, extra_headers={"X-Costlab-Fault": "teapot"})


def test_it_streams_slowly_on_demand(sdk: openai.OpenAI, settings: Settings) -> None:
    settings.COSTLAB_ENDPOINT_SLOW_CHUNK_MS = 40
    start = time.monotonic()
    chunks = stream(
        sdk,
        model="gpt-4o",
        messages=HI,
        max_completion_tokens=16,
        extra_headers={"X-Costlab-Fault": "slow"},
    )
    # The role, 4 pieces of 4 words, the finish: 5 pauses of 40 ms between 6 chunks.
    assert len(chunks) == 6
    assert time.monotonic() - start >= 0.2


def test_it_takes_any_key_in_development_mode_and_only_issued_ones_otherwise(
    settings: Settings,
) -> None:
    assert complete(in_process_client(key="anything"), model="gpt-4o", messages=HI).usage
    settings.COSTLAB_DEV = False
    with pytest.raises(openai.AuthenticationError) as refused:
        complete(in_process_client(key="anything"), model="gpt-4o", messages=HI)
    assert "anything" not in refused.value.message
    key, plain = endpoint_key_issue(organization=OrganizationFactory.create(), name="ci")
    assert plain not in str(list(EndpointKey.objects.values()))  # only its hash is stored
    client = in_process_client(key=plain)
    assert complete(client, model="gpt-4o", messages=HI).usage is not None
    endpoint_key_revoke(key=key)
    with pytest.raises(openai.AuthenticationError):
        complete(client, model="gpt-4o", messages=HI)


def test_a_key_revoked_by_another_process_is_refused_once_its_check_expires(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.COSTLAB_DEV = False
    organization = OrganizationFactory.create()
    key, plain = endpoint_key_issue(organization=organization, name="ci")
    accepted = selectors.endpoint_caller(key=plain)
    assert accepted is not None and accepted.organization_id == organization.pk
    # Revoked without this process hearing of it (another web process's page did it).
    EndpointKey.objects.filter(pk=key.pk).update(revoked=timezone.now())
    assert selectors.endpoint_caller(key=plain) == accepted  # remembered for a few seconds
    later = time.monotonic() + selectors.KEY_CACHE_SECONDS + 0.1
    monkeypatch.setattr(time, "monotonic", lambda: later)  # the module selectors reads
    assert selectors.endpoint_caller(key=plain) is None
    assert selectors.endpoint_caller(key="sk-not-issued") is None  # refused, never remembered


def test_it_issues_a_working_key_from_the_command(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    organization = OrganizationFactory.create()
    call_command("endpoint_key", "--org", organization.slug, "--name", "ci")
    plain = capsys.readouterr().out.strip()
    assert plain.startswith("clk-")
    settings.COSTLAB_DEV = False
    assert complete(in_process_client(key=plain), model="gpt-4o", messages=HI).usage is not None


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The contents of the messages the engine encodes from now on, in order."""
    seen: list[str] = []
    real = engine_messages.encode_message

    def spy(message: dict[str, Any], profile: Any) -> Any:
        seen.append(str(message.get("content")))
        return real(message, profile)

    monkeypatch.setattr(engine_messages, "encode_message", spy)
    return seen


@pytest.mark.pure_python  # spies on calls a compiled module makes directly
def test_it_does_not_re_tokenize_a_re_sent_history(encoded: list[str]) -> None:
    """A growing conversation: each call encodes only the messages it adds."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "S"}]
    profile = default_profile("gpt-4o")
    for turn in range(4):
        messages.append({"role": "user", "content": f"question {turn}"})
        body = {"model": "gpt-4o", "messages": [dict(m) for m in messages]}
        call = _billed(body, now=1000.0 + turn, profile=profile, reply_tokens=5)
        messages.append({"role": "assistant", "content": call.reply})
    # Each message encoded once, though the last request sent eight; the endpoint's own
    # replies never (their tokens are known), and the count is what encoding gives.
    assert encoded == ["S", "question 0", "question 1", "question 2", "question 3"]
    assert call.prompt_tokens == count_request(messages[:-1], profile=profile)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4", "o3"])
def test_a_reply_s_known_tokens_are_what_encoding_it_gives(model: str) -> None:
    """The tokens a reply is cut with from the tape are encode_ordinary's of its text, and
    the message built from them is encode_message's, byte for byte: for replies of many
    lengths starting anywhere on the tape (its ends included), for two encodings and a
    reasoning model's framing. A profile of under 2 tokens a message gets none."""
    profile = default_profile(model)
    enc = get_encoding(profile.encoding)
    seeds = [0, 1, 7, simulated._TAPE_WORDS - 1, *range(101, 30_000, 997)]
    lengths = [1, 2, 3, 17, 120, 500, simulated.MAX_REPLY_TOKENS]
    for seed in seeds:
        for length in lengths:
            text, start, end = simulated._reply(profile.encoding, length, seed=seed)
            packed = simulated.tape_tokens(profile.encoding, start, end)
            assert packed == pack(enc.encode_ordinary(text))
            assert len(packed) // 4 == length
            message = {"role": "assistant", "content": text}
            known = engine_messages.encode_plain_known("assistant", packed, profile)
            assert known is not None
            assert known == engine_messages.encode_message(message, profile)
    assert simulated._reply(profile.encoding, 0, seed=3) == ("", 0, 0)
    terse = dataclasses.replace(profile, tokens_per_message=1)
    assert engine_messages.encode_plain_known("assistant", packed, terse) is None


@pytest.mark.pure_python  # spies on calls a compiled module makes directly
def test_a_reply_sent_back_changed_or_to_another_model_is_encoded(encoded: list[str]) -> None:
    """Only a reply sent back unchanged, as an assistant message, to the model that wrote
    it keeps its known tokens: one changed letter, a trailing space, another role or another
    encoding's model, and it is encoded like any message; every call bills what a fresh
    count of its messages gives."""
    gpt4o, gpt4 = default_profile("gpt-4o"), default_profile("gpt-4")
    changes: dict[str, Callable[[str], str]] = {
        "letter": lambda text: text[:-1] + ("x" if text[-1] != "x" else "y"),
        "space": lambda text: text + " ",
        "role": lambda text: text,
        "model": lambda text: text,
        "same": lambda text: text,
    }
    for turn, (change, edit) in enumerate(changes.items()):
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": f"S{turn}"},
            {"role": "user", "content": f"question {turn}"},
        ]
        first = _billed({"model": "gpt-4o", "messages": messages}, now=1000.0, profile=gpt4o)
        sent_back = edit(first.reply)
        role = "user" if change == "role" else "assistant"
        messages += [{"role": role, "content": sent_back}, {"role": "user", "content": "more"}]
        profile = gpt4 if change == "model" else gpt4o
        encoded.clear()
        body = {"model": "gpt-4" if change == "model" else "gpt-4o", "messages": messages}
        second = _billed(json.loads(json.dumps(body)), now=1001.0, profile=profile)
        assert second.prompt_tokens == count_request(messages, profile=profile)
        if change == "same":
            assert sent_back not in encoded
        else:
            assert sent_back in encoded


@pytest.mark.pure_python  # spies on calls a compiled module makes directly
def test_the_next_turn_read_from_bytes_compares_no_history(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read from the SDK's bytes, a request that grows the previous one is known to repeat
    it (the body reader gives it the previous request's very messages): neither the line's
    messages nor the renderer's slots are compared again, and it bills as a fresh render."""
    from conversations.engine import render as engine_render

    compared: list[int] = []
    real_prefix = engine_render._common_prefix

    def prefix_spy(a: list[int], b: list[int]) -> int:
        if a:
            compared.append(len(a))
        return real_prefix(a, b)

    real_extends = simulated._Thread.extends

    def extends_spy(thread: Any, raw: Any, base: Any) -> bool:
        if base is None or base is not thread.last_raw:
            compared.append(len(raw))
        return real_extends(thread, raw, base)

    monkeypatch.setattr(engine_render, "_common_prefix", prefix_spy)
    monkeypatch.setattr(simulated._Thread, "extends", extends_spy)
    profile = default_profile("gpt-4o")
    check = protocol._check
    line: list[dict[str, Any]] = [{"role": "system", "content": "Cite. " * 400}]
    for turn in range(6):
        line.append({"role": "user", "content": f"question {turn}: " + "why? " * 30})
        raw = json.dumps({"model": "gpt-4o", "messages": line}).encode()
        body = simulated.request_read("o", raw, lambda raw, reader: reader.read(raw, check))
        call = _billed(body, now=1000.0 + turn, profile=profile)
        assert call.prompt_tokens == count_request(json.loads(raw)["messages"], profile=profile)
        line.append({"role": "assistant", "content": call.reply})
    # Only the first request's messages, with a new line's none.
    assert compared == [2]


@pytest.mark.parametrize("from_bytes", [False, True])
def test_interleaved_and_edited_conversations_bill_as_a_fresh_render_would(
    from_bytes: bool,
) -> None:
    """Two conversations on one key take turns, one re-sends a request unchanged, one edits
    an early message without changing its length: each call's usage equals what a fresh
    render of the whole request, through a simulator of its own, gives. `from_bytes`: the
    body read as the endpoint reads it, the history compared as the bytes the SDK sends."""
    profile = default_profile("gpt-4o")
    oracle = CacheSimulator(600, rpm_limit=PREFIX_128.overflow_rpm, minimum=1024)
    system = {"role": "system", "content": "You answer for ACME. " + "Cite the policy. " * 300}
    lines: dict[str, list[dict[str, Any]]] = {"a": [system], "b": [system]}
    plan = ["a", "b", "a", "b", "a", "a=", "b", "a!", "b", "a"]
    check = protocol._check
    for turn, step in enumerate(plan):
        line = lines[step[0]]
        if step.endswith("!"):  # an early question, same length, one letter changed
            line[1] = {"role": "user", "content": line[1]["content"].replace("q", "Q", 1)}
        elif not step.endswith("="):  # "=": the same request again
            line.append({"role": "user", "content": f"{step} question {turn}: " + "why? " * 40})
        # As JSON gives it: new dicts, new strings.
        body = {"model": "gpt-4o", "messages": json.loads(json.dumps(line))}
        if from_bytes:
            raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
            body = simulated.request_read("o", raw, lambda raw, reader: reader.read(raw, check))
        now = 1000.0 + turn
        call = _billed(body, now=now, profile=profile)
        fresh = TranscriptRenderer(json.loads(json.dumps(line)), profile).render(
            list(range(len(line)))
        )
        expected = oracle.process(fresh, org="o\x00gpt-4o", at=now)
        assert (call.prompt_tokens, call.cached_tokens) == (fresh.length, expected.cached_tokens)
        if step == "a!":
            assert 0 < call.cached_tokens < fresh.length - 200  # the edit broke the prefix
        if not step.endswith("="):
            line.append({"role": "assistant", "content": call.reply})


def test_it_reports_a_write_then_exact_reads_on_a_breakpoint_model(sdk: openai.OpenAI) -> None:
    messages = prompt_of(2006, model="gpt-5.6-sol")
    first = complete(sdk, model="gpt-5.6-sol", messages=messages, prompt_cache_key="k")
    second = complete(sdk, model="gpt-5.6-sol", messages=messages, prompt_cache_key="k")

    def written(response: Any) -> int:
        return int(response.usage.prompt_tokens_details.cache_write_tokens)

    assert first.usage is not None and first.usage.prompt_tokens == 2006
    assert cached(first) == 0 and written(first) > 1024
    # The exact prefix written is read back: no 128-token rounding, nothing written again.
    assert cached(second) == written(first) and written(second) == 0
    assert cached(second) % 128 != 0


def test_it_issues_a_key_on_its_page_shows_it_once_and_revokes_it(
    client: Client, settings: Settings
) -> None:
    membership = MembershipFactory.create(role=Role.ADMIN)
    client.force_login(membership.user)
    url = reverse("endpoint_keys", args=[membership.organization.slug])
    page = client.post(url, {"name": "ci"})
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    match = re.search(r"<code data-issued-key>(clk-[\w-]+)</code>", page.content.decode())
    assert match is not None
    plain = match.group(1)
    assert plain not in client.get(url).content.decode()  # shown once
    settings.COSTLAB_DEV = False
    client_sdk = in_process_client(key=plain)
    assert complete(client_sdk, model="gpt-4o", messages=HI).usage is not None
    key = EndpointKey.objects.get(organization=membership.organization)
    revoke = reverse("endpoint_key_revoke", args=[membership.organization.slug, key.code])
    assert client.post(revoke).status_code == 302
    with pytest.raises(openai.AuthenticationError):
        complete(client_sdk, model="gpt-4o", messages=HI)
    assert b"No key issued" in client.get(url).content


def test_its_keys_page_issues_no_second_key_when_the_same_form_is_sent_again(
    client: Client,
) -> None:
    membership = MembershipFactory.create(role=Role.ADMIN)
    client.force_login(membership.user)
    url = reverse("endpoint_keys", args=[membership.organization.slug])
    once = re.search(r'name="once" value="(\w+)"', client.get(url).content.decode())
    assert once is not None
    form = {"name": "ci", "once": once.group(1)}
    first = client.post(url, form)
    assert b"data-issued-key" in first.content
    # A reload of the page that showed the key posts the same form again.
    again = client.post(url, form)
    assert again.status_code == 200 and b"data-issued-key" not in again.content
    assert b"This form was sent already" in again.content
    assert EndpointKey.objects.filter(organization=membership.organization).count() == 1
    # A fresh form (a new token) issues another; a key needs a name.
    fresh = re.search(r'name="once" value="(\w+)"', again.content.decode())
    assert fresh is not None and fresh.group(1) != form["once"]
    assert b"data-issued-key" in client.post(url, {"name": "ci 2", "once": fresh.group(1)}).content
    nameless = client.post(url, {"name": "", "once": uuid.uuid4().hex})
    assert (
        b"data-issued-key" not in nameless.content and b"This field is required" in nameless.content
    )
    assert EndpointKey.objects.filter(organization=membership.organization).count() == 2


def test_it_throttles_an_address_that_keeps_sending_bad_keys(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from costlab import throttle

    settings.COSTLAB_DEV = False
    settings.COSTLAB_LOGIN_FAILURES_PER_ADDRESS = 5
    clock = [1_000_000.0]
    monkeypatch.setattr(throttle, "now", lambda: clock[0])
    # Counters live in the real cache (Redis in CI), which outlives a run and is shared by
    # runs on the same machine: each run takes addresses no earlier run has counted.
    run = uuid.uuid4().hex
    address, other = f"2001:db8::{run[:4]}:{run[4:8]}", f"2001:db8::{run[8:12]}:{run[12:16]}"
    key, plain = endpoint_key_issue(organization=OrganizationFactory.create(), name="ci")
    body = '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
    http = Client(REMOTE_ADDR=address)

    def post(bearer: str) -> Any:
        return http.post(
            "/v1/chat/completions",
            body,
            content_type="application/json",
            headers={"Authorization": f"Bearer {bearer}"},
        )

    assert [post(f"guess-{n}").status_code for n in range(5)] == [401] * 5
    # The sixth attempt is refused before any key is checked, the issued one included.
    refused = post(plain)
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert (
        Client(REMOTE_ADDR=other)
        .post(
            "/v1/chat/completions",
            body,
            content_type="application/json",
            headers={"Authorization": f"Bearer {plain}"},
        )
        .status_code
        == 200
    )  # another address is not affected
    clock[0] += 2 * settings.COSTLAB_LOGIN_WINDOW_SECONDS + 1
    assert post(plain).status_code == 200
    assert key.pk is not None


_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "The weather of a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def _tool_call(call_id: str, city: str) -> dict[str, Any]:
    arguments = json.dumps({"city": city})
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "weather", "arguments": arguments},
    }


def _adds(shape: str, turn: int) -> tuple[list[dict[str, Any]], bool]:
    """What a line in `shape` adds before its call `turn`, and whether the reply then joins
    it (not while a parallel call still has results to come)."""
    text = f"question {turn}: " + "why? " * 40
    if shape == "non-ascii":
        return [{"role": "user", "content": text.replace("why", "pourquoi ☃ é 😀")}], True
    if shape == "images":
        image = {"url": f"https://example.com/{turn}.png", "detail": "low"}
        parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": image}]
        return [{"role": "user", "content": parts}], True
    if shape == "tools":  # one call and its result, then the reply
        call = {
            "role": "assistant",
            "content": None,
            "tool_calls": [_tool_call(f"c{turn}", "Oslo")],
        }
        result = {"role": "tool", "tool_call_id": f"c{turn}", "content": f"{turn} degrees"}
        return [{"role": "user", "content": text}, call, result], True
    # "parallel": three calls in one message, their results sent one call at a time
    if turn % 3 == 0:
        calls = [_tool_call(f"p{turn}{n}", city) for n, city in enumerate(("Oslo", "Rome", "Lima"))]
        asked = {"role": "assistant", "content": None, "tool_calls": calls}
        result = {"role": "tool", "tool_call_id": f"p{turn}0", "content": '{"t": 12}'}
        return [{"role": "user", "content": text}, asked, result], False
    result = {"role": "tool", "tool_call_id": f"p{turn}", "content": f"{turn} degrees é"}
    return [result], turn % 3 == 2


def _edited(message: dict[str, Any]) -> dict[str, Any]:
    """An early message with one letter changed (its length kept)."""
    content = message["content"]
    if isinstance(content, list):
        text = content[0]["text"].replace("q", "Q", 1)
        return {**message, "content": [{**content[0], "text": text}, *content[1:]]}
    return {**message, "content": content.replace("q", "Q", 1)}


@pytest.mark.parametrize("shape", ["non-ascii", "images", "tools", "parallel"])
def test_conversations_of_every_shape_bill_as_a_fresh_render_would(shape: str) -> None:
    """As test_interleaved_and_edited_conversations_bill_as_a_fresh_render_would, read from
    the SDK's bytes, for conversations with non-ASCII text, images, tool calls, and parallel
    tool calls whose results come one call at a time (the result that was last no longer
    is): each call's usage is a fresh render's of the whole request, the same simulator."""
    profile = default_profile("gpt-4o")
    oracle = CacheSimulator(600, rpm_limit=PREFIX_128.overflow_rpm, minimum=1024)
    system = {"role": "system", "content": "You answer for ACME. " + "Cite the policy. " * 300}
    lines: dict[str, list[dict[str, Any]]] = {"a": [system], "b": [system]}
    plan = ["a", "b", "a", "a", "b", "a=", "a", "b", "a!", "a", "b", "a", "a", "b"]
    tools = _TOOLS if shape in ("tools", "parallel") else None
    check = protocol._check
    for turn, step in enumerate(plan):
        line = lines[step[0]]
        reply = True
        if step.endswith("!"):
            line[1] = _edited(line[1])
        elif not step.endswith("="):
            added, reply = _adds(shape, turn)
            line.extend(added)
        sent: dict[str, Any] = {"model": "gpt-4o", "messages": line}
        if tools:
            sent["tools"] = tools
        raw = json.dumps(sent, separators=(",", ":"), ensure_ascii=False).encode()
        body = simulated.request_read("o", raw, lambda raw, reader: reader.read(raw, check))
        now = 1000.0 + turn
        call = _billed(body, now=now, profile=profile)
        copy = json.loads(raw)["messages"]
        fresh = TranscriptRenderer(copy, profile).render(list(range(len(copy))), tools=tools)
        expected = oracle.process(fresh, org="o\x00gpt-4o", at=now)
        assert fresh.length == count_request(copy, profile=profile, tools=tools)
        assert (call.prompt_tokens, call.cached_tokens) == (fresh.length, expected.cached_tokens)
        # And the very tokens the endpoint hashed (a count can agree by chance): the same
        # request again renders from its thread's slots, none of them new.
        organization = simulated._STATE.organizations["o"]
        again = organization.render(body["messages"], profile, PREFIX_128, body)
        assert again.tokens(0, again.length) == fresh.tokens(0, fresh.length)
        if step == "a!":
            assert 0 < call.cached_tokens < fresh.length - 200  # the edit broke the prefix
        if reply and not step.endswith("="):
            line.append({"role": "assistant", "content": call.reply})


def test_a_sent_back_text_of_a_written_reply_s_hash_is_checked_against_the_tape() -> None:
    """Replies written are found by their text's hash, then compared with the tape: a text
    that only shares the hash (a collision, made here by hand) is not given the tokens."""
    profile = default_profile("gpt-4o")
    text, start, end = simulated._reply(profile.encoding, 5, seed=0)
    organization = simulated._Organization()
    items = organization.encodings.items(profile)
    impostor = "an impostor"
    organization.written[hash(impostor)] = (items, profile, start, end)
    organization.intern({"role": "assistant", "content": impostor})
    assert items == {} and organization.written == {}
    organization.written[hash(text)] = (items, profile, start, end)
    reply = organization.intern({"role": "assistant", "content": text})
    assert items[id(reply)] == (reply, engine_messages.encode_message(reply, profile))


def test_a_lone_surrogate_in_the_last_message_is_answered() -> None:
    """Half an emoji ("\\ud83d" in JSON) is legal in a request: the reply's seed reads it."""
    raw = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi \\ud83d"}]}'
    body = protocol.request_parse(raw)
    call = _billed(body, now=1000.0, profile=default_profile("gpt-4o"), reply_tokens=5)
    assert call.completion_tokens == 5 and call.reply
    again = _billed(body, now=1001.0, profile=default_profile("gpt-4o"), reply_tokens=5)
    assert again.reply == call.reply  # the same seed: a deterministic reply
