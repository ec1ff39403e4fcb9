"""The ranking widget: order some answers (ties allowed) and see what a reward model learns from it.

The reader gives each answer a place (1 = best; equal places are ties).  The widget
shows the pairs that ranking implies, the reward model's score of each answer, the
Bradley-Terry probability and loss of every pair, and whether the reward model agrees.

All numbers come from :func:`companion.reward.pair_table`: :func:`widget_data` evaluates
it for *every* possible ranking of the answers (75 weak orderings of 4 answers, 541 of
5), so the browser only normalizes the reader's choice and looks the table up.  Nothing
needs a kernel; the first ranking is also rendered as static HTML.

Live (:class:`RankingWidget`, Jupyter/Colab): the reader also edits, adds and removes
answers; Python rescores them (with a reward model, if given) and recomputes the one table.
Both draw the pair table with the same JavaScript.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from itertools import product

import traitlets

from companion.reward import check_ranking, pair_table, score
from companion.widgets.html import BookWidget, StaticWidget, js_widget, live_esm, live_or_static

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


# Drawing code shared by the static widget and the live one (its anywidget view).
_PAIRS = """
function esc(s){return String(s).replace(/[&<>]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]));}
function pairsHtml(tiers, t){  // tiers: ids best first; t: rows, mean_loss, agreement (ranking_summary)
  const order = tiers.map(tier => tier.map(esc).join(' = ')).join(' &gt; ');
  if (!t.rows.length) return '<div class="cw-row">Ranking: ' + order +
      '</div><p class="cw-muted">All answers tied: this ranking implies no pair to learn from.</p>';
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
  return h + '</table><div class="cw-row">' + t.rows.length + ' pairs, mean loss ' + t.mean_loss.toFixed(3) +
    ', reward model agrees on ' + agr + ' of strict pairs</div>';
}
"""

_SCRIPT = _PAIRS + """
const ids = DATA.ids;
const sel = root.querySelectorAll('select.cw-place');
const out = root.querySelector('.cw-pairs');
function render(){
  const raw = Array.from(sel).map(s => parseInt(s.value));
  const levels = Array.from(new Set(raw)).sort((a,b) => a-b);
  const places = raw.map(p => levels.indexOf(p) + 1);
  const tiers = levels.map(l => ids.filter((id,i) => raw[i] === l));
  out.innerHTML = pairsHtml(tiers, DATA.tables[places.join(',')]);
}
sel.forEach(s => s.addEventListener('change', render));
render();
"""

_LIVE_BODY = """
<div><b class='cw-title'></b> <span class='cw-muted'>(live: computed in Python)</span></div>
<div class='cw-row'><label><b>Prompt:</b></label><input type='text' class='cw-prompt' size='60'></div>
<table class='cw-answers'></table>
<div class='cw-row'><button class='cw-add'>+ add an answer</button>
  <span class='cw-muted'>place 1 = best, equal places are ties; &#9650;/&#9660; move an answer</span></div>
