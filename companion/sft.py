"""Supervised fine-tuning (instruction tuning): a thin layer over TRL's ``SFTTrainer``.

The recipe is TRL's: a config (:func:`sft_config` returns an ``SFTConfig`` with the
book's defaults, each explained below) and a trainer (:func:`train_sft` builds an
``SFTTrainer``, trains, and returns the model with its loss history).  LoRA is one
argument away (``peft_config=lora_config()``) and :func:`merge_lora` folds the adapter
back into the base weights.  From a script::

    from companion import pipeline, sft, tinyworld
    model, tok = pipeline.base_model()
    result = sft.train_sft(model, tok, tinyworld.sft_dataset(), args=sft.sft_config(max_steps=300))
    print(sft.evaluate_gold(result.model, tok, tinyworld.held_out_prompts(64))["success_rate"])
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import Trainer

from companion.versions import incompatible

try:
    from trl import SFTConfig, SFTTrainer
except ImportError as e:  # an API that moved between releases: say which versions work
    raise incompatible("trl", e) from e

from companion.profiles import Profile
from companion.profiles import profile as active_profile
from companion.sampling import context_length
from companion.tokenizer import chat_stop_ids
from companion.training import runtime_args, train_with_oom_retry, trained_model


# --------------------------------------------------------------------------- data checks
def check_sft_dataset(dataset: Dataset) -> Dataset:
    """Return ``dataset`` if it is conversational SFT data, else raise a ValueError that says why.

    SFT data needs a ``messages`` column; every conversation must contain at least one
    assistant turn with non-empty content (with assistant-only loss, an empty answer
    would contribute no tokens to learn from).
    """
    if "messages" not in dataset.column_names:
        raise ValueError(
            f"SFT data needs a 'messages' column (a list of {{'role', 'content'}} turns); this dataset has "
            f"{dataset.column_names}. Convert it first, e.g. "
            "dataset.map(lambda r: {'messages': [{'role': 'user', 'content': r['prompt']}, "
            "{'role': 'assistant', 'content': r['completion']}]})."
        )
    if len(dataset) == 0:
        raise ValueError("SFT dataset is empty: it needs at least one conversation.")
    for i, messages in enumerate(dataset["messages"]):
        answers = [m for m in messages if m.get("role") == "assistant"]
        if not answers:
            raise ValueError(f"row {i} has no assistant turn; every conversation needs an answer to learn from.")
        if any(not (m.get("content") or "").strip() for m in answers):
            raise ValueError(
                f"row {i} has an empty assistant turn; drop it (dataset.filter) or fill in the answer."
            )
    return dataset


def assistant_mask(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, mask) of a conversation; mask[i] = 1 where token i is the assistant's.

    This is the mask TRL's ``assistant_only_loss=True`` applies to the labels: the loss
    is computed on the positions with mask 1 only.  It comes from the chat template's
    ``{% generation %}`` markers.
    """
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    mask = list(out["assistant_masks"])
    if not any(mask):
        raise ValueError("the chat template marked no assistant tokens: it needs {% generation %} markers")
    return list(out["input_ids"]), mask


def to_plain_text(messages: list[dict], eos: str = "") -> str:
    """A conversation with its role markers removed: the turns joined by newlines.

    Training on this format shows why chat markers exist: nothing tells the model where
    the question ends and the answer starts, so it may continue the question.
    """
    return "\n".join(m["content"] for m in messages) + eos


# --------------------------------------------------------------------------- config
def sft_config(output_dir: str = "runs/sft", profile: Profile | None = None, **overrides) -> SFTConfig:
    """TRL's ``SFTConfig`` with the book's defaults for the active profile.

    Defaults (change any of them with keyword arguments):

    * ``assistant_only_loss=True``: learn to *answer*, not to imitate the user; the loss
      is masked to the tokens inside the template's ``{% generation %}`` markers.
    * ``max_length``: the profile's context length (256 tiny, 512 gpu); longer
      conversations are truncated at the end.
    * ``learning_rate``: 3e-3 for the tiny model (small models and short runs tolerate
      large steps), 2e-5 (TRL's default) for a real 135M checkpoint, where larger steps
      erase what pretraining taught.
    * ``max_steps``: 250 tiny (about 5 epochs of the tiny world's 755 demonstrations at batch 16) and 1000 gpu.
      Chosen on a validation set of held-out prompts (``tinyworld.held_out_prompts(200, seed=4321)``,
      not the chapters' test prompts): there 250 steps gave 0.48 gold success and 150 steps 0.35
      (another data draw); at 150 steps the test-prompt success swung from 0.30 to 0.45 with the
      data draw (undertrained).
    * ``lr_scheduler_type="cosine"`` with a short warmup: the standard fine-tuning schedule.
    * ``gradient_checkpointing`` only on a GPU; ``bf16`` where the hardware has fast bfloat16
      (a GPU, or a CPU with AMX/AVX512-BF16: see ``profiles.tiny_bf16``; ``COMPANION_BF16`` overrides).
    * no checkpoints, no external loggers: the trained model is saved by the caller
      (see ``pipeline.sft_model``).
    """
    p = profile or active_profile()
    defaults = dict(
        output_dir=output_dir,
        assistant_only_loss=True,
        max_length=p.context_length,
        packing=False,
        learning_rate=3e-3 if p.is_tiny else 2e-5,
        max_steps=250 if p.is_tiny else 1000,
        per_device_train_batch_size=p.batch_size,
        per_device_eval_batch_size=p.batch_size,
        lr_scheduler_type="cosine",
        warmup_steps=10 if p.is_tiny else 30,
        weight_decay=0.0,
        logging_steps=10,
        **runtime_args(p),
    )
    return SFTConfig(**{**defaults, **overrides})


