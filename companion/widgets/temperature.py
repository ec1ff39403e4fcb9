"""The temperature widget: move T (and top-k / top-p), watch the next-token distribution change.

Static (the book): Python does the model work once: for each prompt it takes the next-token
logits, computes the exact distribution at every temperature of a grid with
:func:`companion.sampling.next_token_probs` (over the whole vocabulary), and keeps the
``top_n`` most likely tokens plus the mass of all the others.  It also samples a few
continuations at some temperatures.  The browser only looks these numbers up and applies
top-k / top-p to the kept tokens, so the widget works without a kernel.

Live (:class:`TemperatureWidget`, Jupyter/Colab): the reader types any prompt; every change
of a setting recomputes the exact filtered distribution (:func:`next_token_view`) and fresh
samples in Python.  Both draw with the same JavaScript.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
import traitlets

from companion.sampling import entropy, generate, next_token_logits, next_token_probs
from companion.widgets.html import BookWidget, StaticWidget, js_widget, live_esm, live_or_static

_NO_MODEL = "Precomputed; for live mode (your own prompt) pass model= and tokenizer= in Jupyter or Colab."
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

# Drawing code shared by the static widget and the live one (its anywidget view).
_DRAW = """
const esc = s => String(s).replace(/[&<>]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]));
function drawBars(root, tokens, probs) {  // the 15 most likely tokens, one bar each
  let rows = '';
  for (let i = 0; i < Math.min(15, tokens.length); i++) {
    const w = Math.round(400 * probs[i]);
    rows += '<tr><td><code>' + esc(tokens[i]) + '</code></td><td><span class="cw-bar" style="width:' + w +
      'px;opacity:' + (probs[i] > 0 ? 1 : 0.15) + '"></span> ' + (100 * probs[i]).toFixed(1) + '%</td></tr>';
  }
  root.querySelector('.cw-bars').innerHTML = '<table>' + rows + '</table>';
}
function drawSamples(root, prompt, label, samples) {
  root.querySelector('.cw-samples').innerHTML = '<div class="cw-muted">' + esc(label) + '</div>' + samples
    .map(s => '<div>&#8226; <i>' + esc(prompt) + '</i>' + esc(s) + '</div>').join('');
}
function drawToken(root, tokens, probs) {  // one draw from the listed tokens (the rest: "outside")
  let r = Math.random(), i = 0;
  for (; i < probs.length; i++) { r -= probs[i]; if (r <= 0) break; }
  root.querySelector('.cw-drawn').innerHTML = i < probs.length ? 'drew <code>' + esc(tokens[i]) + '</code>' :
    'drew a token outside the top list';
}
"""

_SCRIPT = _DRAW + """
const q = s => root.querySelector(s);
const sel = q('.cw-prompt'), tS = q('.cw-t'), kS = q('.cw-k'), pS = q('.cw-p');
DATA.prompts.forEach((p, i) => { const o = document.createElement('option'); o.value = i;
  o.textContent = p.prompt; sel.appendChild(o); });
const T = DATA.prompts[0].temperatures; tS.max = T.length - 1; tS.value = T.indexOf(1) >= 0 ? T.indexOf(1) : 0;
kS.max = DATA.prompts[0].tokens.length;
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
  drawBars(root, P.tokens, c.probs);
  const keys = Object.keys(P.samples);  // "0.0", "0.5", ... as written by Python
  const near = keys.reduce((a, b) => Math.abs(+b - T[c.ti]) < Math.abs(+a - T[c.ti]) ? b : a);
  drawSamples(root, P.prompt, 'T = ' + near, P.samples[near]);
}
q('.cw-draw').onclick = () => { const c = current(); drawToken(root, c.P.tokens, c.probs); };
[sel, tS, kS, pS].forEach(e => e.addEventListener('input', render));
render();
"""

_LIVE_BODY = """
<div><b class='cw-title'></b> <span class='cw-muted'>(live: the model runs in Python)</span></div>
<div class='cw-row'><label>Prompt</label><input type='text' class='cw-prompt' size='48'>
  <span class='cw-muted'>(Enter to run)</span></div>
<div class='cw-row'><label>Temperature <b class='cw-tval'></b></label>
  <input type='range' class='cw-t' min='0' max='2' step='0.05'></div>
<div class='cw-row'><label>top-k <b class='cw-kval'></b></label>
  <input type='range' class='cw-k' min='0' max='50' step='1'>
  <label>top-p <b class='cw-pval'></b></label>
  <input type='range' class='cw-p' min='0.05' max='1' step='0.05'></div>
