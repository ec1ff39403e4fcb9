"""Learning from preferences without a reward model: DPO, IPO and KTO over TRL's trainers.

RLHF (``companion.ppo``) fits a reward model to comparisons, then optimizes it with RL under
a KL penalty.  That KL-regularized objective has a closed-form optimum,
``pi*(y|x) ~ pi_ref(y|x) exp(r(x, y) / beta)``, so a reward can be written in terms of a
policy: ``r(x, y) = beta log(pi(y|x) / pi_ref(y|x)) + const``.  Put that *implicit reward*
into the Bradley-Terry likelihood of chapter 5 and the constant cancels: the policy itself
is trained as the reward model, with no sampling and no critic (Rafailov et al. 2023).

This module has the loss in a few lines (:func:`dpo_loss`, tested against TRL's), the data
the book builds for it (:func:`preference_pairs` from ranked answers, :func:`kto_dataset`
from unpaired good/bad labels, :func:`on_policy_pairs` for online rounds), configs with
the book's defaults, and trainers that return what the chapter plots.  From a script::

    from companion import dpo, pipeline
    model, tok = pipeline.sft_model()
    pairs = dpo.preference_pairs(pipeline.reward_rankings("train"))
    result = dpo.train_dpo(model, tok, pairs, dpo.dpo_config("runs/dpo"))
    print(result.history["rewards/margins"])
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from datasets import Dataset

from companion.versions import incompatible

try:
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
except ImportError as e:  # an API that moved between releases: say which versions work
    raise incompatible("trl", e) from e

from companion import validation
from companion.profiles import Profile
from companion.profiles import profile as active_profile
from companion.training import (
    TrainResult,
    history_of,
    is_peft,
    peak_memory_mb,
    plain_model,
    runtime_args,
    train_with_oom_retry,
)

PAIR_COLUMNS = ("prompt", "chosen", "rejected")
# the loss types TRL 1.16's DPOTrainer knows (an unknown one fails only at the first training step)
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
KTO_COLUMNS = ("prompt", "completion", "label")


# --------------------------------------------------------------------------- the loss
@dataclass
class DPOLoss:
    """Per-pair ``losses`` and the implicit rewards ``beta * log(pi / pi_ref)`` of each answer."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards


def implicit_reward(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's reward of an answer: ``beta * (log pi(y|x) - log pi_ref(y|x))`` (sequence log-probs)."""
    return beta * (policy_logps - ref_logps)


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float = 0.1) -> DPOLoss:
    """The DPO loss, ``-log sigmoid(r_chosen - r_rejected)`` with implicit rewards (TRL's ``"sigmoid"``).

    Inputs are summed log-probabilities of each answer given its prompt, one per pair.
    Its gradient raises the chosen answer's likelihood and lowers the rejected one's, weighted
    by how wrong the implicit reward currently is: ``sigmoid(r_rejected - r_chosen)``.
    """
    beta = validation.number("beta (it scales the implicit reward)", beta, above=0.0)
    chosen = implicit_reward(policy_chosen_logps, ref_chosen_logps, beta)
    rejected = implicit_reward(policy_rejected_logps, ref_rejected_logps, beta)
    return DPOLoss(losses=-F.logsigmoid(chosen - rejected), chosen_rewards=chosen, rejected_rewards=rejected)


def ipo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float,
             chosen_tokens: torch.Tensor, rejected_tokens: torch.Tensor) -> torch.Tensor:
    """IPO (Azar et al. 2023): regress the log-ratio margin onto ``1 / (2 beta)`` instead of pushing it to infinity.

    As TRL does, each answer's log-ratio is averaged over its tokens (``*_tokens``), so the
    target does not depend on answer length.
    """
    beta = validation.number("beta (IPO's target margin is 1 / (2 beta))", beta, above=0.0)
    chosen = (policy_chosen_logps - ref_chosen_logps) / chosen_tokens.clamp(min=1)
    rejected = (policy_rejected_logps - ref_rejected_logps) / rejected_tokens.clamp(min=1)
    return (chosen - rejected - 1 / (2 * beta)) ** 2


# --------------------------------------------------------------------------- data
def _content(x) -> str:
    """The text of an answer: a string or a one-message conversation."""
    if isinstance(x, str):
        return x
    if isinstance(x, Sequence) and x and isinstance(x[-1], Mapping):
        return str(x[-1].get("content", ""))
    return str(x)


