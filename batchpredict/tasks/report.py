"""The evaluation report: one self-contained HTML page with inline SVG plots.

No external scripts, styles, fonts or images, so the KFP and Vertex AI UIs (which show an ``HTML``
artifact in a sandboxed frame) render it as is, and it opens from disk.
"""

from __future__ import annotations

import html
import math
from typing import Any

from batchpredict.tasks.contract import CLASSIFICATION

PLOT_SIZE = 320
MARGIN = 48
# Room on the left for the y tick labels (class names in the confusion matrix).
LEFT_MARGIN = 84
# Scatter axes extend this share beyond the data, so edge points are not cut.
PAD = 0.04
# Ticks per axis, about.
TICKS = 5
MAX_TICK_DECIMALS = 6
MAX_POINTS = 2000
HIST_BINS = 30
ACCENT = "#1a73e8"
GRID = "#dadce0"

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#202124}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
table{border-collapse:collapse;font-size:14px} td,th{border:1px solid #dadce0;padding:4px 10px}
th{background:#f1f3f4;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:24px} figure{margin:0} figcaption{font-size:13px}
.pass{color:#188038;font-weight:600} .fail{color:#d93025;font-weight:600}
.note{color:#5f6368;font-size:13px}
"""

METRIC_LABELS = {
    "accuracy": "Accuracy",
    "precision_macro": "Precision (macro)",
    "recall_macro": "Recall (macro)",
    "f1_macro": "F1 (macro)",
    "log_loss": "Log loss",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "rmse": "RMSE",
    "mae": "MAE",
    "mape": "MAPE",
    "r2": "R2",
    "rmsle": "RMSLE",
}


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return _e(value)


def _plain(value: Any) -> str:
    """A label or count as people write it: ``1`` for ``1.0`` (KFP metadata has floats)."""
    if isinstance(value, float) and value.is_integer():
        return _e(int(value))
    return _e(value)


def nice_ticks(lo: float, hi: float, integer: bool = False, target: int = TICKS) -> list[float]:
    """Tick values on a 1-2-5 step inside ``[lo, hi]`` (whole numbers only when ``integer``)."""
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / max(target - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, math.ceil(step))
    first = math.ceil(lo / step - 1e-9) * step
    count = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [round(first + i * step, 12) for i in range(count)]


def tick_label(value: float, ticks: list[float]) -> str:
    """``value`` with the decimals the tick step needs: 0.25 -> "0.25", 20 -> "20", 1.0 -> "1"."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = 0
    while decimals < MAX_TICK_DECIMALS and abs(round(step, decimals) - step) > 1e-9 * step:
        decimals += 1
    text = f"{value:.{decimals}f}"
    if decimals:
        text = text.rstrip("0").rstrip(".")
    return "0" if float(text) == 0 else text


def _frame(title: str, x_label: str, y_label: str, body: str) -> str:
    w = h = PLOT_SIZE
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w + LEFT_MARGIN + MARGIN}" '
        f'height="{h + 2 * MARGIN}" role="img" aria-label="{_e(title)}">'
        f'<g transform="translate({LEFT_MARGIN},{MARGIN})">'
        f'<rect width="{w}" height="{h}" fill="none" stroke="{GRID}"/>{body}'
        f'<text x="{w / 2}" y="{h + 36}" text-anchor="middle" font-size="13">{_e(x_label)}</text>'
        f'<text transform="translate({12 - LEFT_MARGIN},{h / 2}) rotate(-90)" '
        'text-anchor="middle" '
        f'font-size="13">{_e(y_label)}</text>'
        f'<text x="{w / 2}" y="-16" text-anchor="middle" font-size="14" '
        f'font-weight="600">{_e(title)}</text></g></svg>'
    )


def _axis_ticks(x_lo, x_hi, y_lo, y_hi, sx, sy, y_integer: bool = False) -> str:
    """Tick labels on rounded values (1-2-5 steps); whole numbers on count axes."""
    out = []
    x_ticks = nice_ticks(x_lo, x_hi)
    y_ticks = nice_ticks(y_lo, y_hi, integer=y_integer)
    for xv in x_ticks:
        out.append(
            f'<text x="{sx(xv):.1f}" y="{PLOT_SIZE + 16}" text-anchor="middle" font-size="11">'
            f"{tick_label(xv, x_ticks)}</text>"
        )
    for yv in y_ticks:
        out.append(
            f'<text x="-6" y="{sy(yv) + 4:.1f}" text-anchor="end" font-size="11">'
            f"{tick_label(yv, y_ticks)}</text>"
        )
    return "".join(out)


def _scales(x_lo: float, x_hi: float, y_lo: float, y_hi: float):
    x_span = (x_hi - x_lo) or 1.0
    y_span = (y_hi - y_lo) or 1.0

    def sx(v: float) -> float:
        return (v - x_lo) / x_span * PLOT_SIZE

    def sy(v: float) -> float:
        return PLOT_SIZE - (v - y_lo) / y_span * PLOT_SIZE

    return sx, sy


def svg_curve(
    xs: list[float], ys: list[float], title: str, x_label: str, y_label: str, diagonal: bool
) -> str:
    """A line chart on the unit square (ROC, precision-recall)."""
    sx, sy = _scales(0.0, 1.0, 0.0, 1.0)
    points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys, strict=True))
    body = _axis_ticks(0.0, 1.0, 0.0, 1.0, sx, sy)
    if diagonal:
        body += (
            f'<line x1="0" y1="{PLOT_SIZE}" x2="{PLOT_SIZE}" y2="0" stroke="{GRID}" '
            'stroke-dasharray="4 4"/>'
        )
    body += f'<polyline points="{points}" fill="none" stroke="{ACCENT}" stroke-width="2"/>'
    return _frame(title, x_label, y_label, body)


