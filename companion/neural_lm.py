"""A neural n-gram model in the style of Bengio et al. (2003).

The previous ``context`` tokens are looked up in an embedding table, the embeddings are
concatenated, passed through one ``tanh`` hidden layer, and a linear layer gives logits over
the vocabulary:

    x = [E[w_{t-3}]; E[w_{t-2}]; E[w_{t-1}]]       (context * embed_dim)
    h = tanh(W x + b)                               (hidden)
    P(w_t | context) = softmax(U h + c)             (vocab_size)

Unlike a count table, similar tokens get similar embeddings, so what is learned about one
context carries over to contexts that were never seen.  Sequences are padded exactly like
:class:`companion.ngram.NGramLM` (``context`` copies of BOS on the left, one EOS on the
right), so the perplexities of the two are comparable token for token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from companion import validation


@dataclass
class MLPLMConfig:
    """Sizes of the model."""

    vocab_size: int
    context: int = 3
    embed_dim: int = 64
    hidden: int = 256


class MLPLanguageModel(nn.Module):
    """Embeddings of the last ``context`` tokens, concatenated -> tanh layer -> vocabulary logits."""

    def __init__(self, cfg: MLPLMConfig):
        super().__init__()
        if cfg.context < 1 or cfg.vocab_size < 2:
            raise ValueError(f"need context >= 1 and vocab_size >= 2, got {cfg}")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.hidden = nn.Linear(cfg.context * cfg.embed_dim, cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.vocab_size)

    def forward(self, context_ids: torch.Tensor) -> torch.Tensor:
        """``context_ids``: (batch, context) token ids -> (batch, vocab_size) logits."""
        if context_ids.ndim != 2 or context_ids.shape[1] != self.cfg.context:
            raise ValueError(
                f"expected context ids of shape (batch, {self.cfg.context}), got {tuple(context_ids.shape)}"
            )
        x = self.embed(context_ids).flatten(1)
        return self.out(torch.tanh(self.hidden(x)))


def make_windows(sequences: Sequence[Sequence[int]], context: int, bos_id: int,
                 eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All (context, next token) training pairs: X (N, context) and Y (N,) as int64 tensors.

    Each sequence becomes ``[bos] * context + seq + [eos]``; every position after the
    padding is one prediction, so a sequence of length L gives L + 1 pairs.
    """
    xs, ys = [], []
    for seq in sequences:
        padded = torch.tensor([bos_id] * context + list(seq) + [eos_id], dtype=torch.long)
        windows = padded.unfold(0, context + 1, 1)  # (L + 1, context + 1)
        xs.append(windows[:, :-1])
        ys.append(windows[:, -1])
    if not xs:
        raise ValueError("make_windows() got no sequences")
    return torch.cat(xs), torch.cat(ys)


@dataclass
class MLPTrainConfig:
    """How to train: AdamW for ``steps`` minibatches, evaluating every ``eval_every`` steps."""

    steps: int = 1500
    batch_size: int = 256
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    eval_every: int = 250
    seed: int = 0


@torch.no_grad()
def mlp_perplexity(model: MLPLanguageModel, X: torch.Tensor, Y: torch.Tensor,
                   batch_size: int = 4096) -> float:
    """exp(mean cross-entropy) of the model on (X, Y)."""
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(X), batch_size):
        xb, yb = X[i:i + batch_size].to(device), Y[i:i + batch_size].to(device)
        total += F.cross_entropy(model(xb), yb, reduction="sum").item()
    return math.exp(total / len(X))