<div class='cw-row cw-error' style='color:#c0392b'></div>
<div class='cw-row cw-muted cw-stats'></div>
<div class='cw-bars'></div>
<div class='cw-row'><button class='cw-draw'>Sample a next token</button> <span class='cw-drawn'></span></div>
<div class='cw-row'><b>Continuations sampled by the model at these settings</b>
  <button class='cw-resample'>New samples</button><div class='cw-samples'></div></div>
"""

_LIVE_RENDER = """
const root = document.createElement('div'); root.className = 'cw-box'; root.innerHTML = BODY; el.appendChild(root);
const q = s => root.querySelector(s);
q('.cw-title').textContent = model.get('title');
const prompt = q('.cw-prompt'), tS = q('.cw-t'), kS = q('.cw-k'), pS = q('.cw-p');
const send = (name, value) => { model.set(name, value); model.save_changes(); q('.cw-stats').textContent = 'computing...'; };
function labels() {
  const t = +tS.value, k = +kS.value, p = +pS.value;
  q('.cw-tval').textContent = t.toFixed(2) + (t === 0 ? ' (greedy)' : '');
  q('.cw-kval').textContent = k === 0 ? 'off' : k;
  q('.cw-pval').textContent = p >= 1 ? 'off' : p.toFixed(2);
}
function inputs() {
  prompt.value = model.get('prompt'); tS.value = model.get('temperature');
  kS.value = model.get('top_k'); pS.value = model.get('top_p'); labels();
}
function draw() {
  const S = model.get('state');
  q('.cw-error').textContent = S.error || '';
  if (S.error) { q('.cw-stats').textContent = ''; q('.cw-bars').innerHTML = ''; q('.cw-samples').innerHTML = '';
    return; }
  q('.cw-stats').textContent = 'entropy of the distribution sampled from: ' + S.entropy.toFixed(2) +
    ' nats; tokens that can be drawn: ' + S.support + ' of ' + S.vocab;
  drawBars(root, S.tokens, S.probs);
  drawSamples(root, S.prompt, S.settings, S.samples);
}
prompt.addEventListener('change', () => send('prompt', prompt.value));
[tS, kS, pS].forEach(e => e.addEventListener('input', labels));
tS.addEventListener('change', () => send('temperature', +tS.value));
kS.addEventListener('change', () => send('top_k', +kS.value));
pS.addEventListener('change', () => send('top_p', +pS.value));
q('.cw-resample').onclick = () => send('seed', model.get('seed') + 1000);
q('.cw-draw').onclick = () => { const S = model.get('state'); if (!S.error) drawToken(root, S.tokens, S.probs); };
const onInputs = () => inputs();
model.on('change:state', draw);
['prompt', 'temperature', 'top_k', 'top_p'].forEach(n => model.on('change:' + n, onInputs));
inputs(); draw();
return () => { model.off('change:state', draw);
  ['prompt', 'temperature', 'top_k', 'top_p'].forEach(n => model.off('change:' + n, onInputs)); };
"""


def next_token_view(logits, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                    top_n: int = 40) -> dict:
    """The distribution actually sampled from (:func:`~companion.sampling.next_token_probs`), for display.

    Returns ``{"ids": the top_n most likely ids, "probs": their probabilities, "rest": the
    mass of all other tokens, "entropy": of the whole distribution, "support": how many
    tokens can be drawn, "vocab": vocabulary size}``.  ``top_k=None``/``top_p=None``: no filter.
    """
    logits = torch.as_tensor(logits).float()
    if logits.ndim != 1:
        raise ValueError(f"next_token_view needs 1-D logits (one position), got shape {tuple(logits.shape)}")
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    p = next_token_probs(logits, temperature, top_k, top_p)
    ids = torch.argsort(logits, descending=True, stable=True)[: min(top_n, logits.shape[0])]
    kept = p[ids]
    return {"ids": ids.tolist(), "probs": [round(float(x), 6) for x in kept],
            "rest": max(0.0, round(1.0 - float(kept.sum()), 6)), "entropy": round(entropy(p), 4),
            "support": int((p > 0).sum()), "vocab": int(logits.shape[0])}


def _filters(temperature: float, top_k: int, top_p: float) -> tuple[float, int | None, float | None]:
    """The widget's settings (``top_k=0``, ``top_p=1``: off) as sampling arguments, checked."""
    filters = (temperature, None if top_k == 0 else top_k, None if top_p == 1.0 else top_p)
    next_token_probs(torch.zeros(2), *filters)  # raises a ValueError naming a bad setting
    return filters


def _settings_label(temperature: float, top_k: int | None, top_p: float | None) -> str:
    k = "off" if top_k is None else str(top_k)
    p = "off" if top_p is None or top_p >= 1 else f"{top_p:.2f}"
    return f"T = {temperature:g}{' (greedy)' if temperature == 0 else ''}, top-k {k}, top-p {p}"


