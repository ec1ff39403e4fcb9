"""The book's artifacts, each built once and cached: tokenizer -> base model -> ...

Every function here returns a cached artifact or builds it (showing progress), so any
chapter can start from what the previous chapters produced, even when run on its own.
"""

from __future__ import annotations

import tempfile
from dataclasses import fields, replace
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from companion import artifacts
from companion.data import load_dataset
from companion.models import build_causal_lm, load_pretrained
from companion.pretrain import PretrainConfig, pretrain
from companion.profiles import Profile
from companion.profiles import profile as active_profile
from companion.seeding import seed_everything
from companion.tokenizer import ensure_chat_template, train_bpe_tokenizer

# How the SFT and reward artifacts are made; a cache built by an older recipe is rebuilt.
RECIPES = {"sft": "tinyworld-topic-swaps-2|judge-plurals-1|steps-250"}
RECIPES["reward"] = RECIPES["sft"] + "|sft-2+base-2"


def stage_sizes(stage: str, profile: Profile | None = None) -> dict:
    """The profile's overrides of ``stage``'s sizes (``Profile.sizes``; empty in the book's runs)."""
    p = profile or active_profile()
    return dict(p.sizes.get(stage, {}))


def size_keys(stage: str) -> set[str]:
    """The settings ``--size STAGE.KEY=VALUE`` may change: the fields of the config the stage trains with."""
    from trl import DPOConfig, RewardConfig, SFTConfig

    from companion.ppo import PPOConfig

    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)} - {"output_dir"}

    keys = {"base": names(PretrainConfig) - {"resume_from_checkpoint", "stop_after_step", "save_steps"},
            "sft": names(SFTConfig), "ppo": names(PPOConfig),
            "reward": names(RewardConfig) | set(reward_sizes()), "dpo": names(DPOConfig) | set(dpo_sizes()),
            "rlaif": names(DPOConfig)}
    if stage not in keys:
        raise ValueError(f"stage {stage!r} has no sizes to set; the stages with sizes are {sorted(keys)}")
    return keys[stage]


def tokenizer(profile: Profile | None = None, rebuild: bool = False):
    """Tiny: a byte-level BPE trained on the TinyStories sample.  gpu: the checkpoint's."""
    p = profile or active_profile()
    if p.base_model:
        tok = AutoTokenizer.from_pretrained(p.base_model)
        ensure_chat_template(tok)
        return tok

    def build(out: Path) -> dict:
        texts = load_dataset("tinystories", split="train", limit=None)["text"]
        tok = train_bpe_tokenizer(texts, vocab_size=p.vocab_size)
        tok.save_pretrained(out)
        return {"vocab_size": len(tok), "trained_on": "tinystories/train"}

    path = artifacts.get_or_build("tokenizer", build, rebuild=rebuild, profile_name=p.name)
    return AutoTokenizer.from_pretrained(path)