def check_preference_pairs(dataset: Dataset) -> Dataset:
    """Return ``dataset`` (only its prompt/chosen/rejected columns) if DPO can learn from it, else raise a ValueError."""
    cols = getattr(dataset, "column_names", None)
    if cols is None:
        raise TypeError(f"preference pairs must be a datasets.Dataset, got {type(dataset).__name__}; "
                        "build one with companion.dpo.preference_pairs(rankings)")
    missing = [c for c in PAIR_COLUMNS if c not in cols]
    if missing:
        raise ValueError(f"preference pairs need the columns {list(PAIR_COLUMNS)}; missing {missing} (the dataset "
                         f"has {cols}). Build them with companion.dpo.preference_pairs(rankings).")
    if len(dataset) == 0:
        raise ValueError("the preference dataset is empty: DPO needs at least one (prompt, chosen, rejected) row")
    same = [i for i, (c, r) in enumerate(zip(dataset["chosen"], dataset["rejected"])) if _content(c) == _content(r)]
    if same:
        raise ValueError(f"{len(same)} pair(s) have identical chosen and rejected answers (rows {same[:5]}): they "
                         "carry no preference and only add noise. Drop them, e.g. dataset.filter(...) on the text.")
    return dataset.select_columns(list(PAIR_COLUMNS))


def preference_pairs(rankings: Sequence[Mapping], sources: Sequence[str] | None = None,
                     extremes: bool = False) -> Dataset:
    """Strict preferences in ranked answers as a conversational prompt/chosen/rejected dataset.

    ``rankings`` are records as chapter 5 saved them (``reward.judge_rankings``).  By default
    every strictly ordered pair becomes a row; ``extremes=True`` pairs only the best tier with
    the worst (best-vs-worst, as on-policy DPO recipes do).  With ``sources`` (e.g.
    ``["sft"]``), only answers whose ``sources`` entry is listed are paired.
    """
    from companion.reward import rankings_to_preferences

    rankings = validation.records("rankings", rankings)
    if sources is not None:
        sources = validation.text_list("sources", sources)
    if extremes:
        rankings = [dict(r, tiers=[r["tiers"][0], r["tiers"][-1]]) if len(r["tiers"]) > 2 else r for r in rankings]
    if sources is not None:
        keep = set(sources)
        kept = []
        for r in rankings:
            if "sources" not in r:
                raise ValueError("sources= needs rankings with a 'sources' list (which model wrote each answer)")
            idx = [i for i, s in enumerate(r["sources"]) if s in keep]
            order = {i: n for n, i in enumerate(idx)}
            tiers = [[order[int(i)] for i in t if int(i) in order] for t in r["tiers"]]
            kept.append({"prompt": r["prompt"], "answers": [r["answers"][i] for i in idx],
                         "tiers": [t for t in tiers if t]})
        rankings = kept
    return check_preference_pairs(rankings_to_preferences(rankings))


def topic_contrast_pairs(rankings: Sequence[Mapping], seed: int = 0) -> Dataset:
    """Minimal pairs that differ in one thing: the requested topic (tiny world).

    For each best-tier answer that mentions its requested topic, the rejected answer is the
    same story with that topic swapped for a stand-in of the same kind (a dog becomes a frog,
    see ``tinyworld.stand_ins``), which the gold judge fails on the topic check.  A pair of
    whole stories that differ in many ways says little about any one of them; a minimal pair
    says exactly what is wrong.  Rankings need the ``name``/``topic``/``template`` of their
    request (``reward.judge_rankings`` stores them).
    """
    import random

    from companion import tinyworld

    rankings = validation.records("rankings", rankings)
    rng = random.Random(seed)
    rows = []
    for n, r in enumerate(rankings):
        missing = [k for k in ("name", "topic", "template", "answers", "tiers") if k not in r]
        if missing:
            raise ValueError(f"ranking {n} lacks {missing}: topic_contrast_pairs needs rankings written by "
                             "reward.judge_rankings (they carry the request's name, topic and template)")
        spec = tinyworld.TaskSpec(r["name"], r["topic"], int(r["template"]))
        for i in r["tiers"][0]:
            answer = r["answers"][int(i)]
            options = [t for t in tinyworld.stand_ins(spec.topic) if not tinyworld.mentions(answer, t)]
            if not tinyworld.gold_judge(spec, answer).checks["topic"] or not options:
                continue
            swapped = tinyworld.swap_topic(answer, spec.topic, rng.choice(options))
            if tinyworld.gold_judge(spec, swapped).checks["topic"]:
                continue  # the topic survives in another form: not a minimal pair
            rows.append({"prompt": list(r["prompt"]), "chosen": [{"role": "assistant", "content": answer}],
                         "rejected": [{"role": "assistant", "content": swapped}]})
    if not rows:
        raise ValueError("no best answer mentions its topic, so no topic pair can be made; sample more answers")
    return check_preference_pairs(Dataset.from_list(rows))


