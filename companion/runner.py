"""``companion pipeline``: every stage of the book in one command, resumable, with a report.

    companion pipeline --profile tiny --align dpo            # tokenizer -> base -> SFT -> RM -> DPO -> report
    companion pipeline --align both --rebuild sft            # retrain SFT and every stage after it
    companion pipeline --dry-run                             # the plan and its estimated time, no training
    companion pipeline --seed 1 --size base.max_steps=600 --size ppo.steps=8   # your own variant

Each stage is a cached artifact (``companion.artifacts``), so a run that was interrupted
resumes at the first stage that is missing.  The book's recipe shares the chapters' cache; a
run with another ``--seed`` or any ``--size`` keeps its own cache inside the output folder,
so the book's artifacts are never overwritten.  The report (``report.json``, ``report.md``,
plots and sample transcripts) goes into the output folder.
"""

from __future__ import annotations

import ast
import json
import numbers
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

ALIGN_CHOICES = {"ppo": ("ppo",), "dpo": ("dpo",), "rlaif": ("rlaif",), "both": ("ppo", "dpo"),
                 "all": ("ppo", "dpo", "rlaif")}
CORE = ("tokenizer", "base", "sft", "reward")
# what each stage is built from: rebuilding a stage rebuilds everything downstream of it
PARENTS = {"tokenizer": (), "base": ("tokenizer",), "sft": ("base",), "reward": ("sft",), "ppo": ("reward",),
           "dpo": ("sft",), "rlaif": ("dpo",)}
# seconds each stage took to build from scratch on a 2-core CPU (tiny profile, measured)
TINY_SECONDS = {"tokenizer": 15, "base": 1000, "sft": 230, "reward": 200, "ppo": 260, "dpo": 330, "rlaif": 140}