def train_mlp_lm(model: MLPLanguageModel, train: tuple[torch.Tensor, torch.Tensor],
                 val: tuple[torch.Tensor, torch.Tensor] | None, cfg: MLPTrainConfig) -> dict:
    """Train with random minibatches; return ``{"step", "train_loss", "val_ppl"}`` lists."""
    X, Y = train
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    history: dict[str, list] = {"step": [], "train_loss": [], "val_step": [], "val_ppl": []}
    running = None
    for step in tqdm(range(1, cfg.steps + 1), desc="MLP LM", mininterval=1.0):
        model.train()
        idx = torch.randint(len(X), (cfg.batch_size,), generator=g)
        loss = F.cross_entropy(model(X[idx].to(device)), Y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 25 == 0 or step == 1:
            history["step"].append(step)
            history["train_loss"].append(running)
        if val is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            history["val_step"].append(step)
            history["val_ppl"].append(mlp_perplexity(model, *val))
    return history


@torch.no_grad()
def sample_mlp(model: MLPLanguageModel, prefix: Sequence[int], bos_id: int, eos_id: int,
               max_tokens: int = 40, temperature: float = 1.0, seed: int | None = None) -> list[int]:
    """Sample token ids after ``prefix`` until EOS or ``max_tokens`` (the prefix is not returned)."""
    from companion.sampling import sample_token

    model.eval()
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    history = [bos_id] * model.cfg.context + list(prefix)
    out: list[int] = []
    for _ in range(max_tokens):
        ctx = torch.tensor([history[-model.cfg.context:]], device=next(model.parameters()).device)
        token = sample_token(model(ctx)[0].cpu(), temperature=temperature, generator=g)
        if token == eos_id:
            break
        out.append(token)
        history.append(token)
    return out


def _scoring_window(model, context_length: int | None) -> int:
    """The window length to score with: ``context_length``, or by default the model's maximum."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)  # as sampling.context_length
    if context_length is None:
        if limit is None:
            raise ValueError("the model's config has no max_position_embeddings, so its context length is "
                             "unknown; pass context_length=<the longest input it was trained on>")
        context_length = limit
    context_length = validation.integer("context_length", context_length)
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2 (a window needs one token to read and one to predict), "
                         f"got {context_length}; pass context_length=None to use the model's own maximum")
    if limit is not None and context_length > limit:
        raise ValueError(f"context_length={context_length} is longer than the model's max_position_embeddings="
                         f"{limit}; pass context_length={limit} or less (or None for the model's own maximum)")
    return context_length


@torch.no_grad()
def causal_lm_token_logprobs(model, token_seqs: Sequence[Sequence[int]], bos_id: int, eos_id: int,
                             context_length: int | None = None) -> list[torch.Tensor]:
    """Per-sequence log-probabilities of every token of a transformers causal LM.

    Each sequence becomes ``[bos] + seq + [eos]`` and every token after the first is
    predicted (L + 1 predictions, like :class:`companion.ngram.NGramLM`).  Sequences longer
    than the context are cut into consecutive windows; each window after the first starts
    with the last token of the previous one, so every token is predicted exactly once.
    ``context_length`` (the window) defaults to the model's ``max_position_embeddings``.
    """
    context_length = _scoring_window(model, context_length)
    device = next(model.parameters()).device
    model.eval()
    out = []
    for seq in token_seqs:
        ids = [bos_id, *seq, eos_id]
        parts = []
        for start in range(0, len(ids) - 1, context_length - 1):
            window = torch.tensor([ids[start:start + context_length]], device=device)
            logp = torch.log_softmax(model(input_ids=window).logits[0, :-1].float(), -1)
            parts.append(logp.gather(1, window[0, 1:, None])[:, 0].cpu())
        out.append(torch.cat(parts))
    return out


def causal_lm_perplexity(model, token_seqs: Sequence[Sequence[int]], bos_id: int, eos_id: int,
                         context_length: int | None = None) -> float:
    """Perplexity of a causal LM over sequences, scored like :class:`companion.ngram.NGramLM`."""
    logps = causal_lm_token_logprobs(model, token_seqs, bos_id, eos_id, context_length)
    if not logps:
        raise ValueError("causal_lm_perplexity() got no sequences to score")
    return math.exp(-torch.cat(logps).mean().item())
