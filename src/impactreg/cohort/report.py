"""The cohort report: ``summary.csv`` and ``summary.json`` (one record per pair) and ``summary.html``
(a sortable table with QC thumbnails and the distribution of each measure), rewritten atomically
whenever a pair finishes, so an interrupted cohort still has a report of what it did."""
from __future__ import annotations

import csv
import html
import io
import json
import math
from pathlib import Path

from ..files import atomic_write_text

COLUMNS = ("id", "status", "error", "tre_mean", "tre_p90", "dice_mean", "hd95_mean", "folded_percent", "seconds",
           "cpu_seconds", "registration_seconds", "worker", "worker_peak_mb", "folder")
MEASURES = {"tre_mean": "mean TRE (mm)", "tre_p90": "TRE 90% (mm)", "dice_mean": "mean Dice",
            "hd95_mean": "mean HD95 (mm)", "folded_percent": "folded (%)", "seconds": "wall time (s)"}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def measure_values(records: list[dict], name: str) -> list[float]:
    return [v for v in (_number(r.get(name)) for r in records if r.get("status") == "ok") if v is not None]


def _csv_text(records: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({c: (f"{r[c]:.6g}" if isinstance(r.get(c), float) else r.get(c, "")) for c in COLUMNS})
    return out.getvalue()


def _histogram_svg(values: list[float], width: int = 260, height: int = 90, bins: int = 12) -> str:
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / span * bins))] += 1
    top = max(counts)
    bar = width / bins
    rects = "".join(f"<rect x='{i * bar:.1f}' y='{height - 16 - (height - 20) * c / top:.1f}' width='{bar - 1:.1f}' "
                    f"height='{(height - 20) * c / top:.1f}' fill='#4a90d9'/>" for i, c in enumerate(counts) if c)
    labels = (f"<text x='0' y='{height - 2}' font-size='10'>{lo:.3g}</text>"
              f"<text x='{width}' y='{height - 2}' font-size='10' text-anchor='end'>{hi:.3g}</text>")
    return f"<svg width='{width}' height='{height}'>{rects}{labels}</svg>"


_SORT_SCRIPT = """<script>
document.querySelectorAll('th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], asc = th.dataset.asc !== '1';
  th.dataset.asc = asc ? '1' : '0';
  const key = tr => { const t = tr.cells[col].dataset.v ?? tr.cells[col].textContent; const n = parseFloat(t);
                      return isNaN(n) ? t : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1); }).forEach(r => body.appendChild(r));
}));
</script>"""


def _html_page(out_dir: Path, records: list[dict], title: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ("id", "status", "QC") + tuple(MEASURES.values()) +
                   ("worker", "error"))
    rows = []
    for r in records:
        qc = out_dir / r["id"] / "qc.png"
        thumb = f"<a href='{r['id']}/qc.html'><img src='{r['id']}/qc.png' height='80'></a>" if qc.is_file() else ""
        cells = [f"<td>{html.escape(r['id'])}</td>", f"<td class='{r.get('status', '')}'>{r.get('status', '')}</td>",
                 f"<td>{thumb}</td>"]
        for m in MEASURES:
            v = _number(r.get(m))
            cells.append(f"<td data-v='{v if v is not None else ''}'>{'' if v is None else f'{v:.3f}'}</td>")
        cells += [f"<td>{html.escape(str(r.get('worker', '')))}</td>", f"<td>{html.escape(r.get('error', ''))}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    plots = []
    for m, label in MEASURES.items():
        values = measure_values(records, m)
        if values:
            values_sorted = sorted(values)
            median = values_sorted[len(values) // 2] if len(values) % 2 else sum(values_sorted[len(values) // 2 - 1:len(values) // 2 + 1]) / 2
            plots.append(f"<div class='plot'><b>{html.escape(label)}</b><br>n={len(values)}, mean {sum(values) / len(values):.3g}, "
                         f"median {median:.3g}<br>{_histogram_svg(values)}</div>")
    counts = {s: sum(r.get("status") == s for r in records) for s in ("ok", "failed", "pending")}
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
            "body{font-family:sans-serif}table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
            "th{cursor:pointer;background:#eee}.failed{color:#c00}.ok{color:#080}.plot{display:inline-block;margin:8px}"
            "</style></head><body>"
            f"<h2>{html.escape(title)}</h2><p>{counts['ok']} ok, {counts['failed']} failed, {counts['pending']} pending "
            f"of {len(records)} pairs. Click a column header to sort.</p>{''.join(plots)}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{_SORT_SCRIPT}</body></html>")


def write_summary(out_dir: str | Path, records: list[dict], title: str = "impactreg cohort") -> list[Path]:
    out = Path(out_dir)
    return [atomic_write_text(out / "summary.csv", _csv_text(records)),
            atomic_write_text(out / "summary.json", json.dumps(records, indent=2) + "\n"),
            atomic_write_text(out / "summary.html", _html_page(out, records, title))]