def svg_confusion_matrix(matrix: list[list[int]], names: list[str]) -> str:
    """A heatmap of counts: rows are true labels, columns predicted labels."""
    n = max(len(matrix), 1)
    cell = PLOT_SIZE / n
    top = max((max(row) for row in matrix if row), default=0) or 1
    body = []
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            shade = count / top
            fill = f"rgba(26,115,232,{0.08 + 0.85 * shade:.3f})"
            color = "#fff" if shade > 0.55 else "#202124"
            body.append(
                f'<rect x="{j * cell:.1f}" y="{i * cell:.1f}" width="{cell:.1f}" '
                f'height="{cell:.1f}" fill="{fill}" stroke="#fff"/>'
                f'<text x="{(j + 0.5) * cell:.1f}" y="{(i + 0.5) * cell + 5:.1f}" '
                f'text-anchor="middle" font-size="14" fill="{color}">{_plain(count)}</text>'
            )
    for k, name in enumerate(names):
        body.append(
            f'<text x="{(k + 0.5) * cell:.1f}" y="{PLOT_SIZE + 16}" text-anchor="middle" '
            f'font-size="11">{_plain(name)[:14]}</text>'
            f'<text x="-6" y="{(k + 0.5) * cell + 4:.1f}" text-anchor="end" '
            f'font-size="11">{_plain(name)[:14]}</text>'
        )
    return _frame("Confusion matrix", "Predicted label", "True label", "".join(body))


def _sample(n: int) -> range:
    step = max(1, math.ceil(n / MAX_POINTS))
    return range(0, n, step)


def svg_scatter(
    xs: list[float],
    ys: list[float],
    title: str,
    x_label: str,
    y_label: str,
    diagonal: bool = False,
    zero_line: bool = False,
) -> str:
    """A scatter plot (at most MAX_POINTS points, evenly sampled)."""
    idx = list(_sample(len(xs)))
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    if diagonal:
        x_lo = y_lo = min(x_lo, y_lo)
        x_hi = y_hi = max(x_hi, y_hi)
    if zero_line:
        bound = max(abs(y_lo), abs(y_hi)) or 1.0
        y_lo, y_hi = -bound, bound
    x_pad, y_pad = (x_hi - x_lo) * PAD, (y_hi - y_lo) * PAD
    x_lo, x_hi, y_lo, y_hi = x_lo - x_pad, x_hi + x_pad, y_lo - y_pad, y_hi + y_pad
    sx, sy = _scales(x_lo, x_hi, y_lo, y_hi)
    body = [_axis_ticks(x_lo, x_hi, y_lo, y_hi, sx, sy)]
    if diagonal:
        body.append(
            f'<line x1="0" y1="{PLOT_SIZE}" x2="{PLOT_SIZE}" y2="0" stroke="{GRID}" '
            'stroke-dasharray="4 4"/>'
        )
    if zero_line:
        body.append(
            f'<line x1="0" y1="{sy(0):.1f}" x2="{PLOT_SIZE}" y2="{sy(0):.1f}" stroke="{GRID}" '
            'stroke-dasharray="4 4"/>'
        )
    body.extend(
        f'<circle cx="{sx(xs[i]):.1f}" cy="{sy(ys[i]):.1f}" r="2.5" fill="{ACCENT}" '
        'fill-opacity="0.6"/>'
        for i in idx
    )
    return _frame(title, x_label, y_label, "".join(body))