def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.0,
                target_modules: str | list[str] = "all-linear",
                trainable_tokens: list[int] | None = None) -> LoraConfig:
    """A PEFT LoRA config: rank-``r`` updates ``B @ A`` (scaled by alpha/r) on every linear layer.

    ``all-linear`` adapts attention and MLP projections (not the output head); the base
    weights stay frozen, only the ``lora_A``/``lora_B`` matrices train.
    ``trainable_tokens``: token ids whose embedding rows train too (PEFT's
    ``trainable_token_indices``), for tokens pretraining never saw, such as the chat
    markers (see :func:`chat_token_ids`): with their embeddings frozen at random values a
    LoRA model hardly learns to end its turn.
    """
    if r < 1:
        raise ValueError(f"LoRA rank r must be >= 1, got {r}")
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                      task_type="CAUSAL_LM", bias="none", trainable_token_indices=trainable_tokens)


def chat_token_ids(tokenizer) -> list[int]:
    """Ids of the chat template's role markers (``<|im_start|>``, ``<|im_end|>``)."""
    from companion.tokenizer import IM_END, IM_START

    ids = tokenizer.convert_tokens_to_ids([IM_START, IM_END])
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError("the tokenizer has no chat markers; call companion.tokenizer.ensure_chat_template(tokenizer) first")
    return ids


# --------------------------------------------------------------------------- training
class LogitsLossSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss comes from the model's own logits (for CPU runs).

    TRL computes the SFT loss with a fused, chunked LM head that never builds the full
    logits: a large memory saving on a GPU with a 50k-token vocabulary.  On a CPU with the
    tiny model's 4,096 tokens its pure-PyTorch fallback costs more than it saves (measured:
    about twice the time per step), so this trainer takes the ordinary path of
    ``transformers.Trainer``: the same cross-entropy over the same labels (-100 outside the
    assistant's tokens), normalised by the same token count.  It does not log TRL's
    ``entropy``/``mean_token_accuracy`` training metrics.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs["use_cache"] = False
        return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)


@dataclass
class SFTResult:
    """What :func:`train_sft` returns: the trained model, its losses and its cost."""

    model: torch.nn.Module
    history: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    trainable_params: int = 0
    total_params: int = 0
    peak_memory_mb: float | None = None
    trainer: SFTTrainer | None = None


