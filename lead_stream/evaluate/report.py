"""Evaluated checkpoints → one self-contained HTML report (inline SVG charts, PNG frames as data: URIs).

Sections: the summary table (checkpoints side by side), per-class BEV / perspective IoU bars, per-class box
AP and mAP / radar AP by centre-distance threshold, ADE by horizon, the target-speed confusion matrices and
the worst frames of each checkpoint (camera with expert / predicted waypoints, BEV label vs prediction).
No external file, script or font: the page opens offline. A small inline script records on
`<body data-rendered=...>` how many charts and decoded images the browser drew (the browser test reads it).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence

SERIES_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
BAR_H, LABEL_W, PLOT_W = 14, 170, 360

BAR_CHARTS = (  # (title, results section, its {category: value} field)
    ("BEV semantic IoU per class", "bev_semantic", "iou"),
    ("Perspective semantic IoU per class", "semantic", "iou"),
    ("Box AP per class (mean over 0.5/1/2/4 m)", "boxes", "ap"),
    ("Box mAP by centre distance (m)", "boxes", "map_by_threshold"),
    ("Radar detection AP by centre distance (m)", "radar", "ap_by_threshold"),
)
SUMMARY_ROWS = (
    ("num_samples", "frames"),
    ("planning/ade_m", "waypoint ADE (m)"),
    ("planning/fde_m", "waypoint FDE (m)"),
    ("planning/route_l1_m", "route L1 (m)"),
    ("target_speed/accuracy", "target-speed accuracy"),
    ("bev_semantic/miou", "BEV semantic mIoU"),
    ("semantic/miou", "perspective semantic mIoU"),
    ("depth/abs_rel", "depth AbsRel"),
    ("depth/rmse_m", "depth RMSE (m)"),
    ("depth/delta1", "depth δ<1.25"),
    ("boxes/map", "box mAP"),
    ("radar/map", "radar AP"),
)


def lookup(results: dict, path: str) -> float:
    """`results["a"]["b"]` for path "a/b"; NaN when absent or None."""
    value: object = results
    for part in path.split("/"):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return float("nan")
    return float(value) if isinstance(value, (int, float)) and value is not None else float("nan")


def _fmt(value: float) -> str:
    return (
        "n/a"
        if not math.isfinite(value)
        else (f"{value:.0f}" if value == int(value) and value > 10 else f"{value:.4g}")
    )


def summary_rows(runs: Sequence[tuple[str, dict]]) -> list[tuple[str, list[float]]]:
    """(row label, one value per run) for the rows any run has."""
    rows = []
    for path, label in SUMMARY_ROWS:
        values = [lookup(results, path) for _, results in runs]
        if any(math.isfinite(v) for v in values):
            rows.append((label, values))
    return rows


def _bars(title: str, categories: list[str], series: list[tuple[str, list[float]]], vmax: float = 1.0) -> str:
    """Horizontal grouped bars (one colour per series); NaN bars are written as n/a."""
    group_h = BAR_H * len(series) + 6
    height = 24 + group_h * len(categories)
    parts = [f'<svg class="chart" width="{LABEL_W + PLOT_W + 60}" height="{height}" role="img">']
    parts.append(f'<text x="0" y="14" font-weight="bold">{html.escape(title)}</text>')
    for i, cat in enumerate(categories):
        y0 = 24 + i * group_h
        parts.append(
            f'<text x="{LABEL_W - 6}" y="{y0 + group_h / 2 + 4}" text-anchor="end">{html.escape(cat)}</text>'
        )
        for j, (_, values) in enumerate(series):
            v = values[i]
            y = y0 + j * BAR_H
            if math.isfinite(v):
                w = max(0.0, min(v / vmax, 1.0)) * PLOT_W
                color = SERIES_COLORS[j % len(SERIES_COLORS)]
                parts.append(
                    f'<rect x="{LABEL_W}" y="{y}" width="{w:.1f}" height="{BAR_H - 2}" fill="{color}"/>'
                )
                parts.append(f'<text x="{LABEL_W + w + 4:.1f}" y="{y + BAR_H - 4}">{v:.3f}</text>')
            else:
                parts.append(f'<text x="{LABEL_W + 4}" y="{y + BAR_H - 4}" fill="#999">n/a</text>')
    parts.append("</svg>")
    return "".join(parts)


def _lines(
    title: str, xs: list[float], series: list[tuple[str, list[float]]], x_unit: str, y_unit: str
) -> str:
    """A line chart of several series over the same xs."""
    width, height, pad = LABEL_W + PLOT_W, 220, 40
    finite = [v for _, ys in series for v in ys if math.isfinite(v)]
    ymax = max(finite) * 1.1 if finite and max(finite) > 0 else 1.0
    xmin, xmax = min(xs), max(xs)

    def px(x: float, y: float) -> str:
        return f"{pad + (x - xmin) / (xmax - xmin or 1) * (width - 2 * pad):.1f},{height - pad - y / ymax * (height - 2 * pad):.1f}"

    parts = [f'<svg class="chart" width="{width}" height="{height}" role="img">']
    parts.append(f'<text x="0" y="14" font-weight="bold">{html.escape(title)}</text>')
    parts.append(
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#333"/>'
    )
    parts.append(f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#333"/>')
    parts.append(f'<text x="{width - pad}" y="{height - 8}" text-anchor="end">{html.escape(x_unit)}</text>')
    parts.append(f'<text x="4" y="{pad - 8}">{html.escape(y_unit)} (max {ymax:.2f})</text>')
    for x in xs:
        parts.append(
            f'<text x="{px(x, 0).split(",")[0]}" y="{height - pad + 14}" text-anchor="middle">{x:g}</text>'
        )
    for j, (_, ys) in enumerate(series):
        points = " ".join(px(x, y) for x, y in zip(xs, ys) if math.isfinite(y))
        color = SERIES_COLORS[j % len(SERIES_COLORS)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _confusion(label: str, results: dict) -> str:
    speed = results.get("target_speed")
    if not speed:
        return ""
    matrix, classes = speed["confusion"], speed["classes_mps"]
    peak = max(max(row) for row in matrix) or 1
    head = "".join(f"<th>{c:g}</th>" for c in classes)
    rows = []
    for c, row in zip(classes, matrix):
        cells = "".join(f'<td style="background: rgba(31,119,180,{n / peak:.2f})">{n}</td>' for n in row)
        rows.append(f"<tr><th>{c:g}</th>{cells}</tr>")
    return (
        f'<table class="confusion"><caption>{html.escape(label)}: expert (rows) vs predicted (cols) target '
        f"speed class, m/s</caption><tr><th></th>{head}</tr>{''.join(rows)}</table>"
    )


def _legend(labels: list[str]) -> str:
    items = "".join(
        f'<span style="color:{SERIES_COLORS[j % len(SERIES_COLORS)]}">■</span> {html.escape(name)} &nbsp; '
        for j, name in enumerate(labels)
    )
    return f'<p class="legend">{items}</p>'


def _image(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


_CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var decoded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var charts = document.querySelectorAll('svg.chart').length;
  document.body.setAttribute('data-rendered', JSON.stringify({images: imgs.length, decoded: decoded, charts: charts}));
});
</script>"""