def svg_histogram(values: list[float], title: str, x_label: str) -> str:
    """A histogram of ``values`` in HIST_BINS bins."""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    counts = [0] * HIST_BINS
    for v in values:
        counts[min(int((v - lo) / span * HIST_BINS), HIST_BINS - 1)] += 1
    top = max(counts) or 1
    width = PLOT_SIZE / HIST_BINS
    sx, sy = _scales(lo, lo + span, 0, top)
    body = [_axis_ticks(lo, lo + span, 0, top, sx, sy, y_integer=True)]
    for k, c in enumerate(counts):
        h = c / top * PLOT_SIZE
        body.append(
            f'<rect x="{k * width:.1f}" y="{PLOT_SIZE - h:.1f}" width="{width - 1:.1f}" '
            f'height="{h:.1f}" fill="{ACCENT}" fill-opacity="0.8"/>'
        )
    return _frame(title, x_label, "Rows", "".join(body))


def _metrics_table(metrics: dict[str, float]) -> str:
    rows = [
        f"<tr><th>{_e(METRIC_LABELS[k])}</th><td class='num'>{_fmt(metrics[k])}</td></tr>"
        for k in METRIC_LABELS
        if k in metrics
    ]
    return "<table>" + "".join(rows) + "</table>"


def _per_class_table(per_class: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>Class</th><th>Label</th><th>Precision</th><th>Recall</th><th>F1</th>"
        "<th>Support</th></tr>"
    )
    rows = [
        f"<tr><td>{_plain(r['name'])}</td><td>{_plain(r['label'])}</td>"
        f"<td class='num'>{_fmt(r['precision'])}</td><td class='num'>{_fmt(r['recall'])}</td>"
        f"<td class='num'>{_fmt(r['f1'])}</td><td class='num'>{_plain(r['support'])}</td></tr>"
        for r in per_class
    ]
    return "<table>" + head + "".join(rows) + "</table>"


def _plots(evaluation) -> list[str]:
    if evaluation.problem_type == CLASSIFICATION:
        plots = [svg_confusion_matrix(evaluation.confusion_matrix, evaluation.label_names)]
        roc = evaluation.roc_curve
        if roc:
            auc = evaluation.metrics.get("roc_auc")
            title = "ROC curve" + (f" (AUC {auc:.3f})" if auc is not None else "")
            plots.append(
                svg_curve(
                    roc["fpr"], roc["tpr"], title, "False positive rate", "True positive rate", True
                )
            )
        pr = evaluation.pr_curve
        if pr:
            plots.append(
                svg_curve(
                    pr["recall"], pr["precision"], "Precision-recall", "Recall", "Precision", False
                )
            )
        return plots
    t, p = evaluation.y_true, evaluation.y_pred
    residuals = [pv - tv for tv, pv in zip(t, p, strict=True)]
    return [
        svg_scatter(t, p, "Predicted vs actual", "Actual", "Predicted", diagonal=True),
        svg_scatter(p, residuals, "Residuals", "Predicted", "Predicted - actual", zero_line=True),
        svg_histogram(residuals, "Residual distribution", "Predicted - actual"),
    ]


def render_report(evaluation, title: str = "", context: dict[str, Any] | None = None) -> str:
    """The report page for an ``evaluate.Evaluation``."""
    kind = "Classification" if evaluation.problem_type == CLASSIFICATION else "Regression"
    title = title or f"{kind} evaluation"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1><p class='note'>{kind}, {evaluation.rows} rows evaluated.</p>",
    ]
    if evaluation.gate:
        g = evaluation.gate
        verdict = "passed" if g["passed"] else "failed"
        parts.append(
            f"<p>Quality gate <span class='{'pass' if g['passed'] else 'fail'}'>{verdict}</span>: "
            f"{_e(g['metric'])} = {_fmt(g['value'])}, required {g['direction']} "
            f"{_fmt(g['threshold'])}.</p>"
        )
    parts.append("<h2>Metrics</h2>" + _metrics_table(evaluation.metrics))
    if evaluation.per_class:
        parts.append("<h2>Per class</h2>" + _per_class_table(evaluation.per_class))
    parts.append("<h2>Plots</h2><div class='plots'>")
    parts.extend(f"<figure>{svg}</figure>" for svg in _plots(evaluation))
    parts.append("</div>")
    if evaluation.notes:
        parts.append("".join(f"<p class='note'>{_e(n)}</p>" for n in evaluation.notes))
    if context:
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_plain(v)}</td></tr>" for k, v in context.items())
        parts.append(f"<h2>Run</h2><table>{rows}</table>")
    parts.append("</body></html>")
    return "".join(parts)
