"""One self-contained HTML page per suite (and one for `--summary`): `<output>/report/<suite>.html`.

The page holds the tables (bold, underline and † as in LaTeX, footnotes), the comparison with the paper when one was
made, the suite's figures (PNG, embedded as data URIs: no network, no server), and one row per run: status, seed,
the hyper-parameters that differ from the method's defaults, its metrics, its loss terms and logged statistics over
the epochs as small inline SVG plots, the tail of its log and a failure's reason. Rendered with Jinja2 with
autoescaping on: everything that comes from the store or the data (class, domain and method names, paths, log text,
hyper-parameter values, plugin labels) is text, never markup.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment
from markupsafe import Markup, escape

from . import store
from .catalogue import method_label
from .cost import run_cost
from .provenance import run_code
from .render import rendered_rows
from .spec import RunSpec
from .tables import METHOD_HEADER, TableModel

LOG_TAIL_LINES = 12

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ccc; text-align: center; font-size: 0.92em; }
th:first-child, td:first-child { text-align: left; }
.caption { font-size: 0.88em; color: #444; max-width: 1100px; margin: 0.2em 0; }
h2 { font-size: 1.15em; margin: 1.4em 0 0.3em; }
.notes { font-size: 0.85em; color: #555; margin-top: -1em; }
.runs td { vertical-align: top; text-align: left; font-size: 0.82em; }
.status-done { color: #0a7a2a; } .status-failed { color: #b00020; font-weight: bold; }
pre { white-space: pre-wrap; max-width: 520px; max-height: 12em; overflow: auto; background: #f6f6f6;
      margin: 0; padding: 0.3em; font-size: 0.8em; }
figure { margin: 1em 0; } figure img { max-width: min(100%, 1000px); border: 1px solid #ddd; }
details summary { cursor: pointer; }
.warning { color: #8a5a00; background: #fff6e0; padding: 0.4em 0.6em; max-width: 1100px; }
</style></head>
<body>
<h1>{{ title }}</h1>
<p>{{ subtitle }}</p>
{% for warning in warnings %}<p class="warning">{{ warning }}</p>
{% endfor %}{% for table in tables %}
<section class="result-table">
<h2>{{ table.title }}</h2>
<p class="caption">{{ table.body }}</p>
<table>
<thead><tr>{% for h in table.header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in table.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table>
{% if table.footnotes %}<div class="notes">
{% for marker, text in table.footnotes %}<sup>{{ marker }}</sup> {{ text }}<br>{% endfor %}
</div>{% endif %}
</section>
{% endfor %}
{% if cost %}<section class="cost-table"><h2>{{ cost.title }}</h2>
<p class="caption">{{ cost.body }}</p>
<table><thead><tr>{% for h in cost.header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in cost.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table></section>{% endif %}
{% if figures %}<h2>Figures</h2>
{% for figure in figures %}<figure><img alt="{{ figure.name }}" src="{{ figure.uri }}">
<figcaption>{{ figure.name }}</figcaption></figure>
{% endfor %}{% endif %}
{% if runs %}<h2>Runs ({{ runs|length }})</h2>
<table class="runs"><thead><tr><th>method</th><th>setting, pair</th><th>seed</th><th>status</th>
<th>differs from the defaults</th><th>metrics</th><th>over the epochs</th><th>log</th></tr></thead><tbody>
{% for run in runs %}<tr>
<td>{{ run.method }}</td><td>{{ run.where }}</td><td>{{ run.seed }}</td>
<td class="status-{{ run.status }}">{{ run.status }}
{%- if run.device_time %}<br><small>{{ run.device_time }}</small>{% endif %}{% if run.code %}<br><small>code {{ run.code }}</small>{% endif %}{% if run.reason %}<br><pre>{{ run.reason }}</pre>{% endif %}</td>
<td>{% for item in run.differs %}{{ item }}<br>{% else %}–{% endfor %}</td>
<td>{% for name, value in run.metrics %}{{ name }} {{ value }}<br>{% endfor %}</td>
<td>{% for name, svg, last in run.curves %}<div>{{ svg }} {{ name }} {{ last }}</div>{% endfor %}</td>
<td>{% if run.log %}<details><summary>tail</summary><pre>{{ run.log }}</pre></details>{% endif %}</td>
</tr>{% endfor %}</tbody></table>{% endif %}
</body></html>
"""