def render_report(
    runs: Sequence[tuple[str, dict]],
    worst: Sequence[Sequence[object]],
    *,
    title: str,
    subtitle: str,
) -> str:
    """The HTML page.

    Args:
        runs: (checkpoint label, results dict) per checkpoint, same frames for all.
        worst: per run, its `WorstFrame`s (key, error, error_name, camera_png, bev_png).
        title: page title.
        subtitle: one line under the title (collection, buckets, frames).
    """
    labels = [label for label, _ in runs]
    body = [f"<h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>", _legend(labels)]
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    table_rows = "".join(
        f"<tr><th>{html.escape(name)}</th>{''.join(f'<td>{_fmt(v)}</td>' for v in values)}</tr>"
        for name, values in summary_rows(runs)
    )
    body.append(f'<table class="summary"><tr><th>metric</th>{head}</tr>{table_rows}</table>')
    charts = []
    for title, section, field in BAR_CHARTS:
        have = [r for _, r in runs if section in r]
        if have:
            categories = list(have[0][section][field])
            series = [(label, [lookup(r, f"{section}/{field}/{c}") for c in categories]) for label, r in runs]
            charts.append(_bars(title, categories, series))
    planned = [r for _, r in runs if "planning" in r]
    if planned:
        xs = planned[0]["planning"]["horizons_s"]

        def curve(results: dict, key: str) -> list[float]:  # NaN for a run without a planner (no line)
            return [lookup(results, f"planning/{key}/{i}") for i in range(len(xs))]

        ade = [(label, curve(r, "ade_by_horizon_m")) for label, r in runs]
        step = [(label, curve(r, "displacement_by_step_m")) for label, r in runs]
        charts.append(_lines("Waypoint ADE by horizon", xs, ade, "horizon (s)", "ADE (m)"))
        charts.append(_lines("Waypoint displacement at each step", xs, step, "horizon (s)", "error (m)"))
    body.append(f'<div class="charts">{"".join(charts)}</div>')
    confusions = "".join(_confusion(label, r) for label, r in runs)
    if confusions:
        body.append(f'<h2>Target-speed confusion</h2><div class="charts">{confusions}</div>')
    for label, frames in zip(labels, worst):
        if not frames:
            continue
        body.append(f"<h2>Worst frames: {html.escape(label)}</h2>")
        for frame in frames:
            body.append(
                f"<figure><figcaption>{html.escape(frame.key)}: {html.escape(frame.error_name)} {frame.error:.3f} "
                "(green expert, red predicted)</figcaption>"
                f"{_image(frame.camera_png, 'camera ' + frame.key)}{_image(frame.bev_png, 'BEV ' + frame.key)}</figure>"
            )
    style = (
        "body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:12px 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}.charts{display:flex;flex-wrap:wrap;gap:24px}"
        "svg text{font-size:11px}figure{margin:12px 0}figure img{display:block;max-width:100%;margin:4px 0}"
        ".confusion td{min-width:28px}"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>{''.join(body)}{_CHECK_SCRIPT}</body></html>\n"
    )
