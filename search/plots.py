"""Plotly figures and self-contained HTML pages (plotly.js inlined once; opens offline)."""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from search.outputs import HTML_START, write_text_atomic


def learning_curves(curves: dict[str, dict], *, held_out_label: str = "held-out") -> go.Figure:
    """Loss (train dotted, held-out solid, held-out at its best temperature dash-dot where the curves have
    it) and held-out accuracy per epoch, one colour per run.

    Sized for a dashboard card at 1366 px: short subplot titles, with the line styles' key as the figure's
    title across its whole width (in the left title it ran into the right one); one legend entry per run
    (its label; clicking it hides all three of its lines), one per row below the plots, with the figure's
    height grown to hold every row. Hovering a line names it in full."""
    calibrated = any(c.get("eval_calibrated_loss") for c in curves.values())
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", f"{held_out_label} accuracy"))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    for i, (label, c) in enumerate(curves.items()):
        color = palette[i % len(palette)]
        epochs = list(range(1, len(c.get("eval_loss", [])) + 1))
        common = {"x": epochs, "legendgroup": label, "line": {"color": color}}
        fig.add_trace(go.Scatter(y=c.get("train_loss", []), name=f"{label}: train loss", showlegend=False,
                                 **{**common, "line": {"color": color, "dash": "dot"}}), row=1, col=1)
        fig.add_trace(go.Scatter(y=c.get("eval_loss", []), name=label, **common), row=1, col=1)
        if c.get("eval_calibrated_loss"):
            fig.add_trace(go.Scatter(y=c["eval_calibrated_loss"], name=f"{label}: calibrated {held_out_label} loss",
                                     showlegend=False, **{**common, "line": {"color": color, "dash": "dashdot"}}),
                          row=1, col=1)
        fig.add_trace(go.Scatter(y=c.get("eval_accuracy", []), name=f"{label}: {held_out_label} accuracy",
                                 showlegend=False, **common), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    key = f"loss lines: dotted train, solid {held_out_label}" + (", dash-dot calibrated" if calibrated else "")
    rows = len(curves)
    fig.update_layout(title={"text": key, "font": {"size": 13}}, height=400 + LEGEND_ROW_PX * rows,
                      margin={"t": 70, "b": 60 + LEGEND_ROW_PX * rows}, hovermode="closest",
                      legend={"orientation": "v", "yref": "container", "y": 0, "yanchor": "bottom",
                              "xanchor": "left", "x": 0})
    return fig


LEGEND_ROW_PX = 22  # one legend entry a row, below the plots


def retrain_curves(step_losses: list[float], steps_per_epoch: int, epoch_losses: list[float],
                   epoch_accuracies: list[float], *, eval_label: str = "test") -> go.Figure:
    """The seed's loss plot, with each epoch's score where it was measured: train loss per iteration, the
    ``eval_label`` loss at the end of each epoch (not held flat from iteration 0), and accuracy per epoch."""
    ends = [steps_per_epoch * (e + 1) for e in range(len(epoch_losses))]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.65, 0.35],
                        subplot_titles=("loss", f"{eval_label} accuracy per epoch"))
    fig.add_trace(go.Scatter(x=list(range(1, len(step_losses) + 1)), y=step_losses, name="train loss (per iteration)",
                             line={"width": 1}), row=1, col=1)
    fig.add_trace(go.Scatter(x=ends, y=epoch_losses, mode="lines+markers", name=f"{eval_label} loss (end of epoch)",
                             line={"width": 2}), row=1, col=1)
    fig.add_trace(go.Scatter(x=list(range(1, len(epoch_accuracies) + 1)), y=epoch_accuracies, mode="lines+markers",
                             name=f"{eval_label} accuracy"), row=1, col=2)
    fig.update_xaxes(title_text="iteration", row=1, col=1)
    fig.update_xaxes(title_text="epoch", dtick=1, row=1, col=2)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_layout(height=420, margin={"t": 40})
    return fig


# The page opens offline: no modebar button that needs the network ("Share chart" uploads to Plotly's
# cloud), and no Plotly logo link.
FIGURE_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["sendChartToCloud"]}


def write_html(path: Path, title: str, sections: list[tuple[str, object]]) -> None:
    """Write one page: each section is (heading, plotly Figure or an HTML string). Each figure sits in a
    ``<figure>`` labelled with its heading (what a screen reader says for the canvas); sortable tables sort
    by click or by Enter/Space on a focused header."""
    parts, first = [], True
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(body, go.Figure):
            plot = body.to_html(full_html=False, include_plotlyjs=first, config=FIGURE_CONFIG)
            parts.append(f'<figure role="img" aria-label="{html.escape(heading)}">{plot}</figure>')
            first = False
        else:
            parts.append(str(body))
    page = f"""{HTML_START}<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
figure {{ margin: 0; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f0f0f0; }}
table.sortable th {{ cursor: pointer; }}
.warn {{ background: #fff4e0; border-left: 4px solid #f0a000; padding: 0.5em 1em; }}
</style></head><body><h1>{html.escape(title)}</h1>
{''.join(parts)}
<script>
// Sort a table by a column; empty cells (a pruned trial's value) stay last either way.
function sortBy(th, col) {{
  const body = th.closest("table").tBodies[0];
  const rows = Array.from(body.rows);
  const asc = th.getAttribute("aria-sort") !== "ascending";
  th.closest("tr").querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  const key = r => {{ const t = r.cells[col].textContent; const n = parseFloat(t); return isNaN(n) ? t : n; }};
  rows.sort((a, b) => {{
    const x = key(a), y = key(b);
    if (x === "" || y === "") return (x === "") - (y === "");
    return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1);
  }});
  rows.forEach(r => body.appendChild(r));
}}
document.querySelectorAll("table.sortable th").forEach((th, col) => {{
  th.addEventListener("click", () => sortBy(th, col));
  th.addEventListener("keydown", e => {{
    if (e.key === "Enter" || e.key === " ") {{ e.preventDefault(); sortBy(th, col); }}
  }});
}});
</script></body></html>
"""
    write_text_atomic(Path(path), page)


def table_html(headers: list[str], rows: list[list], *, sortable: bool = True) -> str:
    focus = ' tabindex="0" scope="col"' if sortable else ' scope="col"'
    head = "".join(f"<th{focus}>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    cls = ' class="sortable"' if sortable else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
