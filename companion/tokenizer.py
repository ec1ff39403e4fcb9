"""Byte-level BPE tokenizers trained here, with a ChatML chat template.

The tiny profile trains its own tokenizer on the pretraining corpus; the gpu profile uses
the checkpoint's tokenizer.  Both speak ChatML (``<|im_start|>role\\n...<|im_end|>``), the
format of SmolLM2-Instruct and Qwen2.5-Instruct, so chat code is the same in both.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [EOS, PAD, IM_START, IM_END]

# {% generation %} marks the assistant tokens, so TRL can train on them alone
# (SFTConfig(assistant_only_loss=True)).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{- message['content'] + '<|im_end|>' -}}{% endgeneration %}{{- '\n' -}}"
    "{%- else -%}"
    "{{- message['content'] + '<|im_end|>' + '\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2,
                        show_progress: bool = False) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (GPT-2 style) and wrap it for transformers.

    Byte-level means every string round-trips losslessly: unknown characters fall back
    to their UTF-8 bytes, so there is no ``<unk>``.
    """
    from companion import validation

    if isinstance(texts, str):
        raise TypeError(f"texts must be a list of strings (an iterable of documents), got one string of {len(texts)} "
                        "characters; pass [text], or text.split('\\n\\n') for one document per paragraph")
    vocab_size = validation.integer("vocab_size", vocab_size, minimum=1)
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: byte-level BPE needs 256 byte tokens plus "
            f"{len(SPECIAL_TOKENS)} special tokens; use at least {256 + len(SPECIAL_TOKENS)}."
        )
    texts = list(texts)
    if not any(t.strip() for t in texts):
        raise ValueError("Cannot train a tokenizer on an empty corpus: pass at least one non-empty text.")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a raw ``tokenizers.Tokenizer`` with special tokens and the chat template."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD, unk_token=None
    )
    fast.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]})
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 1_000_000
    return fast


def ensure_chat_template(tokenizer) -> None:
    """Give a checkpoint's tokenizer our ChatML template and a pad token if it lacks them."""
    if tokenizer.chat_template is None:
        missing = [t for t in (IM_START, IM_END) if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
        tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def ensure_distinct_pad(tokenizer, model=None) -> bool:
    """Give ``tokenizer`` a PAD token that is not a stop token (adding ``<|pad|>`` if needed).

    RL trainers must tell padding from a real end of response; many checkpoints set
    PAD = EOS.  When a token is added, ``model``'s embeddings are resized to match.
    Returns True if the tokenizer was changed.
    """
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in chat_stop_ids(tokenizer):
        return False
    tokenizer.add_special_tokens({"pad_token": PAD})
    if model is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:  # generate() reads this one
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return True


def chat_stop_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn (``<|im_end|>`` and EOS)."""
    ids = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return sorted(i for i in ids if i is not None)
