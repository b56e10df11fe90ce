"""Output of an Analysis for the `analyze` management command: JSON and a table for people.

Owns: an Analysis shown to people: JSON for tools, a table for a terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from .analysis import Analysis, CallAnalysis, ConversationAnalysis, Totals
from .cache import MissReason
from .calibration import ModelCalibration, Pair, calibrate
from .levers import LeverResult
from .types import located_warnings


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def totals_to_json(totals: Totals) -> dict[str, Any]:
    m = totals.metrics
    return {
        "calls": totals.calls,
        "pending_calls": totals.pending_calls,
        "reported_calls": totals.reported_calls,
        "prompt_tokens": totals.prompt_tokens,
        "cached_tokens": totals.cached_tokens,
        "completion_tokens": totals.completion_tokens,
        "estimated_prompt_tokens": totals.estimated_prompt_tokens,
        "estimated_completion_tokens": totals.estimated_completion_tokens,
        "simulated_cached_tokens": totals.simulated_cached_tokens,
        "peak_prompt_tokens": totals.peak_prompt_tokens,
        "cost": _money(totals.cost),
        "cost_no_cache": _money(m.cost_no_cache),
        "priced_calls": totals.priced_calls,
        "unpriced_calls": totals.unpriced_calls,
        "unpriced_models": list(totals.unpriced_models),
        "eligible_calls": m.eligible_calls,
        "hit_calls": m.hit_calls,
        "request_hit_rate": _rate(m.request_hit_rate),
        "token_hit_rate": _rate(m.token_hit_rate),
        "cached_tokens_per_request": _rate(m.cached_tokens_per_request),
        "cost_reduction": _rate(m.cost_reduction),
        "latency_reduction": _rate(m.latency_reduction),
        "over_context_calls": totals.over_context_calls,
        "unknown_images": totals.unknown_images,
    }


def _turn(call: CallAnalysis) -> dict[str, Any]:
    cost = call.cost.total if call.cost is not None else None
    reported = call.reported
    return {
        "index": call.index,
        "prompt_tokens": call.prompt_tokens,
        "cached_tokens": call.cached_tokens,
        "completion_tokens": call.completion_tokens,
        # Both sides of each figure, so a reader can see how far the estimate is off.
        "estimated_prompt_tokens": call.estimated_prompt_tokens,
        "reported_prompt_tokens": reported.prompt_tokens if reported else None,
        "simulated_cached_tokens": call.simulated_cached_tokens,
        "reported_cached_tokens": reported.cached_tokens if reported else None,
        "cost": _money(cost),
        "cumulative_cost": _money(call.cumulative_cost),
        "cache_source": call.cache_source,
        "miss_reason": call.miss_reason.as_dict() if call.miss_reason else None,
    }


def _conversation(number: int, conversation: ConversationAnalysis) -> dict[str, Any]:
    transcript = conversation.transcript
    totals = totals_to_json(conversation.totals)
    totals["timestamps_missing"] = conversation.timestamps_missing
    return {
        "id": transcript.external_id if transcript.external_id is not None else str(number),
        "title": transcript.title,
        "model": conversation.model,
        "turns": [_turn(call) for call in conversation.calls],
        "totals": totals,
        "warnings": located_warnings(transcript),
    }


def analysis_warnings(analysis: Analysis, file_warnings: Sequence[str] = ()) -> list[str]:
    """Every warning, as an import of the same files records them: the files' own first,
    then each conversation's."""
    out = list(file_warnings)
    for conversation in analysis.conversations:
        out += located_warnings(conversation.transcript)
    return out


def analysis_to_json(analysis: Analysis, file_warnings: Sequence[str] = ()) -> dict[str, Any]:
    totals = totals_to_json(analysis.totals)
    totals["conversations"] = len(analysis.conversations)
    totals["timestamps_missing"] = analysis.timestamps_missing
    totals["retention_seconds"] = analysis.retention_seconds
    totals["calibration"] = calibration_to_json(analysis_calibration(analysis))
    return {
        "conversations": [_conversation(n, c) for n, c in enumerate(analysis.conversations)],
        "totals": totals,
        "warnings": analysis_warnings(analysis, file_warnings),
    }


def _usd(value: Decimal | None) -> str:
    return "unpriced" if value is None else f"${value:,.6f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _why(call: CallAnalysis) -> str:
    reason: MissReason | None = call.miss_reason
    if call.cache_source == "reported":
        note = f"reported (simulated {call.simulated_cached_tokens:,})"
        return f"{note}; {reason.describe()}" if reason else note
    prefix = "pending request; " if call.pending else ""
    if reason is None:
        return prefix + ("hit" if call.cached_tokens else "")
    return prefix + reason.describe()