class TemperatureWidget(BookWidget):
    """Live temperature widget: Python recomputes the next-token distribution and samples on each change.

    ``top_k = 0`` and ``top_p = 1`` mean "no filter" (as the sliders show them).
    """

    _esm = live_esm(_DRAW, "const BODY = " + json.dumps(_LIVE_BODY) + ";\n" + _LIVE_RENDER)
    _inputs = ("prompt", "temperature", "top_k", "top_p", "seed", "n_samples", "max_new_tokens")
    title = traitlets.Unicode("Temperature, top-k and top-p").tag(sync=True)
    prompt = traitlets.Unicode("").tag(sync=True)
    temperature = traitlets.Float(1.0).tag(sync=True)
    top_k = traitlets.Int(0).tag(sync=True)
    top_p = traitlets.Float(1.0).tag(sync=True)
    seed = traitlets.Int(0).tag(sync=True)
    n_samples = traitlets.Int(2).tag(sync=True)
    max_new_tokens = traitlets.Int(30).tag(sync=True)

    def __init__(self, model, tokenizer, top_n: int = 40, **kwargs):
        self._lm, self._tokenizer, self._top_n = model, tokenizer, top_n
        self._logits: tuple[str, torch.Tensor] | None = None  # (prompt, logits) of the last prompt
        super().__init__(**kwargs)

    def _compute(self) -> dict:
        temperature, top_k, top_p = _filters(self.temperature, self.top_k, self.top_p)
        if self.n_samples < 0 or self.max_new_tokens < 0:
            raise ValueError(f"n_samples and max_new_tokens must be >= 0, got {self.n_samples} and "
                             f"{self.max_new_tokens}")
        if self._logits is None or self._logits[0] != self.prompt:
            self._logits = (self.prompt, next_token_logits(self._lm, self._tokenizer, self.prompt))
        view = next_token_view(self._logits[1], temperature, top_k, top_p, self._top_n)
        view["tokens"] = [_token_label(self._tokenizer, i) for i in view.pop("ids")]
        n = min(1, self.n_samples) if temperature == 0 else self.n_samples  # greedy: one answer
        samples = [generate(self._lm, self._tokenizer, self.prompt, self.max_new_tokens, temperature, top_k,
                            top_p, seed=self.seed + i) for i in range(n)]
        return {"prompt": self.prompt, **view, "samples": samples,
                "settings": _settings_label(temperature, top_k, top_p)}


def temperature_widget(data: dict | None = None, title: str = "Temperature, top-k and top-p", *, model=None,
                       tokenizer=None, prompt: str | None = None, temperature: float = 1.0, top_k: int = 0,
                       top_p: float = 1.0, n_samples: int = 2, max_new_tokens: int = 30,
                       seed: int = 0) -> TemperatureWidget | StaticWidget:
    """The temperature widget: live with ``model`` and ``tokenizer``, else static over ``data``.

    ``data`` is :func:`widget_data` output, what the static book shows (default with a model:
    ``widget_data(model, tokenizer, [prompt])``).  With a model, Jupyter and Colab show the
    live widget: the reader types a prompt (first: ``prompt``, default data's first one) and
    sets temperature / top-k (0 = off) / top-p (1 = off); Python recomputes the distribution
    and ``n_samples`` continuations of ``max_new_tokens`` tokens (seeds ``seed``, ``seed + 1``, ...).
    """
    if (model is None) != (tokenizer is None):
        missing = "tokenizer" if tokenizer is None else "model"
        raise ValueError(f"{missing} is missing: live mode needs both model= and tokenizer=")
    if data is None and model is None:
        raise ValueError("data is missing: pass widget_data(model, tokenizer, prompts), or model= and tokenizer=")
    if data is not None and not (isinstance(data, dict) and data.get("prompts")):
        raise ValueError("data must be widget_data(...) output: a dict with a non-empty 'prompts' list")
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    _filters(temperature, top_k, top_p)
    for name, value in (("n_samples", n_samples), ("max_new_tokens", max_new_tokens), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    if model is None:
        return StaticWidget(js_widget(_BODY, _SCRIPT, data, title, note=_NO_MODEL).data)
    if prompt is None:
        prompt = data["prompts"][0]["prompt"] if data is not None else "Once upon a time, there was a"
    if data is None:
        data = widget_data(model, tokenizer, [prompt], max_new_tokens=max_new_tokens, seed=seed)
    return live_or_static(
        lambda: TemperatureWidget(model, tokenizer, title=title, prompt=prompt, temperature=float(temperature),
                                  top_k=top_k, top_p=float(top_p), n_samples=n_samples,
                                  max_new_tokens=max_new_tokens, seed=seed),
        lambda note: js_widget(_BODY, _SCRIPT, data, title, note=note).data, "type your own prompt")


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