def base_config(profile: Profile | None = None, output_dir: str | None = None) -> PretrainConfig:
    """The pretraining recipe of the base model every later chapter starts from.

    Tiny: 1200 steps of 16 x 256 tokens (~4.9M tokens, ~10 passes over the TinyStories
    sample) at a high learning rate (5e-3), with a long warmup (120 steps) and a cosine
    decay to zero.  Both numbers were measured, not guessed: after 300 steps (or with a
    short warmup) the loss looks fine but the model has not learned to copy a name from
    its context, the skill that instruction following needs in chapter 4.
    """
    p = profile or active_profile()
    sizes = stage_sizes("base", p)
    steps = sizes.pop("max_steps", p.pretrain_steps)
    cfg = PretrainConfig(max_steps=steps, batch_size=p.batch_size,
                         context_length=p.context_length, learning_rate=p.learning_rate,
                         warmup_steps=max(1, steps // 10), eval_steps=max(1, steps // 8),
                         logging_steps=10, max_eval_blocks=64, bf16=p.bf16, seed=p.seed,
                         output_dir=output_dir or tempfile.mkdtemp(prefix="companion-pretrain-"))
    return replace(cfg, **sizes)


def build_base_model(out: Path, profile: Profile | None = None, cfg: PretrainConfig | None = None) -> dict:
    """Pretrain on TinyStories and save the model (+ tokenizer) to ``out``.

    Tiny: a model built from ``profile.model_config`` with our BPE tokenizer, from scratch.
    With a checkpoint (``profile.base_model``, gpu): continued pretraining of that model.
    """
    p = profile or active_profile()
    cfg = cfg or base_config(p)
    seed_everything(cfg.seed)
    if p.base_model:
        model, tok = load_pretrained(p.base_model, device=p.device)
    else:
        tok = tokenizer(p)
        model = build_causal_lm(tok, p, seed=cfg.seed)
    train = list(load_dataset("tinystories", split="train", limit="profile")["text"])
    held = list(load_dataset("tinystories", split="validation", limit="profile")["text"])
    history = pretrain(model, tok, train, held, cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"history": history, "final_eval_loss": history.get("final_eval_loss"),
            "tokens_per_s": history.get("tokens_per_s"), "train_seconds": history.get("train_seconds"),
            "recipe": {k: v for k, v in vars(cfg).items() if k != "output_dir"}}


def base_model(profile: Profile | None = None, rebuild: bool = False):
    """(model, tokenizer) of the pretrained base model: a Hub checkpoint (gpu) or ours (tiny)."""
    p = profile or active_profile()
    if p.base_model:
        return load_pretrained(p.base_model, device=p.device)
    path = artifacts.get_or_build("base", lambda out: build_base_model(out, p), rebuild=rebuild,
                                  profile_name=p.name)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def sft_data(profile: Profile | None = None):
    """SFT conversations: the tiny world (tiny); Alpaca plus the tiny world (gpu)."""
    from datasets import concatenate_datasets

    from companion import tinyworld

    p = profile or active_profile()
    world = tinyworld.sft_dataset().select_columns(["messages"])
    if p.is_tiny:
        return world
    alpaca = load_dataset("alpaca", split="train").select_columns(["messages"])
    return concatenate_datasets([alpaca, world]).shuffle(seed=0)


def build_sft_model(out: Path, profile: Profile | None = None, **config) -> dict:
    """Fine-tune the base model on :func:`sft_data` with ``sft.sft_config()`` and save it to ``out``."""
    import tempfile

    from companion import sft

    p = profile or active_profile()
    seed_everything(p.seed)
    model, tok = base_model(p)
    with tempfile.TemporaryDirectory() as run_dir:
        args = sft.sft_config(run_dir, profile=p, **{**stage_sizes("sft", p), **config})
        result = sft.train_sft(model, tok, sft_data(p), args=args)
    result.model.save_pretrained(out)
    tok.save_pretrained(out)
    # held-out gold success is measured once per stage by stage_evaluations, which the chapters share
    return {"history": result.history, "train_seconds": result.train_seconds}


def sft_model(profile: Profile | None = None, rebuild: bool = False):
    """(model, tokenizer) of the instruction-tuned (SFT) model, cached as artifact "sft"."""
    p = profile or active_profile()
    path = artifacts.get_or_build("sft", lambda out: build_sft_model(out, p), rebuild=rebuild,
                                  profile_name=p.name, recipe=RECIPES["sft"])
    model = AutoModelForCausalLM.from_pretrained(path)
    return model.to(p.device), AutoTokenizer.from_pretrained(path)


def reward_sizes(profile: Profile | None = None) -> dict:
    """How much preference data the tiny-world reward model gets (tiny vs gpu).

    ``answers_per_prompt`` samples come from the SFT model, ``base_answers_per_prompt`` from
    the base model (comparisons between policies, as InstructGPT and Llama 2 collected them).
    """
    p = profile or active_profile()
    if p.is_tiny:
        sizes = dict(train_prompts=112, eval_prompts=48, answers_per_prompt=2, base_answers_per_prompt=2, epochs=2)
    else:
        sizes = dict(train_prompts=2048, eval_prompts=256, answers_per_prompt=2, base_answers_per_prompt=2, epochs=2)
    return {**sizes, **{k: v for k, v in stage_sizes("reward", p).items() if k in sizes}}


def build_reward_model(out: Path, profile: Profile | None = None) -> dict:
    """Reward model of the tiny world: answers ranked by the gold judge, trained with RewardTrainer.

    Each prompt gets samples from the SFT model and from the base model (see
    :func:`reward_sizes`); every record says which model wrote each answer (``sources``).
    Training prompts use training (name, topic) pairs, evaluation prompts held-out ones.
    The rankings are saved beside the model (``rankings_train.jsonl``/``rankings_eval.jsonl``).
    """
    import tempfile

    from companion import reward, tinyworld

    p = profile or active_profile()
    s = reward_sizes(p)
    seed_everything(p.seed)
    policy, tok = sft_model(p)
    base, base_tok = base_model(p)
    specs = {"train": tinyworld.make_instructions(s["train_prompts"], seed=5, held_out=False),
             "eval": tinyworld.make_instructions(s["eval_prompts"], seed=6, held_out=True)}
    rankings = {}
    for split, sp in specs.items():
        seed = (0 if split == "train" else 1) + 100 * p.seed
        prompts = [x.messages() for x in sp]
        answers = reward.sample_answers(policy, tok, prompts, s["answers_per_prompt"], seed=seed)
        from_base = reward.sample_answers(base, base_tok, prompts, s["base_answers_per_prompt"], seed=seed + 2)
        rankings[split] = reward.judge_rankings(sp, [a + b for a, b in zip(answers, from_base)])
        for r in rankings[split]:
            r["sources"] = ["sft"] * s["answers_per_prompt"] + ["base"] * s["base_answers_per_prompt"]
        reward.save_rankings(rankings[split], out / f"rankings_{split}.jsonl")
    train, held = (reward.rankings_to_preferences(rankings[k]) for k in ("train", "eval"))
    rm = reward.reward_model_from_causal_lm(policy, tok)
    with tempfile.TemporaryDirectory() as run_dir:
        extra = {k: v for k, v in stage_sizes("reward", p).items() if k not in s}
        args = reward.reward_config(run_dir, p, **{"num_train_epochs": s["epochs"], **extra})
        result = reward.train_reward_model(rm, tok, train, held, args)
    result.model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"history": result.history, "train_seconds": result.train_seconds, "train_pairs": len(train),
            "eval_pairs": len(held), "eval_accuracy": result.history.get("eval_accuracy")}