_HEADERS = ("turn", "prompt", "cached", "output", "cost", "cumulative", "why")


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADERS))]
    lines = []
    for row in rows:
        # Numbers right-aligned, the last (words) column left-aligned.
        cells = [cell.rjust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines


def _totals_lines(totals: Totals, indent: str = "  ") -> list[str]:
    m = totals.metrics
    lines = [
        f"{indent}calls {totals.calls:,} ({totals.pending_calls} pending, "
        f"{totals.reported_calls} with reported usage); prompt {totals.prompt_tokens:,} "
        f"(cached {totals.cached_tokens:,}), output {totals.completion_tokens:,} tokens",
        f"{indent}cost {_usd(totals.cost)}, without caching {_usd(m.cost_no_cache)} "
        f"(reduction {_percent(m.cost_reduction)})",
        f"{indent}hit rate {_percent(m.request_hit_rate)} of {m.eligible_calls} eligible calls, "
        f"{_percent(m.token_hit_rate)} of prompt tokens; latency reduction "
        f"{_percent(m.latency_reduction)}",
    ]
    if totals.unpriced_calls:
        lines.append(
            f"{indent}{totals.unpriced_calls} unpriced call(s): {', '.join(totals.unpriced_models)}"
        )
    if totals.over_context_calls:
        lines.append(f"{indent}{totals.over_context_calls} call(s) over the context window")
    if totals.unknown_images:
        lines.append(
            f"{indent}{totals.unknown_images} part(s) of unknown size (images, files, audio) "
            "counted as 0"
        )
    return lines


def render_table(analysis: Analysis, file_warnings: Sequence[str] = ()) -> str:
    """A plain-text report: one aligned table per conversation and its warnings, then the
    files' own warnings and the totals."""
    out: list[str] = []
    for number, conversation in enumerate(analysis.conversations):
        transcript = conversation.transcript
        name = transcript.external_id or str(number)
        title = f' "{transcript.title}"' if transcript.title else ""
        out.append(f"Conversation {name}{title} ({conversation.model or 'unknown model'})")
        rows: list[tuple[str, ...]] = [_HEADERS]
        for call in conversation.calls:
            cost = call.cost.total if call.cost is not None else None
            rows.append(
                (
                    str(call.index),
                    f"{call.prompt_tokens:,}",
                    f"{call.cached_tokens:,}",
                    f"{call.completion_tokens:,}",
                    _usd(cost),
                    _usd(call.cumulative_cost),
                    _why(call),
                )
            )
        out += ["  " + line for line in _table(rows)]
        if conversation.timestamps_missing:
            out.append("  no timestamps: simulated as one continuous session")
        out += _totals_lines(conversation.totals)
        out += [f"  warning: {warning}" for warning in located_warnings(transcript)]
        out.append("")
    out += [f"warning: {warning}" for warning in file_warnings]
    retention = analysis.retention_seconds
    out.append(f"All conversations ({len(analysis.conversations)}), retention {retention}s")
    out += _totals_lines(analysis.totals)
    out += render_calibration(analysis_calibration(analysis))
    return "\n".join(out) + "\n"


def levers_to_json(results: list[LeverResult]) -> list[dict[str, Any]]:
    return [
        {
            "lever": r.lever.name,
            "calls": r.calls,
            "prompt_tokens": r.prompt_tokens,
            "cached_tokens": r.cached_tokens,
            "cache_write_tokens": r.write_tokens,
            "cost": _money(r.cost),
            "cost_no_cache": _money(r.cost_no_cache),
            "cached_share": _rate(r.cached_share),
            "request_hit_rate": _rate(r.request_hit_rate),
        }
        for r in results
    ]


def render_levers(results: list[LeverResult]) -> str:
    """The cache levers side by side, with each one's cost against the recorded way."""
    base = results[0].cost if results else None
    rows = [("lever", "cost", "vs recorded", "cached", "written", "hit rate")]
    for r in results:
        delta = "" if base is None or r.cost is None else _usd(r.cost - base)
        rows.append(
            (
                r.lever.name,
                _usd(r.cost),
                delta,
                f"{r.cached_tokens:,}",
                f"{r.write_tokens:,}",
                _percent(r.request_hit_rate),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["Cache levers (every variant simulated, reported usage set aside):"]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def analysis_calibration(analysis: Analysis) -> list[ModelCalibration]:
    """Calls with reported usage: how far costlab's estimate and simulation were from it."""
    return calibrate(
        Pair(
            model=call.model or "",
            estimated_prompt=call.estimated_prompt_tokens,
            reported_prompt=call.call.usage.prompt_tokens,
            simulated_cached=call.simulated_cached_tokens,
            reported_cached=call.call.usage.cached_tokens,
        )
        for conversation in analysis.conversations
        for call in conversation.calls
        if call.call.usage is not None
    )


def calibration_to_json(rows: list[ModelCalibration]) -> list[dict[str, Any]]:
    return [
        {
            "model": r.model,
            "calls": r.calls,
            "exact_share": _rate(r.exact_share),
            "mean_gap": _rate(r.mean_gap),
            "p95_abs_gap": _rate(r.p95_abs_gap),
            "cached_exact_share": _rate(r.cached_exact_share),
            "hit_agreement": _rate(r.hit_agreement),
            "simulated_cached_tokens": r.simulated_cached,
            "reported_cached_tokens": r.reported_cached,
        }
        for r in rows
    ]


def render_calibration(rows: list[ModelCalibration]) -> list[str]:
    if not rows:
        return []
    lines = ["calibration (calls with reported usage: estimate vs report, per model):"]
    for r in rows:
        lines.append(
            f"  {r.model}: {r.calls} calls, prompt exact {_percent(r.exact_share)}, "
            f"mean gap {r.mean_gap:+.2%}, p95 |gap| {r.p95_abs_gap:.2%}; cached tokens exact "
            f"{_percent(r.cached_exact_share)}, hit/miss agree {_percent(r.hit_agreement)} "
            f"(simulated {r.simulated_cached:,} vs reported {r.reported_cached:,})"
        )
    return lines
