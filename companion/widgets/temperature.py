"""The temperature widget: move T (and top-k / top-p), watch the next-token distribution change.

Python does the model work once: for each prompt it takes the next-token logits, computes
the exact distribution at every temperature of a grid with
:func:`companion.sampling.next_token_probs` (over the whole vocabulary), and keeps the
``top_n`` most likely tokens plus the mass of all the others.  It also samples a few
continuations at some temperatures.  The browser only looks these numbers up and applies
top-k / top-p to the kept tokens, so the widget works in the static book without a kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from companion.sampling import entropy, generate, next_token_logits, next_token_probs
from companion.widgets.html import js_widget

DEFAULT_TEMPERATURES = tuple(round(0.1 * i, 1) for i in range(0, 21))  # 0.0, 0.1, ..., 2.0


def distribution_table(logits, temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
                       top_n: int = 40) -> dict:
    """Exact next-token probabilities of the ``top_n`` most likely tokens at each temperature.

    Returns ``{"ids": [...top_n ids, most likely first],
    "probs": [[p(id) for id in ids] for T in temperatures], "rest": [1 - sum(row)],
    "entropy": [entropy of the full distribution at T]}``.  Temperature never changes the
    ranking, so one list of ids serves every row.
    """
    logits = torch.as_tensor(logits).float()
    if logits.ndim != 1:
        raise ValueError(f"distribution_table needs 1-D logits (one position), got shape {tuple(logits.shape)}")
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    ids = torch.argsort(logits, descending=True, stable=True)[: min(top_n, logits.shape[0])]
    rows, rest, ents = [], [], []
    for t in temperatures:
        p = next_token_probs(logits, temperature=t)
        kept = p[ids]
        rows.append([round(float(x), 6) for x in kept])
        rest.append(max(0.0, round(1.0 - float(kept.sum()), 6)))
        ents.append(round(entropy(p), 4))
    return {"ids": ids.tolist(), "temperatures": list(temperatures), "probs": rows, "rest": rest,
            "entropy": ents}


def _token_label(tokenizer, token_id: int) -> str:
    text = tokenizer.decode([token_id])
    return text.replace("\n", "\\n") if text.strip() else repr(text)


def widget_data(model, tokenizer, prompts: Sequence[str], temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
                top_n: int = 40, sample_temperatures: Sequence[float] = (0.0, 0.5, 1.0, 1.5),
                n_samples: int = 2, max_new_tokens: int = 30, seed: int = 0) -> dict:
    """Everything the browser needs, for each prompt: the distribution table and sample texts."""
    if not prompts:
        raise ValueError("widget_data needs at least one prompt")
    out = {"prompts": []}
    for prompt in prompts:
        table = distribution_table(next_token_logits(model, tokenizer, prompt), temperatures, top_n)
        table["tokens"] = [_token_label(tokenizer, i) for i in table.pop("ids")]
        samples = {}
        for t in sample_temperatures:
            n = 1 if t == 0 else n_samples
            samples[str(t)] = [generate(model, tokenizer, prompt, max_new_tokens, temperature=t, seed=seed + i)
                               for i in range(n)]
        out["prompts"].append({"prompt": prompt, **table, "samples": samples})
    return out


_BODY = """
<div class='cw-row'><label>Prompt</label><select class='cw-prompt'></select></div>
<div class='cw-row'><label>Temperature <b class='cw-tval'></b></label>
  <input type='range' class='cw-t' min='0' step='1'></div>
<div class='cw-row'><label>top-k <b class='cw-kval'></b></label>
  <input type='range' class='cw-k' min='0' step='1' value='0'>
  <label>top-p <b class='cw-pval'></b></label>
  <input type='range' class='cw-p' min='0.05' max='1' step='0.05' value='1'></div>
<div class='cw-row cw-muted cw-stats'></div>
<div class='cw-bars'></div>
<div class='cw-row'><button class='cw-draw'>Sample a next token</button> <span class='cw-drawn'></span></div>
<div class='cw-row'><b>Continuations sampled by the model</b>
  <span class='cw-muted'>(at the nearest precomputed temperature, no top-k/top-p)</span>
  <div class='cw-samples'></div></div>
"""

_SCRIPT = """
const q = s => root.querySelector(s);
const sel = q('.cw-prompt'), tS = q('.cw-t'), kS = q('.cw-k'), pS = q('.cw-p');
DATA.prompts.forEach((p, i) => { const o = document.createElement('option'); o.value = i;
  o.textContent = p.prompt; sel.appendChild(o); });