def reward_model(profile: Profile | None = None, rebuild: bool = False):
    """(reward model, tokenizer) of the tiny world, cached as artifact "reward" (see :func:`build_reward_model`)."""
    from transformers import AutoModelForSequenceClassification

    p = profile or active_profile()
    path = artifacts.get_or_build("reward", lambda out: build_reward_model(out, p), rebuild=rebuild,
                                  profile_name=p.name, recipe=RECIPES["reward"])
    return AutoModelForSequenceClassification.from_pretrained(path).to(p.device), AutoTokenizer.from_pretrained(path)


STAGES = {"tokenizer": tokenizer, "base": base_model, "sft": sft_model, "reward": reward_model}


def ppo_components(profile: Profile | None = None) -> dict:
    """Everything :class:`companion.ppo.PPOTrainer` needs besides prompts and a config.

    Tiny: the SFT policy (chapter 4), the reward model (chapter 5), and a critic initialized
    from the reward model, as InstructGPT did.  gpu: the chat checkpoint (``profile.chat_model``)
    with LoRA adapters, so the reference is the same weights with the adapters off, and a
    value head on the shared trunk; the reward model is ``profile.reward_model`` (a Hub id or a
    local directory, read with its own tokenizer) or, when that is None, chapter 5's.
    """
    import copy

    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    from companion import sft
    from companion.tokenizer import ensure_distinct_pad

    p = profile or active_profile()
    if p.is_tiny:
        policy, tok = sft_model(p)
        rm, rm_tok = reward_model(p)
        return {"policy": policy, "tokenizer": tok, "reward_model": rm, "reward_tokenizer": rm_tok,
                "value_model": copy.deepcopy(rm)}
    policy, tok = load_pretrained(p.chat_model, device=p.device)
    ensure_distinct_pad(tok, policy)
    policy = get_peft_model(policy, sft.lora_config(r=16, alpha=32))
    if p.reward_model:
        rm_tok = AutoTokenizer.from_pretrained(p.reward_model)
        rm = AutoModelForSequenceClassification.from_pretrained(p.reward_model).to(p.device)
    else:
        rm, rm_tok = reward_model(p)
    return {"policy": policy, "tokenizer": tok, "reward_model": rm, "reward_tokenizer": rm_tok, "value_model": None}


