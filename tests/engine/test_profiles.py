"""Model profiles: the cookbook's per-model facts, every one of them overridable."""

from __future__ import annotations

from conversations.engine.profiles import ModelProfile, default_profile
from conversations.engine.render import count_request


def test_it_picks_profiles_by_model_family() -> None:
    assert default_profile("gpt-4o-2024-08-06").encoding == "o200k_base"
    assert default_profile("gpt-4.1-nano").context_window == 1_047_576
    assert default_profile("o3-mini").encoding == "o200k_base"
    assert default_profile("gpt-5-mini").max_output_tokens == 128_000
    gpt4 = default_profile("gpt-4-0613")
    assert (gpt4.encoding, gpt4.tools_overhead, gpt4.context_window) == ("cl100k_base", 9, 8_192)
    assert default_profile("gpt-4o").tools_system_saving == 4
    legacy = default_profile("gpt-3.5-turbo-0301")
    assert (legacy.tokens_per_message, legacy.tokens_per_name) == (4, -1)
    assert default_profile("openai/gpt-3.5-turbo").encoding == "cl100k_base"
    assert default_profile("gpt-35-turbo").encoding == "cl100k_base"  # Azure's deployment name
    reasoning = default_profile("gpt-5-nano-2025-08-07")
    assert (reasoning.harmony, reasoning.image_patch_multiplier) == (True, 1.5)
    assert not default_profile("o1-mini").harmony
    assert default_profile("some-local-model") == ModelProfile()
    assert default_profile(None).encoding == "o200k_base"


def test_it_keeps_overheads_configurable() -> None:
    # Seed 001: gpt-4.1-nano reported 18 prompt tokens where the cookbook rule gives 26.
    messages = [
        {"role": "system", "content": "Eres un asistente útil."},
        {"role": "user", "content": "¿Cuál es la capital de Francia?"},
    ]
    cookbook = count_request(messages, profile=default_profile("gpt-4.1-nano"))
    assert cookbook == 26
    lean = ModelProfile(tokens_per_message=0, reply_priming=0)
    assert count_request(messages, profile=lean) == cookbook - 2 * 3 - 3