@dataclass
class PipelineConfig:
    """What ``companion pipeline`` runs."""

    profile: str = "tiny"
    align: str = "dpo"
    output_dir: str = "runs/pipeline"
    rebuild: str | None = None  # a stage: it and every stage after it are trained again
    eval_prompts: int = 250
    transcripts: int = 3
    dry_run: bool = False
    seed: int = 0  # the seed of every stage's training (0: the book's runs)
    sizes: dict = field(default_factory=dict)  # {stage: {setting: value}}, see parse_sizes
    stages: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        from companion import validation
        from companion.profiles import PROFILE_NAMES

        if self.profile not in PROFILE_NAMES:
            raise ValueError(f"unknown profile {self.profile!r}; choose one of {list(PROFILE_NAMES)}")
        if self.align not in ALIGN_CHOICES:
            raise ValueError(f"unknown alignment method {self.align!r}; choose one of {list(ALIGN_CHOICES)}")
        self.stages = CORE + ALIGN_CHOICES[self.align]
        if self.rebuild is not None and self.rebuild not in self.stages:
            raise ValueError(f"--rebuild {self.rebuild!r} is not a stage of this run; its stages are "
                             f"{list(self.stages)}")
        self.eval_prompts = validation.integer("eval_prompts", self.eval_prompts)
        if not 1 <= self.eval_prompts <= 254:
            raise ValueError(f"eval_prompts must be between 1 and the 254 held-out prompts, got {self.eval_prompts}")
        self.transcripts = validation.integer("transcripts", self.transcripts, minimum=0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        self.seed = int(self.seed)
        self.dry_run = validation.flag("dry_run", self.dry_run)
        if not isinstance(self.sizes, dict) or not all(isinstance(v, dict) for v in self.sizes.values()):
            raise TypeError(f"sizes must be a dict {{stage: {{setting: value}}}}, got {self.sizes!r:.80}; "
                            "build it from 'STAGE.SETTING=VALUE' strings with runner.parse_sizes([...])")
        self.sizes = {stage: dict(values) for stage, values in self.sizes.items()}
        for stage, values in self.sizes.items():
            if stage not in self.stages or stage == "tokenizer":
                raise ValueError(f"--size {stage}.…: {stage!r} is not a trained stage of this run; its stages are "
                                 f"{list(self.stages[1:])}")
            from companion.pipeline import size_keys

            known = size_keys(stage)
            for key in values:
                if key not in known:
                    close = sorted(k for k in known if key.split("_")[0] in k)[:6]
                    raise ValueError(f"--size {stage}.{key}: {stage} has no setting {key!r}"
                                     + (f"; did you mean one of {close}?" if close else ""))

    @property
    def custom(self) -> bool:
        """True when the run differs from the book's recipe (another seed or any size)."""
        return self.seed != 0 or any(self.sizes.values())


def parse_sizes(items: list[str]) -> dict:
    """``["base.max_steps=600", "ppo.kl_coef=0.1"]`` -> ``{"base": {"max_steps": 600}, "ppo": {"kl_coef": 0.1}}``."""
    from companion import validation

    sizes: dict = {}
    for item in validation.text_list("sizes (e.g. ['base.max_steps=600'])", items, allow_empty=True):
        target, eq, raw = item.partition("=")
        stage, dot, key = target.partition(".")
        if not (eq and dot and stage and key and raw):
            raise ValueError(f"--size {item!r} must look like STAGE.SETTING=VALUE, e.g. base.max_steps=600")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a word, e.g. ppo.kl_estimator=k3
        sizes.setdefault(stage, {})[key] = value
    return sizes


def downstream(stage: str, stages: tuple[str, ...]) -> list[str]:
    """``stage`` and every stage of ``stages`` built (directly or not) from it."""
    if stage not in stages:
        raise ValueError(f"stage {stage!r} is not one of {list(stages)}")
    out = [stage]
    for s in stages:
        if s not in out and any(parent in out for parent in PARENTS[s]):
            out.append(s)
    return [s for s in stages if s in out]


def run_profile(cfg: PipelineConfig):
    """The profile the stages are built with: ``cfg.profile`` with the run's seed and sizes."""
    from companion.profiles import profile as get_profile

    return replace(get_profile(cfg.profile), seed=cfg.seed, sizes=cfg.sizes)


def _estimate(stage: str, p) -> float | None:
    """Seconds ``stage`` takes from scratch on a 2-core CPU, or None when unknown (another profile or sizes)."""
    if not p.is_tiny:
        return None
    sizes = p.sizes.get(stage, {})
    if stage == "base" and set(sizes) <= {"max_steps"}:
        return TINY_SECONDS["base"] * sizes.get("max_steps", p.pretrain_steps) / p.pretrain_steps
    return None if sizes else TINY_SECONDS[stage]


def plan(cfg: PipelineConfig) -> list[dict]:
    """One row per stage: whether it is cached or will be built, and an estimate of its time."""
    with run_cache(replace(cfg, dry_run=True)):  # a run with its own seed or sizes: what its own cache holds
        return _plan_rows(cfg)


def _plan_rows(cfg: PipelineConfig) -> list[dict]:
    from companion import artifacts, pipeline

    p = run_profile(cfg)
    rebuild = set(downstream(cfg.rebuild, cfg.stages)) if cfg.rebuild else set()
    rows = []
    for s in cfg.stages:
        if s == "base" and p.base_model:
            status = "checkpoint"  # a Hub model, not trained here
        elif s in rebuild:
            status = "rebuild"
        else:
            recipe = pipeline.RECIPES.get(s)
            fresh = artifacts.exists(s, p.name) and (
                recipe is None or artifacts.metadata(s, p.name).get("recipe") == recipe)
            status = "cached" if fresh else "build"
        estimate = _estimate(s, p) if status in ("build", "rebuild") else 0
        rows.append({"stage": s, "status": status, "estimate_s": estimate})
    return rows


def format_plan(rows: list[dict]) -> str:
    """The plan as a table, with the estimated time of what is left to train."""
    todo = [r for r in rows if r["status"] in ("build", "rebuild")]
    known = [r["estimate_s"] for r in todo if r["estimate_s"] is not None]
    lines = [f"{'stage':10s} {'status':10s} {'estimate':>9s}"]
    for r in rows:
        est = "—" if r["estimate_s"] in (None, 0) else f"{r['estimate_s'] / 60:.1f} min"
        lines.append(f"{r['stage']:10s} {r['status']:10s} {est:>9s}")
    if todo and not known:
        total = "(no estimate for this profile)"
    else:
        total = (f"estimated {sum(known) / 60:.0f} min (measured on a 2-core CPU, tiny profile)"
                 + ("" if len(known) == len(todo) else " + stages with no estimate"))
    lines.append(f"{len(todo)} stage(s) to train, {total}")
    return "\n".join(lines)


def _check_output(out: Path, profile_name: str, cfg: PipelineConfig | None = None) -> None:
    report = out / "report.json"
    if report.is_file():
        other = json.loads(report.read_text()).get("profile")
        if other != profile_name:
            raise ValueError(f"{out} holds a run of the {other!r} profile, not {profile_name!r}: choose another "
                             f"--output folder or delete that one")
    settings = out / "cache" / "settings.json"
    if cfg is not None and cfg.custom and settings.is_file():
        before = json.loads(settings.read_text())
        if before != {"seed": cfg.seed, "sizes": cfg.sizes}:
            raise ValueError(f"{out} caches stages trained with {before}, not seed={cfg.seed} sizes={cfg.sizes}: "
                             f"choose another --output folder, or delete {out / 'cache'}")


@contextmanager
def run_cache(cfg: PipelineConfig):
    """The artifact cache of the run: the book's, or (another seed or sizes) the output folder's own."""
    from companion import artifacts

    if not cfg.custom:
        yield artifacts.cache_root()
        return
    cache = (Path(cfg.output_dir) / "cache").resolve()
    if not cfg.dry_run:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "settings.json").write_text(json.dumps({"seed": cfg.seed, "sizes": cfg.sizes}))
    before = os.environ.get(artifacts.CACHE_ENV)
    os.environ[artifacts.CACHE_ENV] = str(cache)
    try:
        yield cache
    finally:
        if before is None:
            os.environ.pop(artifacts.CACHE_ENV, None)
        else:
            os.environ[artifacts.CACHE_ENV] = before