RECIPES["ppo"] = RECIPES["reward"] + "|ppo-2-critic-scale|topic-rule-2|lam-1|steps-24"


def ppo_rewards(profile: Profile | None = None) -> dict:
    """What PPO optimizes besides the reward model: ``reward_funcs`` and their ``reward_weights``.

    Tiny: the topic rule (:func:`companion.tinyworld.topic_reward`, 1 when the story mentions the
    requested topic) with weight 2, about one standard deviation of the reward model's scores on
    the SFT model's samples. Chapter 7 measures that the tiny reward model cannot learn the topic
    check (its accuracy on minimal topic pairs is near chance), so the check it cannot see is added
    as a rule, as production pipelines add rule-based rewards beside a reward model.
    gpu: none (the reward model alone).
    """
    from companion import tinyworld

    p = profile or active_profile()
    if p.is_tiny:
        return {"reward_funcs": [tinyworld.topic_reward], "reward_weights": [2.0]}
    return {"reward_funcs": None, "reward_weights": None}


def ppo_prompts(profile: Profile | None = None):
    """RL prompts: tiny-world requests with *training* (name, topic) pairs (held-out pairs stay unseen)."""
    from companion import tinyworld

    p = profile or active_profile()
    return tinyworld.prompt_dataset(tinyworld.make_instructions(256 if p.is_tiny else 1024, seed=7, held_out=False))


def ppo_config(profile: Profile | None = None, **overrides):
    """The book's PPO settings: :func:`companion.ppo.tiny_ppo_config` (tiny) or LoRA-sized ones (gpu)."""
    from companion import ppo

    p = profile or active_profile()
    if p.is_tiny:
        return ppo.tiny_ppo_config(**overrides)
    gpu = dict(steps=150, batch_size=64, num_mini_batches=4, num_ppo_epochs=2, learning_rate=2e-5,
               max_new_tokens=200, temperature=1.0, kl_coef=0.05, normalize_scores=True, missing_eos_penalty=1.0,
               use_cpu=p.device != "cuda")
    return ppo.PPOConfig(**{**gpu, **overrides})


def build_ppo_model(out: Path, profile: Profile | None = None, **overrides) -> dict:
    """Train the SFT model with PPO against the reward model and :func:`ppo_rewards` (chapter 7); save it to ``out``.

    Saves the policy (LoRA merged in the gpu profile), its tokenizer and ``ppo_history.json``
    (every logged metric per step); returns its training time and the score normalization.
    """
    import json

    from companion import ppo, tinyworld

    p = profile or active_profile()
    seed_everything(p.seed)
    parts = ppo_components(p)
    rules = ppo_rewards(p)
    cfg = ppo_config(p, **{"seed": p.seed, "reward_weights": rules["reward_weights"], **stage_sizes("ppo", p),
                           **overrides})
    trainer = ppo.PPOTrainer(cfg, parts["policy"], parts["tokenizer"], ppo_prompts(p),
                             reward_model=parts["reward_model"], reward_tokenizer=parts["reward_tokenizer"],
                             reward_funcs=rules["reward_funcs"], value_model=parts["value_model"],
                             judge=tinyworld.judge_rows)
    history = trainer.train()
    policy = trainer.policy
    if hasattr(policy, "merge_and_unload"):
        policy = policy.merge_and_unload()
    policy.save_pretrained(out)
    parts["tokenizer"].save_pretrained(out)
    (out / "ppo_history.json").write_text(json.dumps(history))
    return {"train_seconds": float(sum(history["time/rollout_s"]) + sum(history["time/update_s"])),
            "score_shift": trainer.score_shift, "score_scale": trainer.score_scale}


