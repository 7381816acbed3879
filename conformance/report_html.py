"""The comparison matrix as one self-contained HTML page.

Everything is in the file: inline CSS, a small inline script for the filters,
no fonts, images or scripts from anywhere else (a Content-Security-Policy meta
tag forbids the page any network access).  The table is rendered here, so the
page reads fine with scripting off; the script only filters rows:

- area: one area, or all,
- only differences: rows whose outcomes differ between runs,
- text: a substring of the case ID or a clause ID.

Each cell is a ``<details>`` element: the outcome, and when opened the
failure message or skip reason, the clauses with level and section, the
negotiated features and the full failure text.
"""

from __future__ import annotations

from html import escape

from conformance.compare import NOT_RUN, Cell, Matrix, Row, format_counts

WORDS = {"passed": "pass", "failed": "FAIL", "error": "ERROR", "wedged": "WEDGED",
         "deviation": "deviation", "skipped": "skip", "reject": "reject", NOT_RUN: "—"}

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; }
h1 { font-size: 1.4em; margin: 0 0 .5em; } h2 { font-size: 1.15em; margin: 1.2em 0 .4em; }
table { border-collapse: collapse; margin-bottom: 1em; }
th, td { border: 1px solid #c9c9c9; padding: 3px 6px; vertical-align: top; text-align: left; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.num { text-align: right; }
tr.area-row td { background: #e4ebf5; font-weight: 600; }
code { font-size: 12px; }
.o-passed { background: #e3f4e1; } .o-failed, .o-error, .o-wedged { background: #f9d6d5; }
.o-deviation { background: #fff0c2; } .o-skipped { background: #eeeeee; color: #555; }
.o-reject { background: #dcecf9; } .o-not-run { background: #fff; color: #999; }
tr.differs td.case { border-left: 4px solid #c0392b; }
details summary { cursor: pointer; white-space: nowrap; }
details .more { max-width: 42em; white-space: normal; font-size: 12px; }
details pre { white-space: pre-wrap; max-height: 20em; overflow: auto; background: #fafafa;
              border: 1px solid #ddd; padding: 4px; font-size: 11px; }
#controls { padding: .4em 0; }
#controls label { margin-right: 1.2em; }
.muted { color: #666; }
"""

SCRIPT = """
(function () {
  var area = document.getElementById('f-area');
  var diff = document.getElementById('f-diff');
  var text = document.getElementById('f-text');
  var shown = document.getElementById('shown');
  function apply() {
    var wantArea = area.value, onlyDiff = diff.checked;
    var needle = text.value.trim().toLowerCase();
    var visible = 0, perArea = {};
    document.querySelectorAll('tr.case').forEach(function (tr) {
      var ok = (wantArea === '' || tr.dataset.area === wantArea) &&
               (!onlyDiff || tr.dataset.differs === '1') &&
               (needle === '' || tr.dataset.search.indexOf(needle) >= 0);
      tr.hidden = !ok;
      if (ok) { visible += 1; perArea[tr.dataset.area] = true; }
    });
    document.querySelectorAll('tr.area-row').forEach(function (tr) {
      tr.hidden = !perArea[tr.dataset.area];
    });
    shown.textContent = String(visible);
  }
  area.addEventListener('change', apply);
  diff.addEventListener('change', apply);
  text.addEventListener('input', apply);
  document.querySelectorAll('a.area-link').forEach(function (a) {
    a.addEventListener('click', function (ev) {
      ev.preventDefault(); area.value = a.dataset.area; apply();
      document.getElementById('matrix').scrollIntoView();
    });
  });
  apply();
})();
"""


def _cell(cell: Cell) -> str:
    cls = "o-" + cell.outcome.replace(" ", "-")
    word = WORDS.get(cell.outcome, cell.outcome)
    more = []
    if cell.note:
        more.append(f"<div>{escape(cell.note)}</div>")
    if cell.clauses:
        more.append("<div class='muted'>clauses: " + escape(", ".join(cell.clauses)) + "</div>")
    if cell.features:
        more.append(f"<div class='muted'>negotiated: {escape(cell.features)}</div>")
    if cell.details and cell.details.strip() != cell.note.strip():
        more.append(f"<pre>{escape(cell.details)}</pre>")
    title = escape(cell.note or word, quote=True)
    if not more:
        return f"<td class='{cls}' title='{title}'>{escape(word)}</td>"
    return (f"<td class='{cls}' title='{title}'><details><summary>{escape(word)}</summary>"
            f"<div class='more'>{''.join(more)}</div></details></td>")


def _row(row: Row) -> str:
    search = " ".join([row.case, *row.clauses]).lower()
    return (f"<tr class='case{' differs' if row.differs else ''}' "
            f"data-area='{escape(row.area, quote=True)}' data-differs='{int(row.differs)}' "
            f"data-search='{escape(search, quote=True)}'>"
            f"<td class='case'><code>{escape(row.name)}</code></td>"
            f"<td><code>{escape(', '.join(row.clauses))}</code></td>"
            + "".join(_cell(c) for c in row.cells) + "</tr>")


def to_html(matrix: Matrix, title: str = "Conformance comparison") -> str:
    runs = matrix.runs
    n = len(runs)
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        "<h2>Runs</h2><table id='runs'><tr><th>run</th><th>target</th><th>QEMU</th>"
        "<th>device</th><th>started</th><th>results file</th></tr>",
    ]
    for r in runs:
        parts.append(f"<tr><td>{escape(r.label)}</td><td>{escape(r.name)} ({escape(r.kind)})"
                     f"</td><td>{escape(r.qemu_version or '—')}</td>"
                     f"<td><code>{escape(r.device or '—')}</code></td>"
                     f"<td>{escape(r.started)}</td><td><code>{escape(r.source)}</code></td></tr>")
    parts.append("</table>")
    parts.append("<h2>Per area</h2><table id='areas'><tr><th>area</th><th>differ</th>"
                 + "".join(f"<th>{escape(r.label)}</th>" for r in runs) + "</tr>")
    for area in matrix.areas:
        parts.append(f"<tr><td><a href='#matrix' class='area-link' "
                     f"data-area='{escape(area, quote=True)}'>{escape(area)}</a></td>"
                     f"<td class='num'>{matrix.area_differences(area)}</td>"
                     + "".join(f"<td>{escape(format_counts(c))}</td>"
                               for c in matrix.counts(area)) + "</tr>")
    parts.append(f"<tr><td><b>all</b></td><td class='num'><b>{len(matrix.differing)}</b></td>"
                 + "".join(f"<td>{escape(format_counts(c))}</td>" for c in matrix.counts())
                 + "</tr></table>")
    options = "".join(f"<option value='{escape(a, quote=True)}'>{escape(a)}</option>"
                      for a in matrix.areas)
    parts.append(
        "<h2>Cases</h2><div id='controls'>"
        f"<label>area <select id='f-area'><option value=''>all areas</option>{options}"
        "</select></label>"
        "<label><input type='checkbox' id='f-diff'> only differences</label>"
        "<label>case or clause <input type='search' id='f-text' size='24'></label>"
        f"<span>showing <b id='shown'>{len(matrix.rows)}</b> of {len(matrix.rows)} cases; "
        f"{len(matrix.differing)} differ</span></div>")
    parts.append("<table id='matrix'><thead><tr><th>case</th><th>clauses</th>"
                 + "".join(f"<th>{escape(r.label)}</th>" for r in runs) + "</tr></thead><tbody>")
    for area in matrix.areas:
        rows = matrix.area_rows(area)
        parts.append(f"<tr class='area-row' data-area='{escape(area, quote=True)}'>"
                     f"<td colspan='{n + 2}'>{escape(area)}: {len(rows)} cases, "
                     f"{matrix.area_differences(area)} differ</td></tr>")
        parts.extend(_row(r) for r in rows)
    parts.append("</tbody></table>")
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"