def kto_dataset(rankings: Sequence[Mapping]) -> Dataset:
    """Unpaired data for KTO: every answer on its own, labelled good (True) when the judge passed it.

    Each ranking needs ``prompt``, ``answers`` and ``success`` (one bool per answer), as
    ``reward.judge_rankings`` writes them.
    """
    rankings = validation.records("rankings", rankings)
    rows = []
    for n, r in enumerate(rankings):
        if "success" not in r or len(r["success"]) != len(r["answers"]):
            raise ValueError(f"ranking {n} needs a 'success' flag per answer (from reward.judge_rankings); "
                             f"it has the keys {sorted(r)}")
        for answer, ok in zip(r["answers"], r["success"]):
            rows.append({"prompt": list(r["prompt"]), "completion": [{"role": "assistant", "content": answer}],
                         "label": bool(ok)})
    if not rows:
        raise ValueError("no answers to label: kto_dataset needs at least one ranking with answers")
    labels = {row["label"] for row in rows}
    if len(labels) < 2:
        raise ValueError(f"every answer is labelled {labels.pop()}: KTO needs both desirable and undesirable examples")
    return Dataset.from_list(rows)


def on_policy_pairs(model, tokenizer, specs: Sequence, k: int = 4, temperature: float = 1.0,
                    seed: int = 0) -> tuple[Dataset, list[dict]]:
    """One round of online DPO data: ``k`` fresh answers per spec from ``model``, ranked by the gold judge.

    Returns the preference pairs and the rankings (``reward.judge_rankings`` records).
    """
    from companion.reward import judge_rankings, sample_answers

    k = validation.integer("k", k)
    if k < 2:
        raise ValueError(f"k must be >= 2 answers per prompt to form a pair, got {k}")
    temperature = validation.number("temperature (> 0: the k answers must differ)", temperature, above=0.0)
    if isinstance(specs, str) or not isinstance(specs, Sequence) or not specs:
        raise TypeError(f"specs must be a non-empty list of tinyworld.TaskSpec, got {type(specs).__name__}; "
                        "e.g. tinyworld.make_instructions(64)")
    answers = sample_answers(model, tokenizer, [s.messages() for s in specs], k, temperature=temperature, seed=seed)
    rankings = judge_rankings(specs, answers)
    return preference_pairs(rankings), rankings


def kto_weights(labels: Sequence[bool], ratio: float = 1.0) -> dict:
    """``desirable_weight``/``undesirable_weight`` for :func:`kto_config` that balance the labels.

    The KTO paper recommends ``desirable_weight * n_good / (undesirable_weight * n_bad)`` in
    [1, 4/3]; we keep ``desirable_weight=1`` and scale the undesirable one to give ``ratio``.
    """
    if isinstance(labels, str):
        raise TypeError(f"labels must be a list of bools (True = desirable), got the string {labels!r}; "
                        "pass e.g. dataset['label']")
    good = sum(bool(x) for x in labels)
    bad = len(labels) - good
    if good == 0 or bad == 0:
        raise ValueError(f"labels need both kinds, got {good} desirable and {bad} undesirable answers")
    if not 1.0 <= ratio <= 4 / 3:
        raise ValueError(f"ratio must be in [1, 4/3] as the KTO paper recommends, got {ratio}")
    return {"desirable_weight": 1.0, "undesirable_weight": good / (bad * ratio)}


# --------------------------------------------------------------------------- configs
def _check_overrides(kwargs: dict) -> dict:
    """The settings TRL's configs accept but only fail on (or silently misuse) once training runs."""
    kwargs["beta"] = validation.number("beta (the pull towards the reference)", kwargs["beta"], above=0.0)
    kwargs["learning_rate"] = validation.number("learning_rate", kwargs["learning_rate"], minimum=0.0)
    return kwargs


