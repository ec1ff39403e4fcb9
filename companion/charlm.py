"""Character-level language modeling on Tiny Shakespeare, on a wall-clock budget.

The benchmark behind the pretraining chapter's closing note: nanoGPT's CPU recipe for
``shakespeare_char`` (4 layers, width 128, context 64, batch 12, 2,000 steps) reaches a
validation loss of about 1.88 in a few minutes.  :func:`train_char_lm` trains our LLaMA-style
model on the same data and split (first 90 % train, last 10 % validation) for a fixed number
of seconds, with a learning rate that warms up and decays over *elapsed time*, so the
schedule completes whatever the speed of the machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from companion.models import tiny_config


class CharTokenizer:
    """Every distinct character of a text is one token (65 for Tiny Shakespeare)."""

    def __init__(self, text: str):
        if not text:
            raise ValueError("Cannot build a character vocabulary from an empty text.")
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise ValueError(f"Characters not in the vocabulary: {unknown[:10]}")
        return [self.index[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


@dataclass
class CharLMConfig:
    """Model size, batch and the time budget of one character-level run."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    intermediate_size: int = 384
    context_length: int = 128
    batch_size: int = 8
    learning_rate: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_frac: float = 0.03
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    time_budget_s: float = 300.0
    eval_every_s: float = 60.0
    eval_batches: int = 10
    val_frac: float = 0.1
    threads: int | None = None  # None: try 1 and all CPU threads for a few steps, keep the faster
    seed: int = 0


def split_text(text: str, val_frac: float = 0.1) -> tuple[str, str]:
    """First ``1 - val_frac`` of the text for training, the rest for validation (as nanoGPT)."""
    if not 0 < val_frac < 1:
        raise ValueError(f"val_frac must be in (0, 1), got {val_frac}")
    n = int(len(text) * (1 - val_frac))
    return text[:n], text[n:]


def lr_at(frac: float, cfg: CharLMConfig) -> float:
    """Learning rate after ``frac`` of the budget: linear warmup, then cosine to ``min_lr``."""
    if frac < cfg.warmup_frac:
        return cfg.learning_rate * max(frac, 1e-3) / cfg.warmup_frac
    progress = min(1.0, (frac - cfg.warmup_frac) / (1 - cfg.warmup_frac))
    low = cfg.learning_rate * cfg.min_lr_ratio
    return low + 0.5 * (cfg.learning_rate - low) * (1 + math.cos(math.pi * progress))


def random_windows(data: torch.Tensor, batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` random windows of ``length`` tokens from a 1-D tensor."""
    if len(data) <= length:
        raise ValueError(f"Text too small: {len(data)} tokens for windows of {length}.")
    starts = torch.randint(len(data) - length, (batch_size,), generator=generator)
    return torch.stack([data[s:s + length] for s in starts.tolist()])


@torch.no_grad()
def heldout_loss(model, data: torch.Tensor, length: int, batch_size: int = 64,
                 max_batches: int | None = None) -> float:
    """Mean next-character loss over consecutive windows of ``data`` (all of it by default)."""
    model.eval()
    n = (len(data) // length) * length
    chunks = data[:n].view(-1, length)
    total, count = 0.0, 0
    for k, i in enumerate(range(0, len(chunks), batch_size)):
        if max_batches is not None and k >= max_batches:
            break
        x = chunks[i:i + batch_size]
        total += model(input_ids=x, labels=x).loss.item() * len(x)
        count += len(x)
    model.train()
    return total / count


def build_char_model(vocab_size: int, cfg: CharLMConfig):
    """Our LLaMA-style causal LM with a character vocabulary."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    config = tiny_config(vocab_size, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                         intermediate_size=cfg.intermediate_size, context_length=cfg.context_length,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(config)


def train_char_lm(text: str, cfg: CharLMConfig | None = None, progress: bool = True) -> dict:
    """Train on the first 90 % of ``text`` for ``cfg.time_budget_s`` seconds of training time.

    Returns the validation-loss history (measured on ``eval_batches`` batches during training
    and on the whole validation split at the end), steps, tokens/s, the model and tokenizer.
    """
    cfg = cfg or CharLMConfig()
    tok = CharTokenizer(text)
    train_text, val_text = split_text(text, cfg.val_frac)
    train = torch.tensor(tok.encode(train_text), dtype=torch.long)
    val = torch.tensor(tok.encode(val_text), dtype=torch.long)
    model = build_char_model(len(tok), cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed)
    history = {"step": [], "seconds": [], "val_loss": [], "train_loss": []}
    trained, step, next_eval, recent = 0.0, 0, cfg.eval_every_s, []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(cfg.time_budget_s), unit="s", desc="char LM")
    model.train()
    # On a shared machine, more threads than free cores can be many times slower (OpenMP
    # workers wait for each other), so the thread count is measured, not assumed.
    candidates = [cfg.threads] if cfg.threads else sorted({1, torch.get_num_threads()})
    probe = {c: [] for c in candidates}
    while trained < cfg.time_budget_s:
        if len(probe) > 1:
            pending = [c for c in candidates if len(probe[c]) < 3]
            if pending:
                torch.set_num_threads(pending[0])
            else:
                best = min(candidates, key=lambda c: sorted(probe[c])[1])
                torch.set_num_threads(best)
                probe = {best: probe[best]}
        elif candidates[0] != torch.get_num_threads():
            torch.set_num_threads(candidates[0])
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(trained / cfg.time_budget_s, cfg)
        x = random_windows(train, cfg.batch_size, cfg.context_length, gen)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        dt = time.perf_counter() - t0
        trained += dt
        if len(probe) > 1:
            probe[torch.get_num_threads()].append(dt)
        step += 1
        recent.append(loss.item())
        if bar is not None:
            bar.update(min(int(trained) - bar.n, bar.total - bar.n))
            bar.set_postfix(step=step, loss=f"{loss.item():.3f}")
        if trained >= next_eval:
            history["step"].append(step)
            history["seconds"].append(trained)
            history["train_loss"].append(sum(recent) / len(recent))
            history["val_loss"].append(heldout_loss(model, val, cfg.context_length, max_batches=cfg.eval_batches))
            recent, next_eval = [], next_eval + cfg.eval_every_s
    if bar is not None:
        bar.close()
    final = heldout_loss(model, val, cfg.context_length)
    return {"history": history, "final_val_loss": final, "steps": step, "train_seconds": trained,
            "tokens_per_s": step * cfg.batch_size * cfg.context_length / trained,
            "params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
            "model": model, "tokenizer": tok}


@torch.no_grad()
def sample_chars(model, tok: CharTokenizer, prompt: str, n: int = 200, temperature: float = 0.8,
                 seed: int = 0) -> str:
    """Sample ``n`` characters after ``prompt`` (a sliding window of the model's context)."""
    gen = torch.Generator().manual_seed(seed)
    ids = tok.encode(prompt)
    ctx = model.config.max_position_embeddings
    model.eval()
    for _ in range(n):
        logits = model(input_ids=torch.tensor([ids[-ctx:]])).logits[0, -1] / temperature
        ids.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)))
    return tok.decode(ids[len(prompt):])