def ppo_model(profile: Profile | None = None, rebuild: bool = False):
    """(model, tokenizer) of the PPO-trained policy, cached as artifact "ppo" (see :func:`build_ppo_model`)."""
    p = profile or active_profile()
    path = artifacts.get_or_build("ppo", lambda out: build_ppo_model(out, p), rebuild=rebuild,
                                  profile_name=p.name, recipe=RECIPES["ppo"])
    return AutoModelForCausalLM.from_pretrained(path).to(p.device), AutoTokenizer.from_pretrained(path)


def ppo_history(profile: Profile | None = None) -> dict:
    """The per-step metrics of the cached PPO run (builds it if needed)."""
    import json

    p = profile or active_profile()
    ppo_model(p)
    return json.loads((artifacts.artifact_dir("ppo", p.name) / "ppo_history.json").read_text())


STAGES["ppo"] = ppo_model


DPO_DATA_RECIPE = RECIPES["sft"] + "|dpo-onpolicy-extremes+topic-1"  # round 1's answers, rankings and pairs
RECIPES["dpo"] = DPO_DATA_RECIPE + "|rounds-2"


def dpo_sizes(profile: Profile | None = None) -> dict:
    """How much on-policy preference data DPO gets: ``rounds`` of ``answers`` sampled per training prompt.

    Two rounds on the tiny profile, measured on 250 held-out prompts against SFT: one round
    of 128 prompts gained +0.044 (within noise), two rounds +0.116 ± 0.042; one round with two
    epochs, or on 384 prompts (three times the training), +0.092.  Fresh answers from the
    improved model teach more than more of the SFT model's answers.  Over three seeds of the two
    rounds (prompts, samples, data order; the same SFT model): +0.116, +0.076 and +0.028, so the
    book's run clears two standard errors and the method's gain is smaller on average.
    """
    p = profile or active_profile()
    sizes = dict(prompts=128, answers=4, rounds=2) if p.is_tiny else dict(prompts=512, answers=4, rounds=2)
    return {**sizes, **{k: v for k, v in stage_sizes("dpo", p).items() if k in sizes}}


def dpo_policy(profile: Profile | None = None):
    """(policy, tokenizer, peft_config) DPO starts from.

    Tiny: chapter 4's SFT model, trained in full.  gpu: the chat checkpoint
    (``profile.chat_model``) with a distinct PAD token and LoRA adapters, so the reference is
    the same weights with the adapters off and no second copy of the model is needed.
    """
    from companion import sft
    from companion.tokenizer import ensure_distinct_pad

    p = profile or active_profile()
    if p.is_tiny:
        policy, tok = sft_model(p)
        return policy, tok, None
    policy, tok = load_pretrained(p.chat_model, device=p.device)
    ensure_distinct_pad(tok, policy)
    return policy, tok, sft.lora_config(r=16, alpha=32)


def _round_dir(path: Path, round_number: int) -> Path:
    return path / f"round-{round_number}"


def _check_round(round_number: int, p: Profile) -> int:
    rounds = dpo_sizes(p)["rounds"]
    if not isinstance(round_number, int) or isinstance(round_number, bool) or not 1 <= round_number <= rounds:
        raise ValueError(f"round_number must be a round of the DPO run, 1 to {rounds}, got {round_number!r}")
    return round_number


def dpo_rankings(profile: Profile | None = None, round_number: int = 1) -> list[dict]:
    """A DPO round's answers to its training prompts, ranked by the gold judge (round 1: the SFT model's)."""
    from companion import reward

    p = profile or active_profile()
    _check_round(round_number, p)
    dpo_model(p)
    return reward.load_rankings(_round_dir(artifacts.artifact_dir("dpo", p.name), round_number) / "rankings.jsonl")


def dpo_pairs(rankings: list[dict], topic_pairs: bool = True):
    """The book's DPO data: best-vs-worst on-policy pairs, plus minimal topic pairs (``dpo.topic_contrast_pairs``)."""
    from datasets import concatenate_datasets

    from companion import dpo

    parts = [dpo.preference_pairs(rankings, extremes=True)]
    if topic_pairs:
        try:
            parts.append(dpo.topic_contrast_pairs(rankings))
        except ValueError as err:  # no best answer names its topic (a few prompts, or a weak policy)
            print(f"dpo_pairs: no topic pairs ({err}); training on best-vs-worst pairs only")
    return concatenate_datasets(parts).shuffle(seed=0)


