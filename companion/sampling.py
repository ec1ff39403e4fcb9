"""From logits to text: temperature, top-k, top-p, and a small generation loop.

A language model outputs one score (logit) per vocabulary entry for the next token.
Decoding turns those scores into a choice.  The pure functions here do that step on a
tensor of logits (the last dimension is the vocabulary), so they can be tested by hand:

    probs = next_token_probs(logits, temperature=0.7, top_k=50, top_p=0.9)
    token = sample_token(logits, temperature=0.7, top_k=50, top_p=0.9)

The order is the usual one (as in ``transformers``): divide by the temperature, keep the
``top_k`` highest, then keep the smallest set whose probability reaches ``top_p``.
``temperature=0`` means greedy decoding (always the arg-max).

:func:`stream_tokens` and :func:`generate` run the autoregressive loop on a causal LM
(with its key/value cache) and are used by every chapter that shows model output.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence

import torch

Prompt = str | Sequence[dict]


# --------------------------------------------------------------------------- checks
def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not math.isfinite(temperature) \
            or temperature < 0:
        raise ValueError(
            f"temperature must be a number >= 0 (0 = greedy, 1 = the model's own distribution), "
            f"got {temperature!r}"
        )
    return float(temperature)


def _check_top_k(top_k: int | None) -> int | None:
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int or None (no top-k filter), got {top_k!r}")
    return top_k


def _check_top_p(top_p: float | None) -> float | None:
    if top_p is None:
        return None
    if not isinstance(top_p, int | float) or math.isnan(top_p) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None (no nucleus filter), got {top_p!r}")
    return float(top_p)


def _as_float_tensor(logits) -> torch.Tensor:
    t = torch.as_tensor(logits)
    if t.ndim == 0 or t.shape[-1] == 0:
        raise ValueError(f"logits must have a non-empty last (vocabulary) dimension, got shape {tuple(t.shape)}")
    return t.detach().float()


# --------------------------------------------------------------------------- filters
def apply_temperature(logits, temperature: float) -> torch.Tensor:
    """Divide logits by ``temperature`` (> 0).  Lower T sharpens, higher T flattens."""
    temperature = _check_temperature(temperature)
    if temperature == 0:
        raise ValueError("apply_temperature needs temperature > 0; use greedy_token for T = 0")
    return _as_float_tensor(logits) / temperature


def top_k_filter(logits, top_k: int | None) -> torch.Tensor:
    """Set every logit outside the ``top_k`` largest to ``-inf`` (ties at the border are kept)."""
    logits = _as_float_tensor(logits)
    top_k = _check_top_k(top_k)
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits, top_p: float | None) -> torch.Tensor:
    """Nucleus filter: keep the fewest most likely tokens whose total probability >= ``top_p``.

    A token is dropped when the tokens ranked above it already reach ``top_p``; the most
    likely token is always kept.
    """
    logits = _as_float_tensor(logits)
    top_p = _check_top_p(top_p)
    if top_p is None or top_p >= 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    drop_sorted = mass_before >= top_p - 1e-7
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(logits, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Temperature, then top-k, then top-p.  ``temperature=0`` keeps only the arg-max."""
    temperature = _check_temperature(temperature)
    _check_top_k(top_k)
    _check_top_p(top_p)
    logits = _as_float_tensor(logits)
    if temperature == 0:
        best = logits.argmax(dim=-1, keepdim=True)
        return torch.full_like(logits, float("-inf")).scatter(-1, best, 0.0)
    return top_p_filter(top_k_filter(logits / temperature, top_k), top_p)


def next_token_probs(logits, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None) -> torch.Tensor:
    """The distribution we actually sample from: softmax of the filtered, scaled logits.

    ``temperature=1`` with no filters is exactly ``softmax(logits)``; ``temperature=0`` is a
    one-hot vector on the arg-max (greedy decoding).
    """
    return torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)


# --------------------------------------------------------------------------- choosing a token
def greedy_token(logits) -> int | torch.Tensor:
    """The arg-max token (an int for 1-D logits, a tensor of ids for a batch)."""
    ids = _as_float_tensor(logits).argmax(dim=-1)
    return int(ids) if ids.ndim == 0 else ids


def sample_token(logits, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None):
    """Draw one token id from :func:`next_token_probs` (an int for 1-D logits)."""
    if _check_temperature(temperature) == 0:
        return greedy_token(logits)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    flat = probs.reshape(-1, probs.shape[-1])
    ids = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
    return int(ids) if ids.ndim == 0 else ids


def entropy(probs) -> float:
    """Shannon entropy in nats of a 1-D probability vector (zeros contribute nothing)."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    nz = p[p > 0]
    return float(-(nz * nz.log()).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def top_tokens(probs, tokenizer, k: int = 10) -> list[tuple[str, float]]:
    """The ``k`` most likely tokens as ``(text, probability)`` pairs, most likely first."""
    p = torch.as_tensor(probs).float()
    values, ids = torch.topk(p, min(k, p.shape[-1]))
    return [(tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, ids)]


# --------------------------------------------------------------------------- a model in the loop
def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of a plain-text prompt, or of a chat (list of messages) ready for the reply."""
    if isinstance(prompt, str):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not ids:  # an empty prompt starts from the beginning-of-text token
            start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            ids = [start]
        return list(ids)
    if isinstance(prompt, Sequence) and all(isinstance(m, dict) for m in prompt) and prompt:
        from companion.tokenizer import ensure_chat_template

        ensure_chat_template(tokenizer)
        out = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True)
        if isinstance(out, dict) or hasattr(out, "keys"):
            out = out["input_ids"]
        return list(out)
    raise ValueError(
        "prompt must be a string or a non-empty list of chat messages like "
        f"[{{'role': 'user', 'content': '...'}}], got {type(prompt).__name__}"
    )


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - parameter-free model
        return torch.device("cpu")


