"""The ``companion`` command: inspect the profile, the data and the artifact cache.

    companion info               # profile, data folder, cache folder
    companion data               # datasets and where they load from
    companion artifacts          # cached artifacts of the active profile
    companion build base         # build (or rebuild with --rebuild) a pipeline stage
    companion pipeline           # every stage in one command, then a report (see companion.runner)
    companion export-web --out DIR --stages base,sft,dpo   # cached models as ONNX, for the book's page
"""

from __future__ import annotations

import argparse
import json
import sys

from companion import artifacts, describe
from companion.data import SOURCES, data_dir


def _info(_args) -> int:
    print(describe())
    print(f"data folder : {data_dir() or '(none: datasets come from the Hugging Face Hub)'}")
    print(f"cache folder: {artifacts.cache_root()}")
    return 0


def _data(_args) -> int:
    root = data_dir()
    for name, src in sorted(SOURCES.items()):
        local = [s for s, rel in src.local.items() if root and (root / rel).exists()]
        where = f"local {','.join(local)}" if local else (f"hub {src.hub_id}" if src.hub_id else "unavailable")
        print(f"{name:18s} {src.format:20s} {where:32s} {src.description}")
    return 0


def _artifacts(_args) -> int:
    names = artifacts.list_artifacts()
    if not names:
        print(f"no artifacts cached yet in {artifacts.cache_root()}")
    for name in names:
        meta = artifacts.metadata(name)
        print(f"{name:12s} {meta.get('created', '')}  {artifacts.artifact_dir(name)}")
    return 0


def _build(args) -> int:
    from companion import pipeline

    if args.stage not in pipeline.STAGES:
        print(f"unknown stage {args.stage!r}; choose from {sorted(pipeline.STAGES)}", file=sys.stderr)
        return 2
    pipeline.STAGES[args.stage](rebuild=args.rebuild)
    print(f"{args.stage}: {artifacts.artifact_dir(args.stage)}")
    return 0


def _pipeline(args) -> int:
    from companion import runner

    try:
        cfg = runner.PipelineConfig(profile=args.profile, align=args.align, output_dir=args.output,
                                    rebuild=args.rebuild, eval_prompts=args.eval_prompts, dry_run=args.dry_run,
                                    seed=args.seed, sizes=runner.parse_sizes(args.size))
        runner.run(cfg)
    except ValueError as err:
        print(f"companion pipeline: {err}", file=sys.stderr)
        return 2
    return 0


def _export_web(args) -> int:
    from companion import export

    try:
        manifest = export.export_web(args.stages, args.out, profile=args.profile, quantize=args.quantize,
                                     max_new_tokens=args.max_new_tokens, skip_missing=args.skip_missing)
    except (ValueError, FileNotFoundError) as err:
        print(f"companion export-web: {err}", file=sys.stderr)
        return 2
    info = json.loads(manifest.read_text())
    for m in info["models"]:
        print(f"{m['label']:6s} {m['file']:18s} {m['bytes'] / 1e6:5.1f} MB")
    for stage, why in info["skipped"].items():
        print(f"skipped {stage}: {why}", file=sys.stderr)
    print(f"manifest: {manifest}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="companion", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="active profile, data and cache folders").set_defaults(fn=_info)
    sub.add_parser("data", help="datasets and their sources").set_defaults(fn=_data)
    sub.add_parser("artifacts", help="cached artifacts").set_defaults(fn=_artifacts)
    b = sub.add_parser("build", help="build a pipeline stage (tokenizer, base, ...)")
    b.add_argument("stage")
    b.add_argument("--rebuild", action="store_true")
    b.set_defaults(fn=_build)
    pl = sub.add_parser("pipeline", help="tokenizer -> base -> SFT -> reward model -> alignment -> report")
    pl.add_argument("--profile", default=None, help="tiny or gpu (default: $COMPANION_PROFILE, else by hardware)")
    pl.add_argument("--align", default="dpo", help="ppo, dpo, rlaif, both (ppo and dpo) or all")
    pl.add_argument("--output", default="runs/pipeline", help="folder for report.json, report.md and plots")
    pl.add_argument("--rebuild", default=None, metavar="STAGE", help="retrain STAGE and every stage after it")
    pl.add_argument("--eval-prompts", type=int, default=250, help="held-out prompts to evaluate on (max 254)")
    pl.add_argument("--dry-run", action="store_true", help="print the plan and its estimated time, train nothing")
    pl.add_argument("--seed", type=int, default=0, help="seed of every stage's training (default 0, the book's)")
    pl.add_argument("--size", action="append", default=[], metavar="STAGE.SETTING=VALUE",
                    help="change one setting of one stage, e.g. base.max_steps=600 or ppo.steps=8 (repeatable); "
                         "such a run keeps its own artifact cache in the output folder")
    pl.set_defaults(fn=_pipeline)
    ex = sub.add_parser("export-web", help="cached chat models as ONNX files for the book's in-page chat")
    ex.add_argument("--out", required=True, help="folder to write (the book build copies it to _static/chat)")
    ex.add_argument("--stages", default="base,sft,dpo", help="comma-separated chat stages: base,sft,ppo,dpo,rlaif")
    ex.add_argument("--quantize", default="fp16", help="how weights are stored: fp16 (default), int8 or fp32")
    ex.add_argument("--profile", default=None, help="tiny or gpu (default: $COMPANION_PROFILE, else by hardware)")
    ex.add_argument("--max-new-tokens", type=int, default=120, help="length of the recorded answers and page replies")
    ex.add_argument("--skip-missing", action="store_true", help="leave out stages that are not cached (else an error)")
    ex.set_defaults(fn=_export_web)
    args = parser.parse_args(argv)
    if getattr(args, "profile", "unset") is None:
        from companion.profiles import profile

        args.profile = profile().name
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
