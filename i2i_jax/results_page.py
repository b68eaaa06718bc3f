"""`index.html` of an evaluation: one table per translation direction, a row per test image
(its panels side by side and its metrics), the averages on top, worst first; a click on a
column heading sorts by it, and images that fail to load are counted and reported on top.
Static HTML with relative links: it opens from the disk."""

import html
import math
import urllib.parse

HIGHER_IS_BETTER = ("psnr", "ssim")  # Metric name prefixes; the others (L1s) are errors.

# Sorting by a column; and, once the page has loaded, the count of images that did not load in
# `body[data-broken-images]`, with a warning on top when there are any (a moved folder).
_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const broken = Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0);
  document.body.dataset.brokenImages = broken.length;
  if (broken.length) {
    const warning = document.createElement("p");
    warning.id = "broken-images";
    warning.textContent = broken.length + " images did not load, e.g. " + broken[0].alt;
    document.body.prepend(warning);
  }
});
for (const heading of document.querySelectorAll("th[data-column]")) {
  heading.addEventListener("click", () => {
    const table = heading.closest("table"), body = table.tBodies[0];
    const column = Number(heading.dataset.column);
    const ascending = heading.dataset.ascending !== "true";
    heading.dataset.ascending = ascending;
    const value = row => Number(row.cells[column].dataset.value);
    const rows = Array.from(body.rows).sort((a, b) => ascending ? value(a) - value(b)
                                                                 : value(b) - value(a));
    rows.forEach(row => body.appendChild(row));
  });
}
</script>
"""


def ranking_metric(metric_names: list[str]) -> str:
    """What a direction's rows are ordered by: PSNR against the target where the direction
    has a target, else its first metric (CycleGAN's cycle L1 on unpaired data)."""
    psnr = [m for m in metric_names if m.startswith("psnr")]
    return psnr[0] if psnr else metric_names[0]


def higher_is_better(metric: str) -> bool:
    return metric.startswith(HIGHER_IS_BETTER)


def render(title: str, summary: dict, tables: dict[str, dict]) -> str:
    """The page. `tables` maps a direction to {"panels": panel titles, "rows": [{"name",
    "images": relative paths, "metrics": {name: value}}]}; `summary` holds the averages and
    what was evaluated."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px;text-align:right}th[data-column]{cursor:pointer}"
        "img{image-rendering:pixelated;width:128px;height:auto}td.name{text-align:left}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _summary_table(summary),
    ]
    for direction, table in tables.items():
        parts.append(_direction_table(direction, table))
    parts.append(_SCRIPT)
    parts.append("</body></html>")
    return "\n".join(parts)


def _summary_table(summary: dict) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(_shown(value))}</td></tr>"
        for key, value in summary.items()
    )
    return f'<table id="summary">{rows}</table>'


def _direction_table(direction: str, table: dict) -> str:
    rows = table["rows"]
    metric_names = sorted({m for row in rows for m in row["metrics"]})
    ranked_by = ranking_metric(metric_names)
    ordered = sorted(
        rows,
        key=lambda row: (
            row["metrics"].get(ranked_by, math.nan) * (1 if higher_is_better(ranked_by) else -1)
        ),
    )
    first_metric_column = 1 + len(table["panels"])
    header = (
        "<tr><th>image</th>"
        + "".join(f"<th>{html.escape(p)}</th>" for p in table["panels"])
        + "".join(
            f'<th data-column="{first_metric_column + k}">{html.escape(m)}</th>'
            for k, m in enumerate(metric_names)
        )
        + "</tr>"
    )
    body = "".join(_row(row, metric_names) for row in ordered)
    return (
        f"<h2>{html.escape(direction)}: {len(rows)} images, worst {html.escape(ranked_by)} "
        f'first</h2><table class="results" id="{html.escape(direction)}">'
        f"<thead>{header}</thead><tbody>{body}</tbody></table>"
    )


def _row(row: dict, metric_names: list[str]) -> str:
    images = "".join(
        f'<td><img src="{html.escape(urllib.parse.quote(path))}" alt="{html.escape(path)}"></td>'
        for path in row["images"]
    )
    metrics = "".join(
        f'<td data-value="{row["metrics"][m]!r}">{row["metrics"][m]:.4f}</td>' for m in metric_names
    )
    return f'<tr><td class="name">{html.escape(row["name"])}</td>{images}{metrics}</tr>'


def _shown(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
