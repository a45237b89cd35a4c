"""Plotly figures and self-contained HTML pages (plotly.js inlined once; opens offline)."""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from model.io import write_text_atomic


def learning_curves(curves: dict[str, dict], *, held_out_label: str = "held-out") -> go.Figure:
    """Loss (train and held-out) and held-out accuracy per epoch, one colour per run."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", f"{held_out_label} accuracy"))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    for i, (label, c) in enumerate(curves.items()):
        color = palette[i % len(palette)]
        epochs = list(range(1, len(c.get("eval_loss", [])) + 1))
        fig.add_trace(go.Scatter(x=epochs, y=c.get("train_loss", []), name=f"{label}: train loss",
                                 line={"color": color, "dash": "dot"}), row=1, col=1)
        fig.add_trace(go.Scatter(x=epochs, y=c.get("eval_loss", []), name=f"{label}: {held_out_label} loss",
                                 line={"color": color}), row=1, col=1)
        fig.add_trace(go.Scatter(x=epochs, y=c.get("eval_accuracy", []), name=f"{label}: {held_out_label} accuracy",
                                 line={"color": color}), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=420, margin={"t": 40})
    return fig


def seed_loss_plot(step_losses: list[float], steps_per_epoch: int, epoch_losses: list[float],
                   *, eval_label: str = "Test Loss") -> go.Figure:
    """The seed's plot: train loss per iteration, and the per-epoch test loss held over each epoch's steps."""
    held = [v for v in epoch_losses for _ in range(steps_per_epoch)][: len(step_losses)]
    fig = go.Figure()
    fig.add_trace(go.Scatter(y=step_losses, name="Train Loss", line={"width": 1}))
    fig.add_trace(go.Scatter(y=held, name=eval_label, line={"width": 2}))
    fig.add_trace(go.Scatter(x=[steps_per_epoch * (e + 1) - 1 for e in range(len(epoch_losses))], y=epoch_losses,
                             mode="markers", name=f"{eval_label} (per epoch)"))
    fig.update_layout(title="model loss", xaxis_title="iterations", yaxis_title="Loss", height=420)
    return fig


def write_html(path: Path, title: str, sections: list[tuple[str, object]]) -> None:
    """Write one page: each section is (heading, plotly Figure or an HTML string)."""
    parts, first = [], True
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(body, go.Figure):
            parts.append(body.to_html(full_html=False, include_plotlyjs=first))
            first = False
        else:
            parts.append(str(body))
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f0f0f0; cursor: pointer; }}
.warn {{ background: #fff4e0; border-left: 4px solid #f0a000; padding: 0.5em 1em; }}
</style></head><body><h1>{html.escape(title)}</h1>
{''.join(parts)}
<script>
document.querySelectorAll("table.sortable th").forEach((th, col) => th.addEventListener("click", () => {{
  const body = th.closest("table").tBodies[0];
  const rows = Array.from(body.rows);
  const asc = th.dataset.asc !== "1"; th.dataset.asc = asc ? "1" : "0";
  const key = r => {{ const t = r.cells[col].dataset.v ?? r.cells[col].textContent; const n = parseFloat(t);
                      return isNaN(n) ? t : n; }};
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (asc ? 1 : -1));
  rows.forEach(r => body.appendChild(r));
}}));
</script></body></html>
"""
    write_text_atomic(Path(path), page)


def table_html(headers: list[str], rows: list[list], *, sortable: bool = True) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    cls = ' class="sortable"' if sortable else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