<div class='cw-row cw-error' style='color:#c0392b'></div>
<div class='cw-pairs'></div>
"""

_LIVE_RENDER = """
const root = document.createElement('div'); root.className = 'cw-box'; root.innerHTML = BODY; el.appendChild(root);
const q = s => root.querySelector(s), table = q('.cw-answers'), prompt = q('.cw-prompt');
q('.cw-title').textContent = model.get('title');
const fixed = model.get('scored');  // true: the reward model scores the answers (read-only here)
const fmt = x => (x >= 0 ? '+' : '') + Number(x).toFixed(2);
const dense = ps => { const lv = Array.from(new Set(ps)).sort((a, b) => a - b); return ps.map(p => lv.indexOf(p) + 1); };
function move(ps, i, dir) {  // out of a tie first, else past the neighbouring tier
  const p = ps[i], tied = ps.some((x, j) => j !== i && x === p), last = Math.max(...ps);
  if (!tied && (dir < 0 ? p === 1 : p === last)) return ps;
  const target = 2 * p + dir * (tied ? 1 : 3);
  return dense(ps.map((x, j) => j === i ? target : 2 * x));
}
function send(changes) { for (const k in changes) model.set(k, changes[k]); model.save_changes(); }
function rows() {
  const A = model.get('answers'), K = A.length;
  let h = '<tr><th>place</th><th></th><th>id</th><th>answer</th><th>RM score</th><th></th></tr>';
  for (let i = 0; i < K; i++) {
    let opts = ''; for (let p = 1; p <= K; p++) opts += '<option value="' + p + '">' + p + '</option>';
    const sc = fixed ? '<span class="cw-score"></span>' :
      '<input type="number" step="0.1" class="cw-score" style="width:5em">';
    h += '<tr><td><select class="cw-place">' + opts + '</select></td><td><button class="cw-up" title="up">&#9650;' +
      '</button><button class="cw-down" title="down">&#9660;</button></td><td><b class="cw-id"></b></td>' +
      '<td><textarea class="cw-text" rows="2" cols="48"></textarea></td><td>' + sc + '</td>' +
      '<td><button class="cw-del" title="remove">&#215;</button></td></tr>';
  }
  table.innerHTML = h;
}
function refresh() {  // the inputs follow the model; what the reader is typing in is left alone
  const A = model.get('answers'), P = model.get('places'), R = model.get('scores'), S = model.get('state');
  if (table.querySelectorAll('.cw-text').length !== A.length) rows();
  const ids = S.ids || A.map((_, i) => 'A' + (i + 1));
  if (document.activeElement !== prompt) prompt.value = model.get('prompt');
  table.querySelectorAll('tr').forEach((tr, r) => { if (r === 0) return; const i = r - 1;
    tr.querySelector('.cw-id').textContent = ids[i] || '';
    tr.querySelector('.cw-place').value = P[i] || '';
    const t = tr.querySelector('.cw-text'); if (document.activeElement !== t && t.value !== A[i]) t.value = A[i];
    const s = tr.querySelector('.cw-score'), r_ = R[i] === undefined ? '' : R[i];
    if (fixed) s.textContent = r_ === '' ? '' : fmt(r_); else if (document.activeElement !== s) s.value = r_; });
  q('.cw-error').textContent = S.error || '';
  q('.cw-pairs').innerHTML = S.error ? '' : pairsHtml(S.tiers, S);
}
table.addEventListener('change', e => {
  const i = e.target.closest('tr').rowIndex - 1, c = e.target.classList;
  if (c.contains('cw-place')) { const P = model.get('places').slice(); P[i] = +e.target.value; send({places: dense(P)}); }
  if (c.contains('cw-text')) { const A = model.get('answers').slice(); A[i] = e.target.value; send({answers: A}); }
  if (c.contains('cw-score')) { const R = model.get('scores').slice(); R[i] = +e.target.value; send({scores: R}); }
});
table.addEventListener('click', e => {
  const b = e.target.closest('button'); if (!b) return;
  const i = b.closest('tr').rowIndex - 1, P = model.get('places').slice();
  if (!b.classList.contains('cw-del')) { send({places: move(P, i, b.classList.contains('cw-up') ? -1 : 1)}); return; }
  const A = model.get('answers').slice(), R = model.get('scores').slice();
  A.splice(i, 1); P.splice(i, 1); R.splice(i, 1);
  send({answers: A, places: P.length ? dense(P) : P, scores: R});
});
q('.cw-add').onclick = () => {
  const A = model.get('answers').slice(), P = model.get('places').slice(), R = model.get('scores').slice();
  A.push(''); P.push(Math.max(0, ...P) + 1); R.push(0); send({answers: A, places: P, scores: R});
};
prompt.addEventListener('change', () => send({prompt: prompt.value}));
const names = ['answers', 'places', 'scores', 'state', 'prompt'];
names.forEach(n => model.on('change:' + n, refresh));
refresh();
return () => names.forEach(n => model.off('change:' + n, refresh));
"""


class RankingWidget(BookWidget):
    """Live ranking widget: edit the answers and their places; Python recomputes pairs, scores and losses.

    ``places`` holds each answer's place (1 = best, equal = tie).  With a reward model the
    ``scores`` are its scores of (prompt, answer), recomputed when a text changes; without
    one they are inputs the reader may edit.
    """

    _esm = live_esm(_PAIRS, "const BODY = " + json.dumps(_LIVE_BODY) + ";\n" + _LIVE_RENDER)
    _inputs = ("prompt", "answers", "places", "scores", "ties")
    title = traitlets.Unicode("Rank the answers").tag(sync=True)
    prompt = traitlets.Unicode("").tag(sync=True)
    answers = traitlets.List(traitlets.Unicode()).tag(sync=True)
    places = traitlets.List(traitlets.Int()).tag(sync=True)
    scores = traitlets.List(traitlets.Float()).tag(sync=True)
    ties = traitlets.Unicode("drop").tag(sync=True)
    scored = traitlets.Bool(False).tag(sync=True)

    def __init__(self, reward_model=None, reward_tokenizer=None, ids: Sequence[str] = (), **kwargs):
        self._rm, self._rm_tokenizer, self._first_ids = reward_model, reward_tokenizer, list(ids)
        self._rm_cache: dict[tuple[str, str], float] = {}
        super().__init__(scored=reward_model is not None, **kwargs)

    def answer_ids(self, n: int) -> list[str]:
        """Ids of ``n`` answers: the given ids first, then ``A<k>`` for added ones."""
        ids = self._first_ids[:n]
        k = 1
        while len(ids) < n:
            if f"A{k}" not in ids:
                ids.append(f"A{k}")
            k += 1
        return ids

    def _rm_scores(self) -> list[float]:
        todo = [a for a in self.answers if (self.prompt, a) not in self._rm_cache]
        if todo:
            out = score(self._rm, self._rm_tokenizer, [self.prompt] * len(todo), todo)
            self._rm_cache.update({(self.prompt, a): round(float(r), 4) for a, r in zip(todo, out)})
        return [self._rm_cache[(self.prompt, a)] for a in self.answers]

    def _compute(self) -> dict:
        n, ids = len(self.answers), self.answer_ids(len(self.answers))
        if n < 2:
            raise ValueError(f"rank at least two answers (there are {n}): add an answer")
        empty = [i for i, a in zip(ids, self.answers) if not a.strip()]
        if empty:
            raise ValueError(f"answer {', '.join(empty)} is empty: type its text or remove it")
        if len(self.places) != n or any(p < 1 for p in self.places):
            raise ValueError(f"places must give each of the {n} answers a place >= 1, got {list(self.places)}")
        places = list(dense_places(self.places))
        if places != list(self.places):
            self.places = places
        if self._rm is not None:
            self.scores = self._rm_scores()
        elif len(self.scores) != n:
            raise ValueError(f"scores must give each of the {n} answers a score, got {list(self.scores)}")
        tiers = places_to_tiers(ids, places)
        return {"ids": ids, "tiers": tiers, **ranking_summary(dict(zip(ids, self.scores)), tiers, self.ties)}

    def _error_state(self, message: str) -> dict:
        return {"error": message, "ids": self.answer_ids(len(self.answers))}


def ranking_widget(prompt: str, answers: Mapping[str, str], scores: Mapping[str, float] | None = None,
                   initial: str | list | None = None, ties: str = "drop",
                   title: str = "Rank the answers (1 = best; equal places are ties)", *, reward_model=None,
                   reward_tokenizer=None) -> RankingWidget | StaticWidget:
    """The ranking widget: pick a place for each answer and read the pairs, BT losses and RM agreement.

    ``answers`` maps ids (``"A1"``) to texts and ``scores`` maps the same ids to reward
    model scores (default: ``reward_model``'s scores).  ``initial`` is the first ranking
    shown (default: the RM's own order).  The static book shows precomputed tables; in
    Jupyter/Colab the live widget also lets the reader edit, add and remove answers, with
    scores from ``reward_model`` (with ``reward_tokenizer``) or typed in.
    """
    if (reward_model is None) != (reward_tokenizer is None):
        missing = "reward_tokenizer" if reward_tokenizer is None else "reward_model"
        raise ValueError(f"{missing} is missing: scoring answers live needs reward_model= and reward_tokenizer=")
    if not isinstance(answers, Mapping):
        raise ValueError(f"answers must be a mapping of id -> text, got {type(answers).__name__}")
    if scores is None:
        if reward_model is None:
            raise ValueError("scores is missing: give one score per answer id, or reward_model= and reward_tokenizer=")
        out = score(reward_model, reward_tokenizer, [prompt] * len(answers), list(answers.values()))
        scores = {i: round(float(r), 4) for i, r in zip(answers, out)}
    data = widget_data(prompt, answers, scores, initial, ties)

    def static_html(note: str | None) -> str:
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
        return js_widget(body, _SCRIPT, data, title, note=note).data

    return live_or_static(
        lambda: RankingWidget(reward_model, reward_tokenizer, ids=data["ids"], title=title, prompt=prompt,
                              answers=data["answers"], places=data["initial"], scores=data["scores"], ties=ties),
        static_html, "edit and add answers" + (", scored by the reward model" if reward_model is not None else ""))
