"""The recipe-claims page: per claim, every configuration of every seed as quality ratio against its compute axis,
with the claim's bounds drawn, and the verdict table (nas.bench.recipe_claims)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from nas.bench.recipe_claims import COMPUTE_AXIS, ClaimResult
from nas.dashboard.pages import document, figure_html
from nas.dashboard.style import COLORS, esc

PAGE = "claims.html"


def claim_figure(result: ClaimResult) -> go.Figure:
    """Quality ratio against the claim's compute axis, one colour per seed, picks as stars, the quality bound dashed."""
    fig = go.Figure()
    seeds = sorted({p["seed"] for p in result.points})
    for i, seed in enumerate(seeds):
        pts = [p for p in result.points if p["seed"] == seed]
        fig.add_trace(go.Scatter(
            x=[p["compute"] for p in pts], y=[p["quality_ratio"] for p in pts], mode="markers", name=f"seed {seed}",
            text=[p["config"] + (" (picked)" if p["picked"] else "") for p in pts], hoverinfo="text+x+y",
            marker={"color": COLORS[i % len(COLORS)], "size": [14 if p["picked"] else 8 for p in pts],
                    "symbol": ["star" if p["picked"] else "circle" for p in pts]}))
    fig.add_hline(y=result.claim.min_quality_ratio, line_dash="dash",
                  annotation_text=f"quality bound {result.claim.min_quality_ratio:.3f}")
    fig.update_layout(title=f"{result.claim.title}: {result.status}", template="plotly_white",
                      xaxis_title=COMPUTE_AXIS[result.claim.key], yaxis_title="quality ratio (dense / quality)")
    return fig


def claims_page(results: Sequence[ClaimResult], summary: str) -> str:
    """The whole page: the verdict table, then one figure per claim."""
    rows = "".join(
        f"<tr><td>{esc(r.claim.title)}</td><td>{esc(r.claim.claimed)}</td><td>{esc(r.measured)}</td>"
        f"<td>{esc(r.proxy)} -&gt; {esc(r.target)}</td><td><b>{esc(r.status)}</b></td><td>{esc(r.reason)}</td></tr>"
        for r in results)
    body = (f"<h1>Recipe claims</h1><p>{esc(summary)}</p><table><tr><th>claim</th><th>claimed</th><th>measured</th>"
            f"<th>proxy -&gt; target</th><th>verdict</th><th>why</th></tr>{rows}</table>"
            + "".join(f"<h2>{esc(r.claim.title)}</h2>" + figure_html(claim_figure(r), f"claim-{r.claim.key}")
                      for r in results))
    return document("nas recipe claims", body, PAGE, "", None)