def build_dpo_model(out: Path, profile: Profile | None = None, **overrides) -> dict:
    """Online, iterative DPO from the SFT model (chapter 9), saved to ``out``.

    Each round (:func:`dpo_sizes`), the current policy answers fresh training prompts, the
    gold judge ranks the answers, and DPO trains on :func:`dpo_pairs` with the round's
    starting policy as the reference; the next round starts from the result.  ``out`` holds
    the final model; ``out/round-<k>/`` holds each round's rankings (``rankings.jsonl``) and
    TRL's logs (``history.json``), and every round's model but the last, with its tokenizer
    (LoRA merged in the gpu profile).
    """
    import json

    from companion import reward, tinyworld

    p = profile or active_profile()
    seed_everything(p.seed)
    policy, tok, peft_config = dpo_policy(p)
    s = dpo_sizes(p)
    extra = {k: v for k, v in stage_sizes("dpo", p).items() if k not in s}
    rounds = []
    for k in range(1, s["rounds"] + 1):
        folder = _round_dir(out, k)
        folder.mkdir(parents=True)
        specs = tinyworld.make_instructions(s["prompts"], seed=9 + 1000 * (k - 1), held_out=False)
        answers = reward.sample_answers(policy, tok, [x.messages() for x in specs], s["answers"],
                                        seed=100 * p.seed + k - 1)
        rankings = reward.judge_rankings(specs, answers)
        reward.save_rankings(rankings, folder / "rankings.jsonl")
        pairs = dpo_pairs(rankings)
        policy, result = _train_dpo(p, policy, tok, peft_config, pairs, **{**extra, **overrides})
        (folder / "history.json").write_text(json.dumps(result.history))
        if k < s["rounds"]:
            policy.save_pretrained(folder)
            tok.save_pretrained(folder)
        rounds.append({"pairs": len(pairs), "train_seconds": result.train_seconds,
                       "sample_success": sum(x for r in rankings for x in r["success"]) / (len(specs) * s["answers"])})
    policy.save_pretrained(out)
    tok.save_pretrained(out)
    return {"train_seconds": sum(r["train_seconds"] for r in rounds), "pairs": sum(r["pairs"] for r in rounds),
            "rounds": rounds, "peak_memory_mb": result.peak_memory_mb}


def _train_dpo(p: Profile, policy, tok, peft_config, pairs, **overrides):
    """DPO from ``policy`` on ``pairs`` with the book's config: (trained model, LoRA merged; TRL's result)."""
    import copy

    from companion import dpo

    start = policy if peft_config else copy.deepcopy(policy)
    with tempfile.TemporaryDirectory() as run_dir:
        result = dpo.train_dpo(start, tok, pairs, dpo.dpo_config(run_dir, p, **overrides), peft_config=peft_config)
    model = result.model.merge_and_unload() if hasattr(result.model, "merge_and_unload") else result.model
    return model, result


def _train_and_save_dpo(out: Path, p: Profile, policy, tok, peft_config, pairs, history_file: str,
                        **overrides) -> dict:
    """Train DPO from ``policy`` on ``pairs`` with the book's config; save the (merged) model and TRL's logs."""
    import json

    model, result = _train_dpo(p, policy, tok, peft_config, pairs, **overrides)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / history_file).write_text(json.dumps(result.history))
    return {"train_seconds": result.train_seconds, "pairs": len(pairs), "peak_memory_mb": result.peak_memory_mb}


def dpo_model(profile: Profile | None = None, rebuild: bool = False, round_number: int | None = None):
    """(model, tokenizer) of the DPO-trained policy, cached as artifact "dpo" (see :func:`build_dpo_model`).

    ``round_number=1`` gives the model after the first round (the one-round DPO that chapter 8's
    RLAIF run is compared with); the default is the final model.
    """
    p = profile or active_profile()
    if round_number is not None:
        _check_round(round_number, p)
    path = artifacts.get_or_build("dpo", lambda out: build_dpo_model(out, p), rebuild=rebuild,
                                  profile_name=p.name, recipe=RECIPES["dpo"])
    if round_number is not None and round_number < dpo_sizes(p)["rounds"]:
        return AutoModelForCausalLM.from_pretrained(_round_dir(path, round_number)).to(p.device), \
            AutoTokenizer.from_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path).to(p.device), AutoTokenizer.from_pretrained(path)