const T = DATA.prompts[0].temperatures; tS.max = T.length - 1; tS.value = T.indexOf(1) >= 0 ? T.indexOf(1) : 0;
kS.max = DATA.prompts[0].tokens.length;
const esc = s => s.replace(/[&<>]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]));
function current() {
  const P = DATA.prompts[+sel.value], ti = +tS.value, k = +kS.value, topp = +pS.value;
  let probs = P.probs[ti].slice(), rest = P.rest[ti];
  const norm = () => { const z = probs.reduce((a, b) => a + b, 0) + rest;
    probs = probs.map(x => x / z); rest = rest / z; };
  if (k > 0) { probs = probs.map((x, i) => i < k ? x : 0); rest = 0; norm(); }
  if (topp < 1) { let before = 0;  // keep a token while the mass ranked above it is < p
    probs = probs.map(x => { const keep = before < topp - 1e-7; before += x; return keep ? x : 0; });
    if (before >= topp - 1e-7) { rest = 0; }  // the nucleus closes inside the listed tokens
    norm(); }
  return {P, ti, probs, rest};
}
function render() {
  const c = current(), P = c.P;
  q('.cw-tval').textContent = T[c.ti].toFixed(1) + (T[c.ti] === 0 ? ' (greedy)' : '');
  q('.cw-kval').textContent = +kS.value === 0 ? 'off' : kS.value;
  q('.cw-pval').textContent = +pS.value >= 1 ? 'off' : (+pS.value).toFixed(2);
  const support = c.probs.filter(x => x > 0).length;
  q('.cw-stats').textContent = 'entropy of the model distribution at this T: ' + P.entropy[c.ti].toFixed(2) +
    ' nats; tokens that can be drawn (of the top ' + P.tokens.length + '): ' + support +
    (c.rest > 0 ? ' + others (' + (100 * c.rest).toFixed(1) + '%)' : '');
  let rows = '';
  for (let i = 0; i < Math.min(15, P.tokens.length); i++) {
    const w = Math.round(400 * c.probs[i]);
    rows += '<tr><td><code>' + esc(P.tokens[i]) + '</code></td><td><span class="cw-bar" style="width:' + w +
      'px;opacity:' + (c.probs[i] > 0 ? 1 : 0.15) + '"></span> ' + (100 * c.probs[i]).toFixed(1) + '%</td></tr>';
  }
  q('.cw-bars').innerHTML = '<table>' + rows + '</table>';
  const keys = Object.keys(P.samples);  // "0.0", "0.5", ... as written by Python
  const near = keys.reduce((a, b) => Math.abs(+b - T[c.ti]) < Math.abs(+a - T[c.ti]) ? b : a);
  q('.cw-samples').innerHTML = '<div class="cw-muted">T = ' + near + '</div>' + P.samples[near]
    .map(s => '<div>&#8226; <i>' + esc(P.prompt) + '</i>' + esc(s) + '</div>').join('');
}
q('.cw-draw').onclick = () => { const c = current(); let r = Math.random(), i = 0;
  for (; i < c.probs.length; i++) { r -= c.probs[i]; if (r <= 0) break; }
  q('.cw-drawn').innerHTML = i < c.probs.length ? 'drew <code>' + esc(c.P.tokens[i]) + '</code>' : 'drew a token outside the top list'; };
[sel, tS, kS, pS].forEach(e => e.addEventListener('input', render));
render();
"""


def temperature_widget(data: dict, title: str = "Temperature, top-k and top-p"):
    """The HTML/JS widget for ``widget_data(...)`` output (works without a kernel)."""
    return js_widget(_BODY, _SCRIPT, data, title=title)


def plot_temperatures(data: dict, prompt_index: int = 0, temperatures: Sequence[float] = (0.5, 1.0, 1.5),
                      top: int = 10):
    """Static figure: the next-token bar chart at a few temperatures, side by side."""
    P = data["prompts"][prompt_index]
    fig, axes = plt.subplots(1, len(temperatures), figsize=(4 * len(temperatures), 3.6), sharey=True)
    for ax, t in zip(axes, temperatures):
        if t not in P["temperatures"]:
            raise ValueError(f"temperature {t} is not in the precomputed grid {P['temperatures']}")
        row = P["probs"][P["temperatures"].index(t)]
        ax.barh(range(top)[::-1], row[:top], color="#4c78a8")
        ax.set_yticks(range(top)[::-1], [repr(s) if s.startswith(" ") else s for s in P["tokens"][:top]])
        ax.set_title(f"T = {t}  (entropy {P['entropy'][P['temperatures'].index(t)]:.2f} nats)")
        ax.set_xlabel("probability")
    fig.suptitle(f"Next token after {P['prompt']!r}")
    fig.tight_layout()
    return fig
