"""Critic-free RL (GRPO and RLOO): a thin layer over the trainers TRL maintains.

PPO (``companion.ppo``) learns a value function to tell a good response from a lucky one.
GRPO and RLOO sample several responses to each prompt instead and compare them with each
other: the advantage of a response is its reward minus the mean of its group (GRPO, which
also divides by the group's std) or minus the mean of the *other* responses (RLOO, the
leave-one-out baseline).  No critic, no GAE, one model to train.

The recipe is TRL's, with the book's defaults: a config (:func:`grpo_config`,
:func:`rloo_config`), reward functions with GRPO's signature
``f(prompts, completions, completion_ids, **columns) -> list[float | None]``
(:func:`reward_model_func` wraps a reward model, :func:`tinyworld_gold_func` is the tiny
world's gold judge), and a trainer (:func:`train_grpo`, :func:`train_rloo`).  From a script::

    from companion import critic_free, pipeline, tinyworld
    model, tok = pipeline.sft_model()
    rm, rm_tok = pipeline.reward_model()
    prompts = tinyworld.prompt_dataset(tinyworld.make_instructions(256))
    result = critic_free.train_rloo(model, tok, prompts, [critic_free.reward_model_func(rm, rm_tok)],
                                    critic_free.rloo_config("runs/rloo"))
    print(result.history["reward"])
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

import torch

from companion.versions import incompatible

try:
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer
except ImportError as e:  # an API that moved between releases: say which versions work
    raise incompatible("trl", e) from e

from companion import validation
from companion.profiles import Profile
from companion.profiles import profile as active_profile
from companion.tokenizer import chat_stop_ids
from companion.training import (
    TrainResult,
    history_of,
    is_peft,
    peak_memory_mb,
    plain_model,
    resume_checkpoint,
    runtime_args,
    save_local_copy,
)

RewardFunc = Callable[..., Sequence[float | None]]
GOLD_COLUMNS = ("name", "topic", "template")
# the loss types TRL 1.16's GRPOTrainer knows (an unknown one fails only inside the first training step)
GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo", "cispo", "sapo", "vespo")


# --------------------------------------------------------------------------- configs
def _defaults(output_dir: str, p: Profile, num_generations: int, beta: float) -> dict:
    gpu = p.device == "cuda"
    return dict(
        output_dir=output_dir,
        max_completion_length=200,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        num_generations=num_generations,
        per_device_train_batch_size=8 if gpu else 32,
        gradient_accumulation_steps=4 if gpu else 1,
        num_iterations=1,
        beta=beta,
        learning_rate=1e-4 if p.is_tiny else 1e-6,
        lr_scheduler_type="constant",
        max_steps=40 if p.is_tiny else 500,
        logging_steps=1,
        disable_dropout=True,
        **runtime_args(p),
    )


def check_generation_batch(kwargs: dict, world_size: int | None = None) -> int:
    """The number of completions per generation implied by ``kwargs``; a ValueError if it breaks the groups.

    TRL generates ``generation_batch_size`` completions at once (default:
    ``per_device_train_batch_size x processes x gradient_accumulation_steps``) and groups
    them by prompt, ``num_generations`` a group, so the batch must be a multiple of it.
    """
    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    n = kwargs["num_generations"]
    if int(n) != n or n < 2:
        raise ValueError(f"num_generations must be an integer >= 2 (the advantage compares a prompt's completions "
                         f"with each other), got {n!r}")
    per = validation.integer("per_device_train_batch_size", kwargs["per_device_train_batch_size"], minimum=1)
    steps = validation.integer("steps_per_generation" if kwargs.get("steps_per_generation") else
                               "gradient_accumulation_steps",
                               kwargs.get("steps_per_generation") or kwargs["gradient_accumulation_steps"], minimum=1)
    if kwargs.get("generation_batch_size") is not None:
        validation.integer("generation_batch_size", kwargs["generation_batch_size"], minimum=1)
    batch = kwargs.get("generation_batch_size") or per * world * steps
    if batch % n:
        how = ("generation_batch_size" if kwargs.get("generation_batch_size") else
               f"per_device_train_batch_size={per} x {world} process(es) x "
               f"{'steps_per_generation' if kwargs.get('steps_per_generation') else 'gradient_accumulation_steps'}"
               f"={steps}")
        raise ValueError(
            f"the batch of {batch} completions per generation ({how}) is not divisible by num_generations={n}: "
            f"every prompt's {n} completions must be in the same batch. Choose a batch that is a multiple of {n} "
            f"(e.g. per_device_train_batch_size={-(-per // n) * n}) or a num_generations that divides {batch}."
        )
    return batch


def _check_sampling(kwargs: dict) -> None:
    """Settings TRL accepts but only fails on (or silently misuses) once training runs."""
    t = validation.number("temperature", kwargs["temperature"])
    if t <= 0:
        raise ValueError(f"temperature must be > 0 (GRPO and RLOO sample their completions), got {t}")
    validation.number("beta (the KL penalty's weight; 0 = none)", kwargs["beta"], minimum=0.0)
    validation.number("learning_rate", kwargs["learning_rate"], minimum=0.0)
    validation.integer("max_completion_length", kwargs["max_completion_length"], minimum=1)


def grpo_config(output_dir: str = "runs/grpo", profile: Profile | None = None, **overrides) -> GRPOConfig:
    """TRL's ``GRPOConfig`` with the book's defaults for the active profile (keywords override them).

    * 32 completions per optimizer step: 4 prompts x ``num_generations=8`` (TRL's group
      size); the tiny profile takes them in one batch, a GPU in 4 micro-batches of 8.
      The batch must be a multiple of ``num_generations`` (a ValueError says so).
    * ``max_completion_length=200`` (a whole story), sampling at ``temperature=1.0`` with
      ``top_k``/``top_p`` off: the log-probs the loss uses are those of the sampler.
    * ``beta=0.0`` (TRL's default: no KL penalty, hence no reference model);
      ``loss_type="dapo"`` and ``scale_rewards="group"`` are TRL's defaults, kept.
    * ``learning_rate`` 1e-4 tiny (as :func:`companion.ppo.tiny_ppo_config`; the model was
      trained from scratch at 3e-3), TRL's 1e-6 otherwise; constant, as our PPO's.
    * one update per batch (``num_iterations=1``), dropout off, logging every step,
      ``max_steps`` 40 tiny / 500 gpu, and :func:`companion.training.runtime_args`.
    """
    p = profile or active_profile()
    kwargs = {**_defaults(output_dir, p, num_generations=8, beta=0.0), **overrides}
    check_generation_batch(kwargs)
    _check_sampling(kwargs)
    if "loss_type" in kwargs:
        validation.one_of("loss_type", kwargs["loss_type"], GRPO_LOSS_TYPES)
    return GRPOConfig(**kwargs)


def rloo_config(output_dir: str = "runs/rloo", profile: Profile | None = None, **overrides) -> RLOOConfig:
    """TRL's ``RLOOConfig`` with the book's defaults: those of :func:`grpo_config` except

    * ``num_generations=4`` (8 prompts x 4 per step): RLOO's baseline for one response is the
      mean of the other three, unbiased already with small groups (TRL's default is 2).
    * ``beta=0.05`` (TRL's default): ``beta x KL`` of each response (summed over its tokens)
      is subtracted from its reward, against a frozen copy of the initial policy.
    """
    p = profile or active_profile()
    kwargs = {**_defaults(output_dir, p, num_generations=4, beta=0.05), **overrides}
    check_generation_batch(kwargs)
    _check_sampling(kwargs)
    return RLOOConfig(**kwargs)


# --------------------------------------------------------------------------- reward functions
def _text(completion) -> str:
    """A completion's text: a string, or the content of its last message (conversational data)."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def reward_model_func(reward_model, tokenizer, batch_size: int = 32, name: str = "reward_model") -> RewardFunc:
    """A one-output sequence-classification reward model as a GRPO-signature reward function.

    It reads (prompt, completion) as it was trained to (``companion.reward.score``: the
    conversation rendered with ``tokenizer``'s chat template), for plain-text or
    conversational data.  The function is named ``name`` in TRL's logs (``rewards/<name>/mean``).
    """
    from companion.reward import score

    batch_size = validation.integer("batch_size", batch_size, minimum=1)
    labels = getattr(reward_model.config, "num_labels", None)
    if labels != 1:
        raise ValueError(f"reward_model must have one output (num_labels=1), got num_labels={labels}; build it with "
                         "companion.reward.reward_model_from_causal_lm")
    if tokenizer.pad_token_id is None:
        raise ValueError("the reward tokenizer has no PAD token; set one (tokenizer.pad_token = ...) to batch inputs")
    vocab = reward_model.get_input_embeddings().weight.shape[0]
    if vocab < len(tokenizer):
        raise ValueError(f"the reward model's vocabulary ({vocab} tokens) is smaller than the tokenizer's "
                         f"({len(tokenizer)}): pass the tokenizer the reward model was trained with")

    def reward(prompts, completions, completion_ids=None, **columns) -> list[float]:
        return [float(s) for s in score(reward_model, tokenizer, prompts, completions, batch_size=batch_size)]

    reward.__name__ = name
    return reward


def tinyworld_gold_func(name: str = "gold") -> RewardFunc:
    """The tiny world's gold judge as a reward function: the fraction of its six checks passed.

    It needs the ``name``/``topic``/``template`` columns of ``tinyworld.prompt_dataset``,
    which TRL passes to reward functions as keyword arguments.
    """
    from companion.tinyworld import TaskSpec, gold_judge

    def gold(prompts, completions, completion_ids=None, **columns) -> list[float]:
        missing = [c for c in GOLD_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"the gold reward needs the prompt dataset's columns {list(GOLD_COLUMNS)}; missing "
                             f"{missing}. Build the prompts with companion.tinyworld.prompt_dataset(specs).")
        specs = [TaskSpec(n, t, int(k)) for n, t, k in zip(*(columns[c] for c in GOLD_COLUMNS))]
        return [gold_judge(s, _text(c)).score for s, c in zip(specs, completions)]

    gold.__name__ = name
    return gold


# --------------------------------------------------------------------------- trainers
RLResult = TrainResult  # what train_grpo / train_rloo return


def check_inputs(model, tokenizer, prompts, reward_funcs, max_completion_length: int) -> list[RewardFunc]:
    """Raise a clear error for what would fail (or silently go wrong) inside TRL; return the reward functions."""
    if isinstance(model, str):
        raise TypeError(f"model must be a loaded model, got the string {model!r}; load it first, e.g. "
                        "companion.models.load_pretrained(path)")
    stops = chat_stop_ids(tokenizer)
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id in stops:
        raise ValueError(
            f"the tokenizer's PAD token ({tokenizer.pad_token!r}) is missing or is a stop token {stops}: RL must "
            "tell padding from a real end of response. Add a distinct one with "
            "companion.tokenizer.ensure_distinct_pad(tokenizer, model)"
        )
    if not hasattr(prompts, "column_names") or "prompt" not in prompts.column_names or len(prompts) == 0:
        got = getattr(prompts, "column_names", type(prompts).__name__)
        raise ValueError(f"prompts must be a non-empty datasets.Dataset with a 'prompt' column, got {got}; "
                         "e.g. companion.tinyworld.prompt_dataset(specs)")
    funcs = [reward_funcs] if callable(reward_funcs) else list(reward_funcs or [])
    if not funcs or not all(callable(f) for f in funcs):
        raise TypeError(f"reward_funcs must be one or more callables f(prompts, completions, **kw), got {reward_funcs!r}")
    context = getattr(model.config, "max_position_embeddings", None)
    if context:
        first = prompts[0]["prompt"]
        if isinstance(first, str):
            longest = max(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts["prompt"])
        else:
            longest = max(len(tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True,
                                                            return_dict=True)["input_ids"]) for p in prompts["prompt"])
        if longest + max_completion_length > context:
            raise ValueError(f"a prompt of {longest} tokens + max_completion_length={max_completion_length} exceeds "
                             f"the model's context of {context} tokens: shorten the prompts or lower "
                             "max_completion_length")
    return funcs


@contextlib.contextmanager
def reference_loadable(model, args) -> Iterator[None]:
    """Let TRL build its reference model from ``model`` as it is now.

    With ``beta > 0`` (and no PEFT), TRL 1.16 loads the reference with ``from_pretrained``
    from ``model.config._name_or_path``: empty for a model built in memory, and a stale
    checkpoint for a model trained since it was loaded.  So we save the model to a temporary
    folder and point the name there while the trainer is built, then restore it.
    """
    if args.beta == 0.0 or is_peft(model):
        yield
        return
    from transformers.utils import logging as hf_logging

    old, bars = model.config.name_or_path, hf_logging.is_progress_bar_enabled()
    tmp = tempfile.mkdtemp(prefix="companion-ref-")
    try:
        hf_logging.disable_progress_bar()  # no "Writing model shards" / "Loading weights" bars for a copy
        save_local_copy(model, tmp)  # every process its own copy (multi-GPU runs)
        model.config.name_or_path = tmp
        yield
    finally:
        model.config.name_or_path = old
        shutil.rmtree(tmp, ignore_errors=True)
        if bars:
            hf_logging.enable_progress_bar()


def build_trainer(trainer_class, model, tokenizer, prompts, reward_funcs, args, peft_config=None,
                  callbacks=None):
    """A TRL ``GRPOTrainer``/``RLOOTrainer`` (or subclass) for ``model``, after :func:`check_inputs`.

    Generation stops at the chat template's ``<|im_end|>`` as well as EOS (TRL stops at
    the tokenizer's EOS and the model's ``generation_config.eos_token_id``, so we set it).
    """
    funcs = check_inputs(model, tokenizer, prompts, reward_funcs, args.max_completion_length)
    model.generation_config.eos_token_id = chat_stop_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with reference_loadable(model, args) if peft_config is None else contextlib.nullcontext():
        return trainer_class(model=model, reward_funcs=funcs, args=args, train_dataset=prompts,
                             processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)


def _train(trainer_class, model, tokenizer, prompts, reward_funcs, args, peft_config, callbacks,
           resume_from_checkpoint=None) -> RLResult:
    trainer = build_trainer(trainer_class, model, tokenizer, prompts, reward_funcs, args, peft_config, callbacks)
    cuda = torch.cuda.is_available() and next(trainer.model.parameters()).is_cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_checkpoint(args.output_dir, resume_from_checkpoint))
    seconds = time.perf_counter() - start
    return RLResult(model=plain_model(trainer), history=history_of(trainer.state.log_history),
                    train_seconds=seconds, peak_memory_mb=peak_memory_mb(cuda))


def _check_args(args, want: type, other: type, trainer: str, maker: str) -> None:
    """``args`` must be the trainer's own config: the other one's fields mean other things (or do not exist)."""
    if args is None or isinstance(args, want):
        return
    which = f"a {other.__name__} (for the other trainer)" if isinstance(args, other) else type(args).__name__
    raise TypeError(f"{trainer} needs args=critic_free.{maker}(...) (a {want.__name__}); got {which}")


def train_grpo(model, tokenizer, prompts, reward_funcs: RewardFunc | Sequence[RewardFunc],
               args: GRPOConfig | None = None, peft_config=None, callbacks=None,
               resume_from_checkpoint: str | bool | None = None) -> RLResult:
    """Train ``model`` with TRL's ``GRPOTrainer`` on ``prompts`` (a Dataset with a ``prompt`` column).

    ``reward_funcs``: GRPO-signature callables (their rewards are summed); other columns of
    ``prompts`` reach them as keyword arguments.  With ``peft_config`` TRL adds LoRA adapters.
    ``resume_from_checkpoint=True`` continues a killed run (:func:`companion.training.resume_checkpoint`).
    """
    _check_args(args, GRPOConfig, RLOOConfig, "train_grpo", "grpo_config")
    return _train(GRPOTrainer, model, tokenizer, prompts, reward_funcs, args or grpo_config(), peft_config,
                  callbacks, resume_from_checkpoint)


def train_rloo(model, tokenizer, prompts, reward_funcs: RewardFunc | Sequence[RewardFunc],
               args: RLOOConfig | None = None, peft_config=None, callbacks=None,
               resume_from_checkpoint: str | bool | None = None) -> RLResult:
    """Train ``model`` with TRL's ``RLOOTrainer``; arguments as :func:`train_grpo`."""
    _check_args(args, RLOOConfig, GRPOConfig, "train_rloo", "rloo_config")
    return _train(RLOOTrainer, model, tokenizer, prompts, reward_funcs, args or rloo_config(), peft_config,
                  callbacks, resume_from_checkpoint)