@dataclass
class RunView:
    method: str
    where: str
    seed: int
    status: str
    reason: str = ""
    differs: list[str] = field(default_factory=list)
    metrics: list[tuple[str, str]] = field(default_factory=list)
    curves: list[tuple[str, Markup, str]] = field(default_factory=list)
    log: str = ""
    device_time: str = ""                  # "3.2 min on NVIDIA H200" (benchmark/cost.py)
    code: str = ""                         # the code that made it (benchmark/provenance.py)


def sparkline(values: list[float], width: int = 90, height: int = 18) -> Markup:
    """A small inline SVG polyline of `values` (the page draws it; no script)."""
    if not values:
        return Markup("")
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / max(1, len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 1 - (v - low) / span * (height - 2):.1f}"
                      for i, v in enumerate(values))
    return Markup(f'<svg width="{width}" height="{height}" role="img"><polyline fill="none" stroke="#2a6fdb" '
                  f'stroke-width="1.3" points="{points}"/></svg>')


def _table_view(model: TableModel) -> dict:
    rows = rendered_rows(model, lambda text: escape(text), bold=lambda t: Markup(f"<strong>{t}</strong>"),
                          underline=lambda t: Markup(f"<u>{t}</u>"), superscript=lambda m: Markup(f"<sup>{m}</sup>"),
                          with_notes=lambda numbers, notes: Markup(" / ").join(
                              Markup(f"{n}<br><small>({note})</small>") if note is not None else n
                              for n, note in zip(numbers, notes)))
    return {"title": model.spec.title, "body": model.caption_body,
            "header": [METHOD_HEADER, *model.columns], "rows": [[Markup(cell) for cell in row] for row in rows],
            "footnotes": model.footnotes}


def run_view(spec: RunSpec, output_root: Path, defaults: dict | None) -> RunView:
    """What the page shows of one run, read from its folder."""
    run_dir = spec.run_dir(output_root)
    status = store.run_status(run_dir)
    view = RunView(method=method_label(spec.method),
                   where=f"{spec.setting}, {spec.query_domain}→{spec.retrieval_domain}", seed=spec.seed, status=status, reason=store.failure_reason(run_dir) if status == "failed" else "")
    if defaults is not None:
        view.differs = [f"{k}={spec.hparams.get(k)}" for k in sorted(spec.hparams)
                        if spec.hparams.get(k) != defaults.get(k)]
    if status == "done":
        cost = run_cost(run_dir)
        if cost is not None:
            view.device_time = f"{cost.seconds / 60:.1f} min on {cost.device}"
        view.code = run_code(run_dir)
        try:
            stored = json.loads((run_dir / "metrics.json").read_text())
        except (OSError, ValueError):
            stored = {}
        metrics = stored.get("metrics", {})
        view.metrics = [(name, f"{value:.4f}" if isinstance(value, float) else str(value))
                        for name, value in metrics.items() if not name.startswith("diag_")]
        history = stored.get("history", [])
        names = [k for k in dict.fromkeys(k for entry in history for k in entry) if k not in ("epoch", "seconds")]
        for name in names:
            values = [float(entry[name]) for entry in history if isinstance(entry.get(name), (int, float))]
            view.curves.append((name, sparkline(values), f"{values[-1]:.4g}" if values else ""))
    log = run_dir / "log.txt"
    if log.is_file():
        view.log = "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
    return view


def _cost_view(cost) -> dict | None:
    """The cost table (benchmark/cost.py's `cost_table` frame) as the page's header and text rows."""
    if cost is None or cost.empty:
        return None
    header = [str(c).replace("_", " ") for c in cost.columns]
    rows = [[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row] for row in cost.itertuples(index=False)]
    return {"title": "Device time of the finished runs", "header": header, "rows": rows,
            "body": "Each run's measured wall-clock seconds (setup, every epoch, evaluation) on the device it ran on, "
                    "summed per method; device hours, mean minutes per run, mean seconds per epoch."}


def write_html(suite_name: str, models: list[TableModel], out_dir: Path, *, runs: list[RunView] = (),
               figures: list[Path] = (), subtitle: str = "", cost=None, warnings: list[str] = ()) -> Path:
    """Write <out_dir>/<suite_name>.html (atomically) and return its path. `cost`: a `cost.cost_table` frame;
    `warnings`: lines shown under the title (runs of one table made by different code)."""
    environment = Environment(autoescape=True)
    page = environment.from_string(TEMPLATE).render(
        title=f"Results: {suite_name}", subtitle=subtitle, tables=[_table_view(m) for m in models],
        figures=[{"name": p.name, "uri": "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()}
                 for p in figures],
        runs=list(runs), cost=_cost_view(cost), warnings=list(warnings))
    path = Path(out_dir) / f"{suite_name}.html"
    store.atomic_write_text(path, page)
    return path
