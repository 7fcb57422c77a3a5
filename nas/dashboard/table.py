"""The trial table: one row per trial, sortable by any column in the browser (inline script, no libraries)."""

from __future__ import annotations

from nas.dashboard.front_plot import front
from nas.dashboard.reader import ABSOLUTE_OF, StudyView, TrialView
from nas.dashboard.style import esc, num

SORTER = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute("data-dir") !== "asc";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
      th.setAttribute("data-dir", asc ? "asc" : "desc");
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-v"), y = b.cells[col].getAttribute("data-v");
        if (x === "" || y === "") { return x === y ? 0 : (x === "" ? 1 : -1); }  // empty cells last
        var nx = Number(x), ny = Number(y), c;
        if (!isNaN(nx) && !isNaN(ny)) { c = nx - ny; } else { c = x < y ? -1 : (x > y ? 1 : 0); }
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _cell(value: object, shown: str | None = None) -> str:
    """A cell sorting on the raw value and showing `shown` (default: the value in 4 significant digits)."""
    if shown is None:
        shown = "" if value is None else num(value)
    return f'<td data-v="{esc("" if value is None else value)}">{esc(shown)}</td>'


def trial_table(view: StudyView) -> str:
    """HTML of the sortable trial table (every string escaped)."""
    knobs = list(dict.fromkeys(k for t in view.trials for k in t.params))
    absolute = [ABSOLUTE_OF.get(k, "") for k in view.compute_keys]
    on_front = {t.number for t in front(view)}
    head = ["trial", "state", "front", view.quality_label, *view.compute_keys, *absolute, "rungs", "tokens",
            "duration_s", *knobs, "error"]
    rows = []
    for t in view.trials:
        compute = t.compute or (None,) * len(view.compute_keys)
        cells = [_cell(t.number), _cell(t.state + (" (dense)" if t.is_baseline else "")),
                 _cell("yes" if t.number in on_front else ""), _cell(t.quality), *(_cell(c) for c in compute),
                 *(_cell(t.cost.get(a)) for a in absolute), _cell(len(t.reports)), _cell(t.tokens), _cell(t.duration_s),
                 *(_cell(t.params.get(k)) for k in knobs), _cell(t.error or "", (t.error or "")[:200])]
        rows.append(f'<tr class="{_row_class(t)}">{"".join(cells)}</tr>')
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    return (f'<table class="sortable" id="trials"><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _row_class(t: TrialView) -> str:
    return t.state.lower() + (" baseline" if t.is_baseline else "")