def dpo_history(profile: Profile | None = None, round_number: int = 1) -> dict:
    """TRL's per-step logs of a round of the cached DPO run (builds it if needed)."""
    import json

    p = profile or active_profile()
    _check_round(round_number, p)
    dpo_model(p)
    return json.loads((_round_dir(artifacts.artifact_dir("dpo", p.name), round_number) / "history.json").read_text())


STAGES["dpo"] = dpo_model


RECIPES["rlaif"] = DPO_DATA_RECIPE + "|rlaif-minilm-sst2-judge-1"
JUDGE_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"  # the gpu profile's AI judge (COMPANION_JUDGE_MODEL overrides it)


def rlaif_judge(profile: Profile | None = None):
    """The book's AI judge.

    Tiny: :class:`companion.rlaif.EncoderJudge`, the pretrained MiniLM sentence encoder with
    a sentiment probe fitted on human SST-2 labels; it never sees the gold judge or its
    labels.  gpu: an instruct model asked "A or B?" (:class:`companion.rlaif.LMJudge`),
    ``$COMPANION_JUDGE_MODEL`` or :data:`JUDGE_MODEL`.  One judge per profile and model is
    kept for the session, so a chapter and the artifact it builds share the judge and the
    embeddings it has already computed.
    """
    import os

    from companion import rlaif

    p = profile or active_profile()
    model_id = "minilm+sst2" if p.is_tiny else (os.environ.get("COMPANION_JUDGE_MODEL") or JUDGE_MODEL)
    key = (p.name, p.device, model_id)
    if key not in _JUDGES:
        if p.is_tiny:
            _JUDGES[key] = rlaif.encoder_judge(device=p.device)
        else:
            model, tok = load_pretrained(model_id, device=p.device)
            _JUDGES[key] = rlaif.LMJudge(model, tok)
    return _JUDGES[key]


_JUDGES: dict[tuple, object] = {}


def rlaif_pairs(ai_rankings: list[dict], judge, constitution=None, min_confidence: float = 0.5):
    """The RLAIF recipe's DPO data: chapter 9's recipe with every label from the AI judge.

    The judge's favourite answer against its least favourite (:func:`companion.rlaif.best_vs_worst`)
    plus topic-swapped minimal pairs whose direction the judge decides
    (:func:`companion.rlaif.topic_swap_pairs`); the judge's ``confidence`` is kept.
    """
    from datasets import concatenate_datasets

    from companion import rlaif

    constitution = constitution or rlaif.TINY_CONSTITUTION
    parts = [rlaif.best_vs_worst(ai_rankings, judge, constitution, min_confidence)]
    try:
        parts.append(rlaif.topic_swap_pairs(ai_rankings, judge, constitution, min_confidence))
    except ValueError as err:  # no favourite names its topic, or the judge is unsure of every swap
        print(f"rlaif_pairs: no topic pairs ({err}); training on best-vs-worst pairs only")
    return concatenate_datasets(parts).shuffle(seed=0)


def build_rlaif_model(out: Path, profile: Profile | None = None, **overrides) -> dict:
    """DPO on AI labels (chapter 8): chapter 9's answers and recipe, with the AI judge instead of the gold judge.

    The SFT model's answers are those of :func:`dpo_rankings` (the same samples chapter 9
    ranks with the gold judge), so the two runs differ only in who labelled them.  Saves the
    model, the judge's rankings (``rankings_rlaif.jsonl``, gold labels kept as
    ``gold_*``) and TRL's logs (``rlaif_history.json``).
    """
    from companion import reward, rlaif

    p = profile or active_profile()
    seed_everything(p.seed)
    judge = rlaif_judge(p)
    ai = rlaif.rank_answers(judge, dpo_rankings(p), rlaif.TINY_CONSTITUTION)
    reward.save_rankings(ai, out / "rankings_rlaif.jsonl")
    pairs = rlaif_pairs(ai, judge)
    policy, tok, peft_config = dpo_policy(p)
    meta = _train_and_save_dpo(out, p, policy, tok, peft_config, pairs, "rlaif_history.json",
                               **{**stage_sizes("rlaif", p), **overrides})
    return {**meta, "mean_confidence": float(sum(pairs["confidence"]) / len(pairs))}


