"""A Llama-style Transformer in plain torch, small enough to read in one sitting.

The same architecture as transformers' ``LlamaForCausalLM`` (the book's models), written out::

    x = embed(tokens)
    for each block:
        x = x + attention(rms_norm(x))      # causal self-attention, rotary positions
        x = x + swiglu_mlp(rms_norm(x))
    logits = lm_head(rms_norm(x))          # lm_head shares the embedding matrix when tied

:func:`transformer_from_llama` copies a trained transformers model into it (the logits match),
and :func:`attention_maps` shows where every head of every layer looks.  There is no KV cache,
padding mask or dropout: this model is for reading and inspecting, the transformers one for training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:  # only for the type hints: this module itself is plain torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer


@dataclass(frozen=True)
class TransformerConfig:
    """The sizes of a decoder-only Transformer (defaults: the tiny profile's model)."""

    vocab_size: int = 4096
    hidden_size: int = 192
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 4  # fewer than n_head: grouped-query attention (heads share keys and values)
    intermediate_size: int = 512
    context_length: int = 256
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.hidden_size % self.n_head:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}")
        if (self.hidden_size // self.n_head) % 2:
            raise ValueError(f"the head size hidden_size/n_head = {self.hidden_size // self.n_head} must be even "
                             "for rotary embeddings (they rotate pairs of dimensions)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_head


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight: LayerNorm without the mean and the bias."""

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # the mean of squares in float32, as transformers does
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rotary_cos_sin(seq_len: int, head_dim: int, theta: float = 10000.0,
                   device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angle ``position * inv_freq[i]``, shape ``(seq_len, head_dim)``.

    ``inv_freq[i] = 1 / theta^(2i/head_dim)``: the first pairs of dimensions turn fast with the
    position, the last ones slowly.  Each frequency is used twice, once per half of the head.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    angles = torch.arange(seq_len, device=device).float()[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[i], x[i + head_dim/2]) of every query or key by its position's angle."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


def causal_mask(seq_len: int, device: torch.device | None = None) -> torch.Tensor:
    """``mask[i, j]`` is True where position i may look at position j, that is j <= i."""
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees itself and the positions before it."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.n_head * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output, weights)``: output ``(B, T, hidden)``, weights ``(B, n_head, T, T)``, rows sum to 1."""
        B, T, _ = x.shape
        # (B, T, heads * head_dim) -> (B, heads, T, head_dim)
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        # grouped-query attention: each key/value head serves n_head / n_kv_head query heads
        k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)

        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, n_head, T, T)
        scores = scores.masked_fill(~causal_mask(T, x.device), float("-inf"))
        weights = F.softmax(scores.float(), dim=-1).to(q.dtype)
        out = weights @ v  # (B, n_head, T, head_dim): a weighted average of the values
        out = out.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.o_proj(out), weights


class SwiGLU(nn.Module):
    """The feed-forward layer: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderBlock(nn.Module):
    """One layer: pre-norm attention and pre-norm MLP, each added back to the residual stream."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, attention weights)`` after this layer."""
        attended, weights = self.attn(self.attn_norm(x), cos, sin)
        x = x + attended
        x = x + self.mlp(self.mlp_norm(x))
        return x, weights


class Transformer(nn.Module):
    """A decoder-only language model: embeddings -> blocks -> final norm -> logits."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight  # one matrix reads tokens in and writes them out

    def forward(self, input_ids: torch.Tensor,
                return_attention: bool = False) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """``(logits, attentions)`` for ``input_ids`` of shape ``(B, T)``, without padding.

        logits: ``(B, T, vocab_size)``, the prediction of the token after each position.
        attentions: with ``return_attention``, one ``(B, n_head, T, T)`` tensor per layer; else None.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}; "
                             "for one sequence use input_ids[None]")
        seq_len = input_ids.shape[1]
        if seq_len > self.cfg.context_length:
            raise ValueError(f"input_ids has {seq_len} tokens, more than the model's context_length="
                             f"{self.cfg.context_length}; cut it to the last {self.cfg.context_length} tokens")
        cos, sin = rotary_cos_sin(seq_len, self.cfg.head_dim, self.cfg.rope_theta, input_ids.device)
        x = self.embed(input_ids)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, cos, sin)
            attentions.append(weights)
        logits = self.lm_head(self.norm(x))
        return logits, (attentions if return_attention else None)


