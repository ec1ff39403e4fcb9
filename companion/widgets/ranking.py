"""The ranking widget: order some answers (ties allowed) and see what a reward model learns from it.

The reader gives each answer a place (1 = best; equal places are ties).  The widget
shows the pairs that ranking implies, the reward model's score of each answer, the
Bradley-Terry probability and loss of every pair, and whether the reward model agrees.

All numbers come from :func:`companion.reward.pair_table`: :func:`widget_data` evaluates
it for *every* possible ranking of the answers (75 weak orderings of 4 answers, 541 of
5), so the browser only normalizes the reader's choice and looks the table up.  Nothing
needs a kernel; the first ranking is also rendered as static HTML.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from itertools import product

from companion.reward import check_ranking, pair_table
from companion.widgets.html import js_widget

MAX_ANSWERS = 5


def weak_orderings(k: int) -> list[tuple[int, ...]]:
    """Every ranking of ``k`` answers with ties, as dense places (1 = best): 1, 3, 13, 75, 541 of them."""
    if not 1 <= k <= MAX_ANSWERS:
        raise ValueError(f"the widget ranks 1 to {MAX_ANSWERS} answers, got {k}")
    return [r for r in product(range(1, k + 1), repeat=k) if set(r) == set(range(1, max(r) + 1))]


def dense_places(places) -> tuple[int, ...]:
    """Places with gaps -> dense places: (1, 3, 3, 4) -> (1, 2, 2, 3)."""
    levels = sorted(set(places))
    return tuple(levels.index(p) + 1 for p in places)


def places_to_tiers(ids, places) -> list[list[str]]:
    """Answer ids with a place each -> tiers, best first."""
    return [[i for i, p in zip(ids, places) if p == level] for level in sorted(set(places))]


def tiers_to_places(ids, tiers) -> tuple[int, ...]:
    """Tiers (best first) -> the dense place of each id in ``ids``."""
    where = {i: t + 1 for t, tier in enumerate(tiers) for i in tier}
    return tuple(where[i] for i in ids)


def ranking_summary(scores: Mapping[str, float], tiers, ties: str = "drop") -> dict:
    """The pair table of one ranking plus its mean loss and agreement rate (None when no pairs)."""
    rows = pair_table(scores, tiers, ties)
    strict = [r for r in rows if not r["tie"]]
    return {"rows": rows,
            "mean_loss": sum(r["loss"] for r in rows) / len(rows) if rows else None,
            "agreement": sum(r["agrees"] for r in strict) / len(strict) if strict else None}


def widget_data(prompt: str, answers: Mapping[str, str], scores: Mapping[str, float],
                initial: str | list | None = None, ties: str = "drop") -> dict:
    """All the widget's numbers: one pair table per possible ranking, keyed like ``"1,2,3,3"``."""
    ids = list(answers)
    missing = [i for i in ids if i not in scores]
    if missing:
        raise ValueError(f"no reward-model score for answers {missing}; pass one score per answer")
    if len(ids) < 2:
        raise ValueError(f"the ranking widget needs at least two answers, got {len(ids)}")
    tables = {}
    for places in weak_orderings(len(ids)):
        key = ",".join(map(str, places))
        tables[key] = ranking_summary(scores, places_to_tiers(ids, places), ties)
    if initial is None:
        start = dense_places([-scores[i] for i in ids])  # the reward model's own order
    else:
        start = tiers_to_places(ids, check_ranking(initial, answers))
    return {"prompt": prompt, "ids": ids, "answers": [answers[i] for i in ids],
            "scores": [float(scores[i]) for i in ids], "initial": list(start), "ties": ties, "tables": tables}


def _table_html(summary: dict) -> str:
    if not summary["rows"]:
        return "<p class='cw-muted'>All answers tied: this ranking implies no pair to learn from.</p>"
    head = ("<tr><th>preferred</th><th>over</th><th>r(pref)</th><th>r(other)</th>"
            "<th>P(pref wins)</th><th>BT loss</th><th>RM agrees?</th></tr>")
    body = ""
    for r in summary["rows"]:
        sep = "=" if r["tie"] else "&gt;"
        agree = "tie" if r["agrees"] is None else ("yes" if r["agrees"] else "<b style='color:#c0392b'>no</b>")
        body += (f"<tr><td>{html.escape(r['better'])}</td><td>{sep} {html.escape(r['worse'])}</td>"
                 f"<td>{r['r_better']:+.2f}</td><td>{r['r_worse']:+.2f}</td><td>{r['p_better']:.2f}</td>"
                 f"<td>{r['loss']:.3f}</td><td>{agree}</td></tr>")
    agreement = "n/a" if summary["agreement"] is None else f"{summary['agreement']:.0%}"
    return (f"<table>{head}{body}</table><div class='cw-row'>{len(summary['rows'])} pairs, "
            f"mean loss {summary['mean_loss']:.3f}, reward model agrees on {agreement} of strict pairs</div>")