def _shared_defaults(output_dir: str, p: Profile, pairs_or_answers: int) -> dict:
    """The settings DPO and KTO share; the batch is ``pairs_or_answers`` (4 x 4 / 8 x 4 accumulated on a GPU)."""
    gpu = p.device == "cuda"
    return dict(
        output_dir=output_dir,
        beta=0.1,
        learning_rate=2e-4 if p.is_tiny else 5e-6,
        num_train_epochs=1,
        per_device_train_batch_size=pairs_or_answers // 4 if gpu else pairs_or_answers,
        gradient_accumulation_steps=4 if gpu else 1,
        max_length=p.context_length,
        lr_scheduler_type="cosine",
        warmup_steps=2 if p.is_tiny else 10,
        logging_steps=2 if p.is_tiny else 10,
        disable_dropout=True,
        **runtime_args(p),
    )


def dpo_config(output_dir: str = "runs/dpo", profile: Profile | None = None, **overrides) -> DPOConfig:
    """TRL's ``DPOConfig`` with the book's defaults for the active profile (keywords override them).

    * ``beta=0.1`` (TRL's and the paper's default): the strength of the pull towards the reference.
    * ``loss_type=["sigmoid"]``: the DPO loss; TRL 1.16 takes a list, so
      ``["sigmoid", "sft"]`` adds the SFT loss on the chosen answers (RPO) and ``["ipo"]`` is IPO.
    * ``learning_rate`` 2e-4 for the tiny model (trained from scratch at 3e-3; TRL's 1e-6 barely
      moves it; 5e-5 over two epochs gained about as much as 2e-4 over one, measured), 5e-6 for
      LoRA on a real checkpoint; one epoch, cosine decay, short warmup.
    * batch 16 pairs (tiny), or 4 x 4 accumulated on a GPU; ``max_length`` the profile's context.
    * dropout off (TRL's default), and :func:`companion.training.runtime_args`.
    """
    p = profile or active_profile()
    defaults = {**_shared_defaults(output_dir, p, pairs_or_answers=16), "loss_type": ["sigmoid"]}
    kwargs = _check_overrides({**defaults, **overrides})
    loss_types = [kwargs["loss_type"]] if isinstance(kwargs["loss_type"], str) else list(kwargs["loss_type"])
    if not loss_types:
        raise ValueError(f"loss_type is empty; give at least one of {list(DPO_LOSS_TYPES)}, e.g. ['sigmoid']")
    for t in loss_types:
        validation.one_of("loss_type", t, DPO_LOSS_TYPES)
    return DPOConfig(**kwargs)


def kto_config(output_dir: str = "runs/kto", profile: Profile | None = None, **overrides) -> KTOConfig:
    """TRL's ``KTOConfig`` with the settings of :func:`dpo_config` (batch in answers, not pairs).

    KTO needs several answers per batch to estimate its reference point (the KL term), so the
    batch is 32 answers; ``desirable_weight``/``undesirable_weight`` (TRL's 1.0) balance unequal
    numbers of good and bad answers: pass :func:`kto_weights` of the data.
    """
    p = profile or active_profile()
    defaults = _shared_defaults(output_dir, p, pairs_or_answers=32)
    return KTOConfig(**_check_overrides({**defaults, **overrides}))


# --------------------------------------------------------------------------- trainers
PreferenceResult = TrainResult  # what train_dpo / train_kto return


def _reference(model, ref_model, peft_config):
    """The frozen reference: as given, none for LoRA (adapters off), else a copy of ``model`` as it is now.

    Without one, TRL 1.16 reloads the reference from ``model.config._name_or_path``: nothing
    for a model built in memory, a stale checkpoint for one trained since it was loaded.
    """
    if isinstance(model, str):
        raise TypeError(f"model must be a loaded model, got the string {model!r}; load it first, e.g. "
                        "companion.models.load_pretrained(path)")
    if ref_model is not None or peft_config is not None or is_peft(model):
        return ref_model
    return copy.deepcopy(model).eval()


def _run(make_trainer, args, retry: bool = True, resume_from_checkpoint: str | bool | None = None) -> PreferenceResult:
    """Train (retrying with smaller micro-batches on a GPU out-of-memory) and collect the result."""
    cuda = torch.cuda.is_available() and args.use_cpu is False
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer, _ = train_with_oom_retry(make_trainer, args, retry=retry, resume_from_checkpoint=resume_from_checkpoint)
    seconds = time.perf_counter() - start
    return PreferenceResult(model=plain_model(trainer), history=history_of(trainer.state.log_history),
                            train_seconds=seconds, peak_memory_mb=peak_memory_mb(cuda))