def _param_counts(model) -> tuple[int, int]:
    seen, total, trainable = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def train_sft(model, tokenizer, train_dataset: Dataset, eval_dataset: Dataset | None = None,
              args: SFTConfig | None = None, peft_config: LoraConfig | None = None,
              logits_loss: bool | None = None, callbacks=None,
              resume_from_checkpoint: str | bool | None = None) -> SFTResult:
    """Fine-tune ``model`` on conversational data with TRL's ``SFTTrainer``.

    With ``peft_config`` the trainer wraps the model in LoRA adapters (the returned
    model is a ``PeftModel``; see :func:`merge_lora`).  ``history`` holds the logged
    training loss and, with an eval set, the held-out loss before and after training.
    ``logits_loss`` picks :class:`LogitsLossSFTTrainer` (default: on CPU only).
    ``resume_from_checkpoint=True`` continues a killed run from its latest checkpoint
    (``save_strategy="steps"`` in ``args``; see :func:`companion.training.resume_checkpoint`).
    """
    args = args or sft_config()
    if args.assistant_only_loss:
        check_sft_dataset(train_dataset)
        if eval_dataset is not None:
            check_sft_dataset(eval_dataset)
    if logits_loss is None:
        logits_loss = args.use_cpu or not torch.cuda.is_available()
    trainer_class = LogitsLossSFTTrainer if logits_loss else SFTTrainer
    history: dict = {}
    cuda = torch.cuda.is_available() and not args.use_cpu
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def make(a):
        trainer = trainer_class(model=model, args=a, train_dataset=train_dataset, eval_dataset=eval_dataset,
                                processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
        if eval_dataset is not None and "eval_loss_before" not in history:
            history["eval_loss_before"] = trainer.evaluate()["eval_loss"]
        return trainer

    start = time.perf_counter()
    trainer, args = train_with_oom_retry(make, args, retry=peft_config is None,
                                         resume_from_checkpoint=resume_from_checkpoint)
    logs = trainer.state.log_history
    seconds = next((r["train_runtime"] for r in reversed(logs) if "train_runtime" in r), time.perf_counter() - start)
    trainable, total = _param_counts(trainer.model)
    history["train_steps"] = [r["step"] for r in logs if "loss" in r]
    history["train_loss"] = [r["loss"] for r in logs if "loss" in r]
    if eval_dataset is not None:
        history["eval_loss"] = trainer.evaluate()["eval_loss"]
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return SFTResult(model=trained_model(trainer), history=history, train_seconds=seconds, trainable_params=trainable,
                     total_params=total, peak_memory_mb=peak, trainer=trainer)


def merge_lora(model):
    """Fold LoRA adapters into the base weights (W + alpha/r * B @ A) and return a plain model."""
    if not isinstance(model, PeftModel):
        raise ValueError("merge_lora expects a PeftModel (a model trained with peft_config=lora_config()).")
    return model.merge_and_unload()


# --------------------------------------------------------------------------- generation & evaluation
@torch.no_grad()
def check_chat_tokenizer(tokenizer) -> None:
    """Raise a clear error when ``tokenizer`` cannot render conversations (it has no chat template)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the tokenizer has no chat template, so conversations cannot be rendered for the model. "
                         "Give it the book's ChatML template with companion.tokenizer.ensure_chat_template(tokenizer) "
                         "(then fine-tune on that format, chapter 4), or load an instruct model's tokenizer.")


def check_prompt_lengths(lengths: list[int], context: int | None, first_index: int = 0, fix: str = "") -> None:
    """Raise when a prompt alone is longer than the model's context (the model would read positions it never saw)."""
    if context is None:
        return
    long = [(first_index + i, n) for i, n in enumerate(lengths) if n > context]
    if long:
        i, n = long[0]
        raise ValueError(f"conversation {i} is {n} tokens long, more than the model's context of {context} tokens "
                         f"({len(long)} prompt(s) in this batch are too long). "
                         + (fix or "Shorten it, or use a model with a longer context (the gpu profile's)."))


def chat_responses(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 200,
                   temperature: float = 0.0, batch_size: int = 32, seed: int = 0,
                   show_progress: bool = False, **generate_kwargs) -> list[str]:
    """The assistant's reply to each conversation (greedy by default), batched.

    Prompts are rendered with the chat template plus the assistant header; generation
    stops at ``<|im_end|>`` or EOS.  Special tokens are stripped from the replies.
    ``generate_kwargs`` go to ``model.generate`` (e.g. ``repetition_penalty=1.2``).
    """
    from tqdm.auto import tqdm

    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    check_chat_tokenizer(tokenizer)
    model.eval()
    device = next(model.parameters()).device
    context = context_length(model)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only models generate from the right end
    stop = chat_stop_ids(tokenizer)
    out: list[str] = []
    try:
        torch.manual_seed(seed)
        starts = range(0, len(conversations), batch_size)
        for i in tqdm(starts, desc="generating", disable=not show_progress):
            texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                     for c in conversations[i:i + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            check_prompt_lengths(enc["attention_mask"].sum(1).tolist(), context, first_index=i)
            options = dict(max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                           temperature=temperature if temperature > 0 else None, top_k=None, top_p=None,
                           eos_token_id=stop, pad_token_id=tokenizer.pad_token_id)
            gen = model.generate(**enc, **{**options, **generate_kwargs})
            new = gen[:, enc["input_ids"].shape[1]:]
            out.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return out


def evaluate_gold(model, tokenizer, specs, max_new_tokens: int = 200, temperature: float = 0.0,
                  **kwargs) -> dict:
    """Generate a reply to each tiny-world spec and grade it with the gold judge.

    Returns ``success_rate``, ``mean_score``, the per-check pass rates, and the replies
    with their verdicts.
    """
    from companion import tinyworld

    replies = chat_responses(model, tokenizer, [s.messages() for s in specs], max_new_tokens,
                             temperature, **kwargs)
    results = tinyworld.judge_many(specs, replies)
    checks = {k: sum(r.checks[k] for r in results) / len(results) for k in tinyworld.CHECKS}
    return {"success_rate": tinyworld.success_rate(results),
            "mean_score": sum(r.score for r in results) / len(results),
            "checks": checks, "replies": replies, "results": results}


def answer_loss(model, tokenizer, dataset: Dataset, batch_size: int = 32) -> float:
    """Mean cross-entropy per assistant token over ``dataset`` (the held-out SFT loss)."""
    check_sft_dataset(dataset)
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    rows = [assistant_mask(tokenizer, m) for m in dataset["messages"]]
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        pad = tokenizer.pad_token_id
        x = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in chunk], device=device)
        on = torch.tensor([m + [0] * (width - len(m)) for _, m in chunk], device=device, dtype=torch.bool)
        attn = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in chunk], device=device)
        with torch.no_grad():
            logits = model(input_ids=x, attention_mask=attn).logits[:, :-1].float()
        on = on[:, 1:]  # token t+1 is predicted at position t
        total += torch.nn.functional.cross_entropy(logits[on], x[:, 1:][on], reduction="sum").item()
        count += int(on.sum())
    return total / count if count else math.nan