def run(cfg: PipelineConfig) -> dict:
    """Run (or resume) the pipeline, evaluate its models on held-out prompts, and write the report."""
    os.environ["COMPANION_PROFILE"] = cfg.profile  # the builders of every stage read the active profile
    p = run_profile(cfg)
    out = Path(cfg.output_dir)
    _check_output(out, p.name, cfg)
    with run_cache(cfg) as cache:
        print(f"artifact cache: {cache}")
        return _run(cfg, p, out)


def _run(cfg: PipelineConfig, p, out: Path) -> dict:
    from tqdm.auto import tqdm

    from companion import pipeline

    rows = plan(cfg)
    print(format_plan(rows))
    if cfg.dry_run:
        return {"plan": rows}
    out.mkdir(parents=True, exist_ok=True)
    left = sum(r["estimate_s"] or 0 for r in rows)
    seconds = {}
    bar = tqdm(rows, desc="pipeline", unit="stage")
    for r in bar:
        bar.set_postfix(stage=r["stage"], eta=f"{left / 60:.0f} min")
        t0 = time.perf_counter()
        pipeline.STAGES[r["stage"]](p, rebuild=r["status"] == "rebuild")
        seconds[r["stage"]] = time.perf_counter() - t0
        left = max(0, left - (r["estimate_s"] or 0))
    report = {"profile": p.name, "align": cfg.align, "stages": {
        r["stage"]: {"status": r["status"], "seconds": round(seconds[r["stage"]], 1),
                     "train_seconds": _train_seconds(r["stage"], p.name)} for r in rows}}
    report["evaluation"] = evaluate(cfg, p)
    report["total_seconds"] = round(sum(seconds.values()), 1)
    write_report(report, out, cfg)
    print(f"report: {out / 'report.md'}")
    return report


