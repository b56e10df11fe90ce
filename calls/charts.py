"""Experiment results -> Plotly figure dicts (drawn by static/js/charts.js like every other)."""

from __future__ import annotations

from conversations.charts import BASE_LAYOUT, Figure, label

from .selectors import VariantResult

# One colour per variant; predicted dashed, measured solid.
VARIANT_COLORS = ("#264653", "#e76f51", "#2a9d8f", "#f4a261", "#8d99ae", "#6a4c93")


def predicted_vs_measured_figure(results: list[VariantResult], conversation: str) -> Figure:
    """Per turn of one original conversation: cached tokens costlab predicted and those the
    provider reported, per variant."""
    data = []
    for result in results:
        turns = [t for t in result.turns if t.conversation == conversation]
        color = VARIANT_COLORS[result.position % len(VARIANT_COLORS)]
        x = [t.index + 1 for t in turns]
        name = label(result.label)
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"{name}: predicted",
                "x": x,
                "y": [t.predicted_cached_tokens for t in turns],
                "line": {"color": color, "dash": "dash"},
            }
        )
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"{name}: measured",
                "x": x,
                "y": [t.measured_cached_tokens for t in turns],
                "marker": {"color": color, "size": 9, "symbol": "circle-open"},
            }
        )
    return {
        "data": data,
        "layout": {
            **BASE_LAYOUT,
            "xaxis": {"title": {"text": "Turn"}, "dtick": 1},
            "yaxis": {"title": {"text": "Cached tokens"}},
        },
    }