def train_dpo(model, tokenizer, train_dataset: Dataset, args: DPOConfig | None = None, ref_model=None,
              peft_config=None, callbacks=None, resume_from_checkpoint: str | bool | None = None) -> PreferenceResult:
    """Train ``model`` on preference pairs with TRL's ``DPOTrainer`` (any ``loss_type`` it knows).

    ``history`` holds TRL's metrics per logging step: ``loss``, ``rewards/chosen``,
    ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``, ...
    ``resume_from_checkpoint=True`` continues a killed run (:func:`companion.training.resume_checkpoint`).
    """
    pairs = check_preference_pairs(train_dataset)
    reference = _reference(model, ref_model, peft_config)

    def make(a):
        model.__dict__.pop("forward", None)  # a retry: drop the fused-LM-head patch the last trainer added
        return DPOTrainer(model=model, ref_model=reference, args=a, train_dataset=pairs, processing_class=tokenizer,
                          peft_config=peft_config, callbacks=callbacks)

    return _run(make, args or dpo_config(), retry=peft_config is None, resume_from_checkpoint=resume_from_checkpoint)


def train_kto(model, tokenizer, train_dataset: Dataset, args: KTOConfig | None = None, ref_model=None,
              peft_config=None, callbacks=None, resume_from_checkpoint: str | bool | None = None) -> PreferenceResult:
    """Train ``model`` on unpaired labelled answers (:func:`kto_dataset`) with TRL's ``KTOTrainer``."""
    missing = [c for c in KTO_COLUMNS if c not in getattr(train_dataset, "column_names", ())]
    if missing:
        raise ValueError(f"KTO data needs the columns {list(KTO_COLUMNS)}; missing {missing}. Build it with "
                         "companion.dpo.kto_dataset(rankings).")
    if len(train_dataset) == 0:
        raise ValueError("the KTO dataset is empty: it needs labelled answers")
    reference, data = _reference(model, ref_model, peft_config), train_dataset.select_columns(list(KTO_COLUMNS))

    def make(a):
        model.__dict__.pop("forward", None)  # a retry: drop the fused-LM-head patch the last trainer added
        return KTOTrainer(model=model, ref_model=reference, args=a, train_dataset=data, processing_class=tokenizer,
                          peft_config=peft_config, callbacks=callbacks)

    return _run(make, args or kto_config(), retry=peft_config is None, resume_from_checkpoint=resume_from_checkpoint)


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def implicit_reward_accuracy(policy, reference, tokenizer, pairs: Dataset, beta: float = 0.1,
                             batch_size: int = 32) -> dict:
    """How often the policy's implicit reward ranks held-out pairs right (ties count half).

    Returns ``accuracy``, the mean ``margin``, the per-pair ``margins``, and how far training
    moved the log-probabilities of the chosen and of the rejected answers on average
    (``chosen_shift``/``rejected_shift``, nats: policy minus reference).
    """
    from companion.evaluation import sequence_logprobs

    beta = validation.number("beta (it scales the implicit reward)", beta, above=0.0)
    batch_size = validation.integer("batch_size", batch_size, minimum=1)
    pairs = check_preference_pairs(pairs)
    prompts = list(pairs["prompt"])
    chosen = [_content(c) for c in pairs["chosen"]]
    rejected = [_content(r) for r in pairs["rejected"]]
    lp = {name: (sequence_logprobs(m, tokenizer, prompts, chosen, batch_size=batch_size),
                 sequence_logprobs(m, tokenizer, prompts, rejected, batch_size=batch_size))
          for name, m in (("policy", policy), ("reference", reference))}
    out = dpo_loss(lp["policy"][0], lp["policy"][1], lp["reference"][0], lp["reference"][1], beta)
    margins = out.margins
    accuracy = float(((margins > 0).float() + 0.5 * (margins == 0).float()).mean())
    return {"accuracy": accuracy, "margin": float(margins.mean()), "margins": margins,
            "chosen_shift": float((lp["policy"][0] - lp["reference"][0]).mean()),
            "rejected_shift": float((lp["policy"][1] - lp["reference"][1]).mean())}