def context_length(model) -> int | None:
    """The longest input the model was built for (``max_position_embeddings``), or None if unknown."""
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def check_prompt_fits(model, ids: Sequence[int]) -> None:
    """Raise a clear error when the model cannot read ``ids``: a token it has no embedding for, or too many."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = embeddings.weight.shape[0] if embeddings is not None else None
    if rows is not None and ids and max(ids) >= rows:
        raise ValueError(f"the prompt has token id {max(ids)}, but the model's embedding has {rows} rows: the "
                         "tokenizer has tokens the model was not built with (chat markers added by "
                         "ensure_chat_template, for example). Call model.resize_token_embeddings(len(tokenizer)) and "
                         "fine-tune the new rows (chapter 4), or use the tokenizer the model was trained with.")
    limit = context_length(model)
    if limit is not None and len(ids) > limit:
        raise ValueError(f"the prompt is {len(ids)} tokens long, more than the model's context of {limit} tokens; "
                         "shorten the prompt (keep its last tokens), or use a model with a longer context.")


@torch.no_grad()
def next_token_logits(model, tokenizer, prompt: Prompt) -> torch.Tensor:
    """The model's logits for the token that follows ``prompt`` (a 1-D float tensor on CPU)."""
    ids = encode_prompt(tokenizer, prompt)
    check_prompt_fits(model, ids)
    ids = torch.tensor([ids], device=_model_device(model))
    model.eval()
    return model(input_ids=ids).logits[0, -1].float().cpu()


@torch.no_grad()
def stream_tokens(model, tokenizer, prompt: Prompt, max_new_tokens: int = 50,
                  temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                  seed: int | None = None, stop_ids: Sequence[int] | None = None) -> Iterator[str]:
    """Generate a continuation of ``prompt`` one token at a time, yielding each new piece of text.

    The prompt is a string (text continuation) or a list of chat messages (the chat
    template is applied and generation stops at the end-of-turn token).  Generation also
    stops at the tokenizer's EOS token or any id in ``stop_ids``.  ``seed`` makes the
    sampling reproducible.  Pieces are text, not token strings: a character split over
    several byte-level tokens appears once it is complete.
    """
    _check_temperature(temperature)
    _check_top_k(top_k)
    _check_top_p(top_p)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    stops = set(stop_ids or [])
    if tokenizer.eos_token_id is not None:
        stops.add(tokenizer.eos_token_id)
    if not isinstance(prompt, str):
        from companion.tokenizer import chat_stop_ids

        stops.update(chat_stop_ids(tokenizer))
    device = _model_device(model)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    ids = encode_prompt(tokenizer, prompt)
    check_prompt_fits(model, ids)
    ids = torch.tensor([ids], device=device)
    limit = context_length(model)
    model.eval()
    out = model(input_ids=ids, use_cache=True)
    new: list[int] = []
    shown = ""
    for _ in range(max_new_tokens):
        logits = out.logits[0, -1].float().cpu()
        token = sample_token(logits, temperature, top_k, top_p, generator=generator)
        if token in stops:
            break
        new.append(token)
        text = tokenizer.decode(new, skip_special_tokens=True)
        if not text.endswith("\ufffd") and text != shown:  # wait for complete characters
            yield text[len(shown):]
            shown = text
        if limit is not None and ids.shape[1] + len(new) >= limit:
            break
        out = model(input_ids=torch.tensor([[token]], device=device),
                    past_key_values=out.past_key_values, use_cache=True)
    text = tokenizer.decode(new, skip_special_tokens=True)
    if text != shown and text.startswith(shown):
        yield text[len(shown):]


def generate(model, tokenizer, prompt: Prompt, max_new_tokens: int = 50, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             stop_ids: Sequence[int] | None = None) -> str:
    """The continuation of ``prompt`` (without the prompt) as one string; see :func:`stream_tokens`."""
    return "".join(stream_tokens(model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p,
                                 seed, stop_ids))


def sample_many(model, tokenizer, prompt: Prompt, n: int, seed: int = 0, **kwargs) -> list[str]:
    """``n`` continuations of one prompt, with seeds ``seed, seed + 1, ...``."""
    return [generate(model, tokenizer, prompt, seed=seed + i, **kwargs) for i in range(n)]


def cache_kwargs(model, batch_size: int) -> dict:
    """``model.generate`` options for a pre-allocated ("static") KV cache on large CPU batches (opt-in).

    transformers' default cache grows by concatenation at each new token; a static cache is
    allocated once for prompt + ``max_new_tokens`` and written in place.  On the CPU it pays off for
    large batches of left-padded prompts (about 1.25x on the book's held-out evaluation, 250 prompts
    in batches of 100), while single prompts and batches of 16 are a little slower
    (``python -m bench.bench_generation``).  Its attention sums in another order, so the logits
    differ in the 7th digit: greedy answers stay the same, but now and then a sampled token differs
    and every run downstream of it moves.  The book's runs therefore keep the default cache (their
    asserts were set on it); pass ``**cache_kwargs(model, n)`` to ``generate`` (or to
    ``sft.chat_responses``) in your own scripts.  On a GPU a static cache makes ``generate`` compile
    the model, so there this returns no options.
    """
    static = _model_device(model).type == "cpu" and batch_size >= 32
    return {"cache_implementation": "static"} if static else {}