def rlaif_model(profile: Profile | None = None, rebuild: bool = False):
    """(model, tokenizer) of the policy trained on AI labels, cached as artifact "rlaif" (:func:`build_rlaif_model`)."""
    p = profile or active_profile()
    path = artifacts.get_or_build("rlaif", lambda out: build_rlaif_model(out, p), rebuild=rebuild,
                                  profile_name=p.name, recipe=RECIPES["rlaif"])
    return AutoModelForCausalLM.from_pretrained(path).to(p.device), AutoTokenizer.from_pretrained(path)


def rlaif_rankings(profile: Profile | None = None) -> list[dict]:
    """The AI judge's rankings of :func:`dpo_rankings`' answers (built with the "rlaif" artifact)."""
    from companion import reward

    p = profile or active_profile()
    rlaif_model(p)
    return reward.load_rankings(artifacts.artifact_dir("rlaif", p.name) / "rankings_rlaif.jsonl")


def rlaif_history(profile: Profile | None = None) -> dict:
    """TRL's per-step logs of the cached RLAIF run."""
    import json

    p = profile or active_profile()
    rlaif_model(p)
    return json.loads((artifacts.artifact_dir("rlaif", p.name) / "rlaif_history.json").read_text())


STAGES["rlaif"] = rlaif_model


# --------------------------------------------------------------------------- held-out evaluations, computed once
# models kept inside a stage's artifact that chapters evaluate too: name -> (artifact, loader)
INNER_MODELS = {"dpo-round-1": ("dpo", lambda p: dpo_model(p, round_number=1))}


def _artifact_of(stage: str) -> str:
    return INNER_MODELS[stage][0] if stage in INNER_MODELS else stage


def _load_stage(stage: str, p: Profile):
    return INNER_MODELS[stage][1](p) if stage in INNER_MODELS else STAGES[stage](p)


def stage_evaluations(stages: dict[str, str], specs, profile: Profile | None = None, **settings) -> dict:
    """Held-out rows of cached stages (display name -> stage name), each computed once and stored.

    Chapters 7-10 compare the same models on the same held-out prompts; this evaluates
    each cached stage with :func:`companion.evaluation.compare_policies` (chapter 5's reward
    model, greedy unless ``settings`` say otherwise) the first time and reads the stored
    rows after that.  A rebuilt stage or reward model, other specs or other settings are a
    new entry.  Pass the result as ``known=`` to ``compare_policies``; the KL to the
    reference is computed there, because it depends on the reference.  Besides the stages,
    ``"dpo-round-1"`` names the DPO run's first-round model (:data:`INNER_MODELS`).
    """
    from companion import evaluation, results

    p = profile or active_profile()
    unknown = [s for s in stages.values() if s not in STAGES and s not in INNER_MODELS]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; the stages are {list(STAGES)} (and {list(INNER_MODELS)})")
    for name in ("reward", *stages.values()):
        if not artifacts.exists(_artifact_of(name), p.name):
            STAGES[_artifact_of(name)](p)  # build what is missing first: the rows are keyed by the artifacts
    rm = []  # loaded on the first row that has to be computed

    def evaluate(label: str, stage: str) -> dict:
        if not rm:
            rm.extend(reward_model(p))
        model, tok = _load_stage(stage, p)
        return evaluation.compare_policies({label: (model, tok)}, specs, rm[0], rm[1], **settings)[label]

    rows = {}
    for label, stage in stages.items():
        key = {"specs": [(s.name, s.topic, s.template) for s in specs], "settings": settings}
        row = results.cached(f"evaluation-{stage}", key, lambda label=label, stage=stage: evaluate(label, stage),
                             depends=[_artifact_of(stage), "reward"], profile_name=p.name)
        rows[label] = {k: v for k, v in row.items() if k != "cached"}
    return rows
