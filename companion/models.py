"""Model factory: small causal LMs built from a transformers config, or real checkpoints."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

from companion.profiles import Profile
from companion.profiles import profile as active_profile
from companion.tokenizer import ensure_chat_template

ARCHITECTURES = ("llama", "gpt2")


def tiny_config(vocab_size: int, n_layer: int = 4, n_head: int = 4, n_embd: int = 192,
                intermediate_size: int = 512, context_length: int = 256, arch: str = "llama",
                bos_token_id: int = 0, eos_token_id: int = 0, pad_token_id: int = 1):
    """A transformers config for a small decoder-only LM (Llama- or GPT-2-style)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    if n_embd % n_head:
        raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_positions=context_length, n_embd=n_embd, n_layer=n_layer,
            n_head=n_head, n_inner=intermediate_size, bos_token_id=bos_token_id,
            eos_token_id=eos_token_id, pad_token_id=pad_token_id, tie_word_embeddings=True,
        )
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=n_embd, intermediate_size=intermediate_size,
        num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_head,
        max_position_embeddings=context_length, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )


def build_causal_lm(tokenizer, profile: Profile | None = None, arch: str = "llama",
                    seed: int | None = 0, **overrides) -> PreTrainedModel:
    """A randomly initialized causal LM sized by the profile (``overrides`` win)."""
    p = profile or active_profile()
    sizes = {**p.model_config, "context_length": p.context_length, **overrides}
    cfg = tiny_config(
        vocab_size=len(tokenizer), arch=arch, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sizes,
    )
    if seed is not None:
        torch.manual_seed(seed)
    model = (GPT2LMHeadModel if arch == "gpt2" else LlamaForCausalLM)(cfg)
    return model


def load_pretrained(model_id: str, device: str | None = None, dtype=None):
    """Load a Hub id or local directory as (model, tokenizer) with a chat template."""
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    ensure_chat_template(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype or "auto")
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if device:
        model.to(device)
    return model, tokenizer


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters; tied weights are counted once."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
