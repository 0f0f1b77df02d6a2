"""The report's claims section: the seeds' checkable claims against moelab (moelab.claims), as the verdict counts
per seed and the table of every claim; `figures` gives the counts for summary.json.

The rows are the study's own (study["claims"], written by the study at its end) when it has them, else they are
computed here from the study (the engine's rows need nothing else)."""

from __future__ import annotations

from typing import Any

VERDICT_STYLE = {  # inline, so the section needs nothing of the page's stylesheet
    "confirmed": "background:#dcfce7;color:#166534",
    "contradicted": "background:#dc2626;color:#fff",
    "not_reproducible": "background:#fef9c3;color:#854d0e",
    "out_of_scope": "background:#f3f4f6;color:#374151",
}
HEADERS = ["claim", "seed", "seed's words", "seed says", "moelab", "unit", "verdict", "basis", "setting", "why",
           "tolerance rule"]


def claim_rows(study: dict) -> list[dict]:
    """The study's claims rows, else the claims table computed from the study."""
    rows = study.get("claims") if isinstance(study, dict) else None
    if isinstance(rows, list) and rows and all(isinstance(r, dict) and "verdict" in r for r in rows):
        return rows
    from moelab.claims import claims_table

    return claims_table(study if isinstance(study, dict) else None)


def figures(study: dict) -> dict:
    """Key figures for summary.json: the number of claims, how many carry a moelab figure, the verdict counts (all
    and per seed) and the ids of the contradicted claims."""
    from moelab.claims import verdict_counts

    rows = claim_rows(study)
    return {
        "claims": len(rows),
        "claims_with_moelab_value": sum(r.get("moelab_value") is not None for r in rows),
        "claims_verdicts": verdict_counts(rows),
        "claims_verdicts_by_seed": {seed: verdict_counts([r for r in rows if r.get("seed") == seed])
                                    for seed in sorted({str(r.get("seed")) for r in rows})},
        "claims_contradicted": [r.get("id") for r in rows if r.get("verdict") == "contradicted"],
    }


def _verdict(html_mod: Any, verdict: str) -> Any:
    style = VERDICT_STYLE.get(verdict, "")
    return html_mod._Raw(f"<span class='badge' style='{style}'>{html_mod._e(verdict)}</span>", verdict)


def _figure(html_mod: Any, value: Any, show: Any) -> Any:
    """A figure shown compactly on the page, exact in the CSV."""
    return html_mod._Raw(html_mod._e(show(value)), "" if value is None else repr(value), numeric=True)


def section(study: dict, page: Any) -> str:
    """Verdict counts per seed, then every claim with the seed's words, moelab's figure, the setting, the basis,
    why and the tolerance rule."""
    from moelab.basis import BASIS_TINY
    from moelab.claims import VERDICTS, verdict_counts
    from moelab.claims.text import show
    from moelab.report import html as h

    rows = claim_rows(study)
    if not rows:
        return h._not_run("No claims were checked.")
    seeds = sorted({str(r.get("seed")) for r in rows})
    counts = [[v, *(verdict_counts([r for r in rows if r.get("seed") == s])[v] for s in seeds),
               verdict_counts(rows)[v]] for v in VERDICTS]
    valued = sum(r.get("moelab_value") is not None for r in rows)
    measured = any(r.get("basis") == BASIS_TINY and r.get("moelab_value") is not None for r in rows)
    intro = (f"<p>{len(rows)} checkable numeric claims of the two seeds; {valued} carry a moelab figure (the engine's "
             "for the seed's setting, or a measurement of this study). A verdict compares the two under the rule "
             "beside it; a tiny-scale measurement judges a direction only, never a magnitude. "
             + ("" if measured else "No measured figure was available: the measured claims are not_reproducible "
                "here. ") + "</p>")
    out = [intro, page.table("claims_verdicts", ["verdict", *(f"seed {s}" for s in seeds), "all"], counts,
                             h.BASIS_MODELLED_TINY, "Verdicts per seed")]
    table = [[r.get("id"), r.get("seed"), f"\u201c{r.get('quote')}\u201d", _figure(h, r.get("seed_value"), show),
              _figure(h, r.get("moelab_value"), show), r.get("unit"), _verdict(h, str(r.get("verdict"))),
              r.get("basis"), r.get("setting"), r.get("why"), r.get("rule")] for r in rows]
    out.append(page.table("claims", HEADERS, table, h.BASIS_MODELLED_TINY,
                          "The seeds' claims against moelab: modelled by the engine, exact, or measured at tiny "
                          "scale (the basis column says which)"))
    return "".join(out)
