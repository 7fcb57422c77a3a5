"""The proxy's checks on a study page: its adequacy check (before the search) and its latest fidelity check."""

from __future__ import annotations

from typing import Any

from nas.dashboard.reader import StudyView
from nas.dashboard.style import esc, num
from nas.evaluation.reference import describe

VERDICT = {True: "PASSED", False: "FAILED", None: "not run"}


def adequacy_html(view: StudyView) -> str:
    """Passed / failed, the summary, each check's measurement against its threshold, and the fix."""
    a = view.adequacy
    if not a:
        return ('<p class="note" id="adequacy">No adequacy check recorded (the study predates it).</p>')
    verdict = VERDICT.get(a.get("passed"), "?")
    mode = a.get("mode", "?")
    parts = [f'<div id="adequacy"><p><b class="verdict-{verdict.lower().replace(" ", "-")}">{verdict}</b> '
             f"(adequacy={esc(mode)}): {esc(a.get('summary', ''))}</p>"]
    checks = a.get("checks") or []
    if checks:
        rows = "".join(
            f"<tr><td>{esc(c.get('name'))}</td><td>{esc(num(c.get('measured')))}</td>"
            f"<td>{esc(num(c.get('threshold')))}</td><td>{VERDICT.get(c.get('passed'), '?')}</td>"
            f"<td>{esc(c.get('meaning', ''))}</td></tr>" for c in checks)
        parts.append("<table><thead><tr><th>check</th><th>measured</th><th>threshold</th><th>result</th>"
                     f"<th>meaning</th></tr></thead><tbody>{rows}</tbody></table>")
    if a.get("fix"):
        parts.append(f"<p>fix: <code>{esc(a['fix'])}</code></p>")
    return "".join(parts) + "</div>"


def fidelity_html(view: StudyView) -> str:
    """Kendall tau of the latest `nas.export verify=true`, its k, the reference proxy and the date."""
    f: Any = view.fidelity
    if f is None:
        return ('<p class="note" id="fidelity">No fidelity check yet: python -m nas.export study=NAME verify=true '
                "retrains the front's top points at the reference proxy.</p>")
    tau = "undefined (all tied)" if f.kendall_tau is None else f"{f.kendall_tau:.4f}"
    against = (f"reference proxy {describe(f.reference)}" if f.reference
               else f"the study's proxy at {f.budget_factor:g}x its budget ({f.budget_tokens:,} tokens)")
    rows = "".join(f"<tr><td>{n}</td><td>{num(p)}</td><td>{num(r)}</td></tr>"
                   for n, p, r in zip(f.trials, f.proxy_quality, f.long_quality))
    return (f'<div id="fidelity"><p>Kendall tau-b <b>{tau}</b> over the top k={len(f.trials)} trials, retrained at '
            f"{esc(against)}; {f.created:%Y-%m-%d %H:%M} UTC (latest of {view.n_fidelity}).</p>"
            "<table><thead><tr><th>trial</th><th>proxy quality</th><th>reference quality</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>")