_SCRIPT = """
const ids = DATA.ids, K = ids.length;
const sel = root.querySelectorAll('select.cw-place');
const out = root.querySelector('.cw-pairs');
function esc(s){return String(s).replace(/[&<>]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]));}
function render(){
  const raw = Array.from(sel).map(s => parseInt(s.value));
  const levels = Array.from(new Set(raw)).sort((a,b) => a-b);
  const places = raw.map(p => levels.indexOf(p) + 1);
  const t = DATA.tables[places.join(',')];
  const order = levels.map(l => ids.filter((id,i) => raw[i] === l).join(' = ')).join(' &gt; ');
  if (!t.rows.length){out.innerHTML = '<div class="cw-row">Ranking: ' + order +
      '</div><p class="cw-muted">All answers tied: this ranking implies no pair to learn from.</p>'; return;}
  let h = '<div class="cw-row">Ranking: <b>' + order + '</b></div><table><tr><th>preferred</th><th>over</th>' +
    '<th>r(pref)</th><th>r(other)</th><th>P(pref wins)</th><th>BT loss</th><th>RM agrees?</th></tr>';
  for (const r of t.rows){
    const ag = r.agrees === null ? 'tie' : (r.agrees ? 'yes' : '<b style="color:#c0392b">no</b>');
    h += '<tr><td>' + esc(r.better) + '</td><td>' + (r.tie ? '= ' : '&gt; ') + esc(r.worse) + '</td><td>' +
      (r.r_better >= 0 ? '+' : '') + r.r_better.toFixed(2) + '</td><td>' + (r.r_worse >= 0 ? '+' : '') +
      r.r_worse.toFixed(2) + '</td><td>' + r.p_better.toFixed(2) + '</td><td>' + r.loss.toFixed(3) +
      '</td><td>' + ag + '</td></tr>';
  }
  const agr = t.agreement === null ? 'n/a' : Math.round(100 * t.agreement) + '%';
  h += '</table><div class="cw-row">' + t.rows.length + ' pairs, mean loss ' + t.mean_loss.toFixed(3) +
    ', reward model agrees on ' + agr + ' of strict pairs</div>';
  out.innerHTML = h;
}
sel.forEach(s => s.addEventListener('change', render));
render();
"""


def ranking_widget(prompt: str, answers: Mapping[str, str], scores: Mapping[str, float],
                   initial: str | list | None = None, ties: str = "drop",
                   title: str = "Rank the answers (1 = best; equal places are ties)"):
    """An HTML widget: pick a place for each answer and read the pairs, BT losses and RM agreement.

    ``answers`` maps ids (``"A1"``) to texts and ``scores`` maps the same ids to reward
    model scores.  ``initial`` is the first ranking shown (default: the RM's own order).
    """
    data = widget_data(prompt, answers, scores, initial, ties)
    k = len(data["ids"])
    rows = ""
    for i, (aid, text, s, place) in enumerate(zip(data["ids"], data["answers"], data["scores"], data["initial"])):
        opts = "".join(f"<option value='{p}'{' selected' if p == place else ''}>{p}</option>"
                       for p in range(1, k + 1))
        short = text if len(text) <= 320 else text[:317] + "..."
        rows += (f"<tr><td><select class='cw-place' data-i='{i}'>{opts}</select></td>"
                 f"<td><b>{html.escape(aid)}</b></td><td>{html.escape(short)}</td><td>{s:+.2f}</td></tr>")
    start = ranking_summary(scores, places_to_tiers(data["ids"], data["initial"]), ties)
    body = (f"<div class='cw-row'><b>Prompt:</b> {html.escape(prompt)}</div>"
            f"<table><tr><th>place</th><th>id</th><th>answer</th><th>RM score</th></tr>{rows}</table>"
            f"<div class='cw-pairs'>{_table_html(start)}</div>")
    return js_widget(body, _SCRIPT, data, title)