def _train_seconds(stage: str, profile_name: str) -> float | None:
    from companion import artifacts

    if not artifacts.exists(stage, profile_name):
        return None
    meta = artifacts.metadata(stage, profile_name)
    value = meta.get("train_seconds", meta.get("history", {}).get("train_seconds") if isinstance(
        meta.get("history"), dict) else None)
    return None if value is None else round(float(value), 1)


MODEL_NAMES = {"base": "base", "sft": "SFT", "ppo": "PPO", "dpo": "DPO", "rlaif": "RLAIF"}


def evaluate(cfg: PipelineConfig, p) -> dict:
    """Gold success (± SE), paired gain over SFT, RM score, KL to SFT and length, per model."""
    from companion import artifacts, evaluation, pipeline, tinyworld

    specs = tinyworld.held_out_prompts(cfg.eval_prompts)
    names = [s for s in ("base", "sft", *ALIGN_CHOICES[cfg.align]) if artifacts.exists(s, p.name)]
    labels = {MODEL_NAMES[s]: s for s in names}
    known = pipeline.stage_evaluations(labels, specs, p)
    models = {label: pipeline.STAGES[s](p) for label, s in labels.items()}
    rm, rm_tok = pipeline.reward_model(p)
    rows = evaluation.compare_policies(models, specs, rm, rm_tok, reference="SFT", known=known)
    return {name: {"success": r["success"], "success_se": r["success_se"], "vs_sft": r["vs_reference"].mean,
                   "vs_sft_se": r["vs_reference"].se, "significant": r["vs_reference"].significant,
                   "rm_score": r.get("rm_score"), "kl": r["kl"], "words": r["words"],
                   "checks": r["checks"], "samples": [{"prompt": s.instruction, "reply": t}
                                                      for s, t in zip(specs[:cfg.transcripts], r["replies"])]}
            for name, r in rows.items()}


def write_report(report: dict, out: Path, cfg: PipelineConfig) -> None:
    """``report.json``, ``report.md`` (tables and transcripts) and ``success.png``."""
    (out / "report.json").write_text(json.dumps({**report, "config": {k: v for k, v in asdict(cfg).items()
                                                                        if k != "stages"}}, indent=1))
    ev = report["evaluation"]
    lines = [f"# Pipeline report ({report['profile']} profile, align: {report['align']})", "",
             "| model | gold success | vs SFT (paired) | RM score | KL to SFT | words |", "|---|---|---|---|---|---|"]
    for name, r in ev.items():
        rm = "—" if r["rm_score"] is None else f"{r['rm_score']:.2f}"
        lines.append(f"| {name} | {r['success']:.3f} ± {r['success_se']:.3f} | {r['vs_sft']:+.3f} ± {r['vs_sft_se']:.3f}"
                     f"{' (win)' if r['significant'] else ''} | {rm} | {r['kl']:.1f} | {r['words']:.0f} |")
    lines += ["", "| stage | status | seconds this run | training seconds |", "|---|---|---|---|"]
    for name, s in report["stages"].items():
        train = "—" if s["train_seconds"] is None else f"{s['train_seconds']:.0f}"
        lines.append(f"| {name} | {s['status']} | {s['seconds']:.0f} | {train} |")
    lines += ["", "## Sample transcripts", ""]
    for name, r in ev.items():
        for t in r["samples"]:
            lines += [f"**{name}** — *{t['prompt']}*", "", "> " + t["reply"].replace("\n", " "), ""]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    names = list(ev)
    ax.bar(names, [ev[n]["success"] for n in names], yerr=[2 * ev[n]["success_se"] for n in names], capsize=4)
    ax.set(ylabel="gold success on held-out prompts (± 2 SE)", title="Gold success per stage")
    fig.tight_layout()
    fig.savefig(out / "success.png", dpi=120)
    plt.close(fig)