@torch.no_grad()
def attention_maps(model: Transformer, input_ids: torch.Tensor) -> torch.Tensor:
    """Every layer's attention weights, shape ``(n_layer, B, n_head, T, T)``.

    ``maps[layer, b, head, i, j]`` is how much position i attends to position j (zero for j > i).
    A 1-D ``input_ids`` (one sequence) gives ``(n_layer, n_head, T, T)``.
    """
    single = input_ids.ndim == 1
    model.eval()
    _, attentions = model(input_ids[None] if single else input_ids, return_attention=True)
    maps = torch.stack(attentions)
    return maps[:, 0] if single else maps


# --------------------------------------------------------------------------- from transformers' Llama
def _unsupported(option: str, value, fix: str) -> ValueError:
    return ValueError(f"{option}={value!r} is not supported by companion.attention.Transformer: {fix}")


def config_from_llama(config: LlamaConfig) -> TransformerConfig:
    """The :class:`TransformerConfig` of a transformers ``LlamaConfig``; options it lacks raise ValueError."""
    if getattr(config, "model_type", None) != "llama":
        raise TypeError(f"expected a Llama config (model_type 'llama'), got model_type="
                        f"{getattr(config, 'model_type', None)!r}; build the model with arch='llama'")
    rope = dict(config.rope_parameters or {})  # transformers 5: rope_theta and any scaling live here
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
        raise _unsupported("rope_parameters['rope_type']", rope_type, "only plain RoPE is implemented; "
                           "use the transformers model for scaled RoPE (linear, dynamic, yarn, llama3, ...)")
    if config.hidden_act != "silu":
        raise _unsupported("hidden_act", config.hidden_act, "the MLP is SwiGLU (silu); use hidden_act='silu'")
    for option in ("attention_bias", "mlp_bias"):
        if getattr(config, option, False):
            raise _unsupported(option, True, f"the linear layers have no bias; use {option}=False")
    if getattr(config, "attention_dropout", 0.0):
        raise _unsupported("attention_dropout", config.attention_dropout,
                           "this model has no dropout; use attention_dropout=0.0")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim * config.num_attention_heads != config.hidden_size:
        raise _unsupported("head_dim", head_dim, f"heads must split hidden_size evenly: use head_dim="
                                                 f"{config.hidden_size // config.num_attention_heads}")
    return TransformerConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, n_layer=config.num_hidden_layers,
        n_head=config.num_attention_heads,
        n_kv_head=config.num_key_value_heads or config.num_attention_heads,
        intermediate_size=config.intermediate_size, context_length=config.max_position_embeddings,
        rope_theta=float(rope.get("rope_theta", 10000.0)),
        rms_norm_eps=config.rms_norm_eps, tie_word_embeddings=bool(config.tie_word_embeddings),
    )


@torch.no_grad()
def copy_llama_layer(block: DecoderBlock, layer: LlamaDecoderLayer) -> DecoderBlock:
    """Copy the weights of a transformers ``LlamaDecoderLayer`` into ``block`` (in place)."""
    pairs = [
        (block.attn_norm, layer.input_layernorm),
        (block.attn.q_proj, layer.self_attn.q_proj),
        (block.attn.k_proj, layer.self_attn.k_proj),
        (block.attn.v_proj, layer.self_attn.v_proj),
        (block.attn.o_proj, layer.self_attn.o_proj),
        (block.mlp_norm, layer.post_attention_layernorm),
        (block.mlp.gate_proj, layer.mlp.gate_proj),
        (block.mlp.up_proj, layer.mlp.up_proj),
        (block.mlp.down_proj, layer.mlp.down_proj),
    ]
    for mine, theirs in pairs:
        mine.weight.copy_(theirs.weight)
    return block


@torch.no_grad()
def transformer_from_llama(model: LlamaForCausalLM) -> Transformer:
    """A :class:`Transformer` with the weights of a transformers ``LlamaForCausalLM`` (same logits)."""
    cfg = config_from_llama(model.config)
    ours = Transformer(cfg)
    ours.embed.weight.copy_(model.model.embed_tokens.weight)
    for block, layer in zip(ours.blocks, model.model.layers, strict=True):
        copy_llama_layer(block, layer)
    ours.norm.weight.copy_(model.model.norm.weight)
    if not cfg.tie_word_embeddings:
        ours.lm_head.weight.copy_(model.lm_head.weight)
    weight = model.model.embed_tokens.weight
    return ours.to(device=weight.device, dtype=weight.dtype).eval()
