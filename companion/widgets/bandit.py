"""The bandit widget: choose epsilon, scrub through time, watch the estimates and the regret.

:func:`bandit_widget_data` runs epsilon-greedy on the 10-armed testbed for a few values of
epsilon (a pure, tested function); :func:`bandit_widget` shows the result as an HTML/JS
widget that works in the static book; :func:`bandit_figure` is the matplotlib fallback.
In Jupyter/Colab the same drawing code runs in :class:`BanditWidget`, which runs new
episodes in Python for the reader's own epsilon and seed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import traitlets

from companion.rl.bandits import EpsilonGreedy, GaussianBandit, run_bandit
from companion.widgets.html import BookWidget, StaticWidget, js_widget, live_esm, live_or_static


def bandit_widget_data(epsilons: Sequence[float] = (0.0, 0.01, 0.1, 0.3), k: int = 10, steps: int = 1000,
                       runs: int = 200, seed: int = 0, snapshot_every: int = 25, points: int = 100) -> dict:
    """Regret curves (mean over ``runs`` bandits) and run 0's estimates over time, per epsilon.

    Returns a JSON-ready dict: ``means`` (run 0's true arm means), ``steps`` (x values of
    the curves), ``snap_steps``, the settings (``runs``, ``k``, ``seed``, ``snapshot_every``), and per epsilon (key ``str(eps)``) ``regret``,
    ``optimal`` (fraction of runs pulling the best arm), ``Q`` (run 0's estimates at each
    snapshot) and ``N`` (run 0's pull counts at each snapshot).
    """
    if not epsilons:
        raise ValueError("epsilons is empty: pass at least one value in [0, 1], e.g. (0.0, 0.1)")
    if points < 2 or steps < points:
        raise ValueError(f"need steps >= points >= 2, got steps={steps}, points={points}")
    idx = np.unique(np.linspace(0, steps - 1, points).round().astype(int))
    data: dict = {"epsilons": [float(e) for e in epsilons], "steps": (idx + 1).tolist(), "runs": runs,
                  "k": k, "seed": seed, "snapshot_every": snapshot_every, "curves": {}}
    for eps in epsilons:
        bandit = GaussianBandit.testbed(k=k, runs=runs, seed=seed)
        out = run_bandit(EpsilonGreedy(k=k, runs=runs, epsilon=float(eps)), bandit, steps, seed=seed + 1,
                         snapshot_every=snapshot_every)
        onehot = np.eye(k)[out.actions[:, 0]]
        counts = np.cumsum(onehot, axis=0)[out.snapshot_steps - 1]
        data["curves"][str(float(eps))] = {
            "regret": np.round(out.mean_regret()[idx], 3).tolist(),
            "optimal": np.round(out.optimal_fraction()[idx], 3).tolist(),
            "Q": np.round(out.snapshots[:, 0, :], 3).tolist(),
            "N": counts.astype(int).tolist(),
        }
        data["snap_steps"] = out.snapshot_steps.tolist()
        data["means"] = np.round(bandit.means[0], 3).tolist()
    return data


_BODY = """
<div class='cw-row'>epsilon:
  <span class='cw-eps'></span></div>
<div class='cw-row'><label>after step <b class='cw-tlabel'></b></label>
  <input type='range' class='cw-t' min='0' value='0' style='width:320px'></div>
<div style='display:flex; gap:16px; flex-wrap:wrap'>
 <div><div class='cw-muted'>run 0: estimate Q(a) (bar) vs true mean (line), pulls N(a)</div>
   <svg class='cw-arms' width='340' height='230'></svg></div>
 <div><div class='cw-muted'>cumulative regret, mean over <span class='cw-runs'></span> bandits</div>
   <svg class='cw-reg' width='340' height='230'></svg></div>
</div>
<div class='cw-row cw-muted cw-summary'></div>
"""

# Drawing code shared by the static widget and the live one (its anywidget view).
_DRAW = """
function drawBandit(root, DATA) {
const NS='http://www.w3.org/2000/svg', q=s=>root.querySelector(s);
const epsBox=q('.cw-eps'), slider=q('.cw-t'), arms=q('.cw-arms'), reg=q('.cw-reg');
q('.cw-runs').textContent=DATA.runs;
slider.max=DATA.snap_steps.length-1; slider.value=DATA.snap_steps.length-1;
const keyOf=e=>{const s=String(e); return s.includes('.')?s:s+'.0';};
let eps=keyOf(DATA.selected ?? DATA.epsilons[Math.min(2, DATA.epsilons.length-1)]);
const colors=['#e45756','#f58518','#4c78a8','#54a24b','#b279a2','#9d755d'];
function el(tag, attrs, parent, text){const e=document.createElementNS(NS,tag);
  for(const k in attrs) e.setAttribute(k, attrs[k]); if(text!==undefined) e.textContent=text;
  parent.appendChild(e); return e;}
epsBox.innerHTML='';
DATA.epsilons.forEach((e,i)=>{const b=document.createElement('button'); b.textContent=String(e);
  b.style.marginRight='4px'; b.onclick=()=>{eps=keyOf(e); draw();}; b.dataset.key=keyOf(e); epsBox.appendChild(b);});
function draw(){
  epsBox.querySelectorAll('button').forEach(b=>{b.style.fontWeight=(b.dataset.key===eps)?'bold':'normal';});
  const s=+slider.value, c=DATA.curves[eps];
  q('.cw-tlabel').textContent=DATA.snap_steps[s];
  arms.innerHTML=''; const K=DATA.k, W=340, H=230, top=10, bot=40;
  const vals=DATA.means.concat(...c.Q); let lo=Math.min(0,...vals)-0.2, hi=Math.max(0,...vals)+0.2;
  const y=v=>top+(hi-v)/(hi-lo)*(H-top-bot), bw=(W-20)/K;
  el('line',{x1:10,x2:W-10,y1:y(0),y2:y(0),stroke:'#999'},arms);
  const best=DATA.means.indexOf(Math.max(...DATA.means));
  for(let a=0;a<K;a++){const x=10+a*bw, q=c.Q[s][a];
    el('rect',{x:x+3,width:bw-6,y:Math.min(y(q),y(0)),height:Math.abs(y(q)-y(0)),
      fill:a===best?'#54a24b':'#4c78a8',opacity:0.8},arms);
    el('line',{x1:x+1,x2:x+bw-1,y1:y(DATA.means[a]),y2:y(DATA.means[a]),stroke:'#000','stroke-width':2},arms);
    el('text',{x:x+bw/2,y:H-24,'text-anchor':'middle','font-size':10},arms,'a'+a);
    el('text',{x:x+bw/2,y:H-10,'text-anchor':'middle','font-size':10,fill:'#666'},arms,c.N[s][a]);}
  reg.innerHTML=''; const xs=DATA.steps, T=xs[xs.length-1];
  let rmax=0; for(const k in DATA.curves) rmax=Math.max(rmax,...DATA.curves[k].regret);
  const px=t=>35+(t/T)*(W-45), py=r=>H-25-(r/rmax)*(H-40);
  el('line',{x1:35,x2:W-10,y1:H-25,y2:H-25,stroke:'#999'},reg); el('line',{x1:35,x2:35,y1:10,y2:H-25,stroke:'#999'},reg);
  el('text',{x:30,y:15,'text-anchor':'end','font-size':10},reg,Math.round(rmax));
  el('text',{x:W-10,y:H-10,'text-anchor':'end','font-size':10},reg,'step '+T);
  DATA.epsilons.forEach((e,i)=>{const k=keyOf(e), r=DATA.curves[k].regret;
    const pts=xs.map((t,j)=>px(t)+','+py(r[j])).join(' ');
    el('polyline',{points:pts,fill:'none',stroke:colors[i%colors.length],'stroke-width':k===eps?3:1,
      opacity:k===eps?1:0.45},reg);
    el('text',{x:px(T)-2,y:py(r[r.length-1])-3,'text-anchor':'end','font-size':10,fill:colors[i%colors.length]},reg,'eps='+e);});
  const ts=DATA.snap_steps[s]; el('line',{x1:px(ts),x2:px(ts),y1:10,y2:H-25,stroke:'#aaa','stroke-dasharray':'3,3'},reg);
  const j=xs.findIndex(t=>t>=ts), jj=j<0?xs.length-1:j;
  q('.cw-summary').textContent='epsilon='+eps+': mean regret '+c.regret[jj].toFixed(1)+
    ' after '+xs[jj]+' steps; best arm pulled by '+(100*c.optimal[jj]).toFixed(0)+'% of runs at that step.';
}
slider.oninput=draw; draw();
}
"""

_SCRIPT = _DRAW + "drawBandit(root, DATA);"

_LIVE_CONTROLS = """
<div><b class='cw-title'></b> <span class='cw-muted'>(live: new episodes run in Python)</span></div>
<div class='cw-row'><label>your epsilon</label><input type='number' class='cw-my-eps' min='0' max='1' step='0.01'
  style='width:6em'> <label>seed</label><input type='number' class='cw-seed' step='1' style='width:6em'>
  <button class='cw-run'>Run</button> <span class='cw-muted cw-status'></span></div>
<div class='cw-row cw-error' style='color:#c0392b'></div>
<div class='cw-plots'></div>
"""

_LIVE_RENDER = """
const root = document.createElement('div'); root.className = 'cw-box'; root.innerHTML = CONTROLS; el.appendChild(root);
const q = s => root.querySelector(s), epsIn = q('.cw-my-eps'), seedIn = q('.cw-seed');
q('.cw-title').textContent = model.get('title');
function inputs() { epsIn.value = model.get('epsilon'); seedIn.value = model.get('seed'); }
function draw() {
  const S = model.get('state'), plots = q('.cw-plots');
  q('.cw-status').textContent = ''; q('.cw-error').textContent = S.error || '';
  if (S.error) return;
  plots.innerHTML = BODY; drawBandit(plots, S.data);
}
q('.cw-run').onclick = () => { q('.cw-status').textContent = 'running...';
  model.set('epsilon', +epsIn.value); model.set('seed', Math.round(+seedIn.value)); model.save_changes(); };
model.on('change:state', draw); model.on('change:epsilon', inputs); model.on('change:seed', inputs);
inputs(); draw();
return () => { model.off('change:state', draw); model.off('change:epsilon', inputs); model.off('change:seed', inputs); };
"""

_LIVE_LIMIT = 2_000_000  # steps x runs per epsilon: about a second of NumPy


class BanditWidget(BookWidget):
    """Live bandit widget: the reader's epsilon and seed run new episodes in Python, beside ``epsilons``.

    ``state["data"]`` is :func:`bandit_widget_data` output for ``epsilons`` plus ``epsilon``
    (curves are cached per epsilon and seed), drawn by the static widget's code.
    """

    _esm = live_esm(_DRAW, f"const BODY = {json.dumps(_BODY)}, CONTROLS = {json.dumps(_LIVE_CONTROLS)};\n"
                    + _LIVE_RENDER)
    _inputs = ("epsilon", "seed", "steps", "runs")
    title = traitlets.Unicode("Epsilon-greedy on a 10-armed bandit").tag(sync=True)
    epsilon = traitlets.Float(0.1).tag(sync=True)
    seed = traitlets.Int(0).tag(sync=True)
    steps = traitlets.Int(1000).tag(sync=True)
    runs = traitlets.Int(200).tag(sync=True)
    epsilons = traitlets.List(traitlets.Float(), [0.0, 0.01, 0.1, 0.3]).tag(sync=True)

    def __init__(self, k: int = 10, snapshot_every: int = 25, points: int = 100, **kwargs):
        self._k, self._snapshot_every, self._points = k, snapshot_every, points
        self._cache: dict[tuple, dict] = {}
        super().__init__(**kwargs)

    def _curves(self, eps: float) -> dict:
        key = (eps, self.seed, self.steps, self.runs)
        if key not in self._cache:
            self._cache[key] = bandit_widget_data((eps,), k=self._k, steps=self.steps, runs=self.runs,
                                                  seed=self.seed, snapshot_every=self._snapshot_every,
                                                  points=min(self._points, self.steps))
        return self._cache[key]

    def _compute(self) -> dict:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1] (the chance of a random arm), got {self.epsilon}")
        if self.steps < 2 or self.runs < 1 or self.steps * self.runs > _LIVE_LIMIT:
            raise ValueError(f"need steps >= 2, runs >= 1 and steps x runs <= {_LIVE_LIMIT:,}, got "
                             f"steps={self.steps}, runs={self.runs}")
        epsilons = sorted({float(e) for e in self.epsilons} | {float(self.epsilon)})
        parts = [self._curves(e) for e in epsilons]
        data = {**parts[0], "epsilons": epsilons, "selected": float(self.epsilon),
                "curves": {k: v for p in parts for k, v in p["curves"].items()}}
        return {"data": data}


def bandit_widget(data: dict | None = None, *, epsilon: float | None = None,
                  **kwargs) -> BanditWidget | StaticWidget:
    """The bandit widget; ``kwargs`` go to :func:`bandit_widget_data` (when ``data`` is None).

    The static book shows ``data``.  In Jupyter/Colab the live widget also runs new episodes
    in Python for the reader's epsilon (first: ``epsilon``, default the highlighted one) and seed.
    """
    data = data or bandit_widget_data(**kwargs)
    missing = [k for k in ("epsilons", "steps", "runs", "k", "curves", "snap_steps", "means") if k not in data]
    if missing:
        raise ValueError(f"data lacks {missing}: build it with bandit_widget_data(...)")
    eps_list = data["epsilons"]
    if epsilon is None:
        epsilon = eps_list[min(2, len(eps_list) - 1)]
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be a number in [0, 1], got {epsilon!r}")
    title = "Epsilon-greedy on a 10-armed bandit"
    snap = data["snap_steps"]
    every = data.get("snapshot_every", snap[1] if len(snap) > 1 else 25)
    return live_or_static(
        lambda: BanditWidget(k=data["k"], snapshot_every=every, points=len(data["steps"]), title=title,
                             epsilon=float(epsilon), seed=int(data.get("seed", 0)), steps=data["steps"][-1],
                             runs=data["runs"], epsilons=[float(e) for e in eps_list]),
        lambda note: js_widget(_BODY, _SCRIPT, data, title=title, note=note).data,
        "your own epsilon and seed")


def bandit_figure(data: dict):
    """Static matplotlib version: regret curves per epsilon, and run 0's final estimates."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for eps in data["epsilons"]:
        c = data["curves"][str(float(eps))]
        ax1.plot(data["steps"], c["regret"], label=f"epsilon = {eps}")
    ax1.set(xlabel="step", ylabel="cumulative regret", title=f"mean over {data['runs']} bandits")
    ax1.legend()
    arms = np.arange(data["k"])
    width = 0.8 / len(data["epsilons"])
    for i, eps in enumerate(data["epsilons"]):
        ax2.bar(arms + i * width - 0.4 + width / 2, data["curves"][str(float(eps))]["Q"][-1], width,
                label=f"epsilon = {eps}")
    ax2.scatter(arms, data["means"], color="black", marker="_", s=300, zorder=3, label="true mean")
    ax2.set(xlabel="arm", ylabel="estimate Q(a)", title=f"run 0 after {data['snap_steps'][-1]} steps")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig
