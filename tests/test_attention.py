"""companion.attention: the from-scratch Transformer computes what transformers' Llama computes."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from companion.attention import (
    DecoderBlock,
    Transformer,
    TransformerConfig,
    attention_maps,
    config_from_llama,
    copy_llama_layer,
    rotary_cos_sin,
    transformer_from_llama,
)
from companion.models import build_causal_lm
from companion.profiles import TINY

# SmolLM2-135M's options (grouped-query attention, untied head, rope_theta 1e5) at a tiny size
GQA_CONFIG = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                  num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
                  rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight random, the norms' too (they start at 1, which would hide a swapped norm).

    Matrices get std 0.05 (logits of a few units): much larger weights blow the logits up to
    where float32 rounding alone differs by more than 1e-5 between two correct implementations.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.2 * noise if p.ndim == 1 else 0.05 * noise)
    return model.eval()


def test_rotary_frequencies_match_transformers():
    cfg = LlamaConfig(**GQA_CONFIG)
    cos_ref, sin_ref = LlamaRotaryEmbedding(cfg)(torch.zeros(1), torch.arange(10)[None])
    cos, sin = rotary_cos_sin(10, head_dim=8, theta=100000.0)
    torch.testing.assert_close(cos, cos_ref[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, sin_ref[0], rtol=0, atol=1e-6)


def test_one_block_matches_a_llama_decoder_layer():
    cfg = LlamaConfig(**GQA_CONFIG, attn_implementation="eager")
    layer = randomized(LlamaDecoderLayer(cfg, layer_idx=0))
    block = copy_llama_layer(DecoderBlock(config_from_llama(cfg)), layer)
    T = 7
    x = torch.randn(2, T, cfg.hidden_size, generator=torch.Generator().manual_seed(1))
    cos_sin = LlamaRotaryEmbedding(cfg)(x, torch.arange(T)[None])
    mask = torch.full((T, T), float("-inf")).triu(1)[None, None]  # transformers' additive causal mask
    with torch.no_grad():
        expected = layer(x, attention_mask=mask, position_embeddings=cos_sin)
        _, expected_weights = layer.self_attn(layer.input_layernorm(x), cos_sin, mask)
        got, weights = block(x, *rotary_cos_sin(T, block.attn.head_dim, 100000.0))
    assert (got - expected).abs().max() < 1e-5
    assert (weights - expected_weights).abs().max() < 1e-6


def tiny_profile_llama(tokenizer) -> LlamaForCausalLM:
    return randomized(build_causal_lm(tokenizer, profile=TINY, seed=0))


@pytest.mark.parametrize("kind", ["tiny profile", "grouped-query"])
def test_whole_model_logits_match(kind, small_tokenizer):
    llama = tiny_profile_llama(small_tokenizer) if kind == "tiny profile" else randomized(
        LlamaForCausalLM(LlamaConfig(**GQA_CONFIG)))
    ours = transformer_from_llama(llama)
    assert ours.cfg.tie_word_embeddings == llama.config.tie_word_embeddings
    assert (ours.lm_head.weight is ours.embed.weight) == ours.cfg.tie_word_embeddings
    vocab = llama.config.vocab_size
    ids = torch.randint(0, vocab, (3, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = llama(input_ids=ids).logits
        got, attentions = ours(ids)
    assert attentions is None
    assert got.shape == expected.shape == (3, 12, vocab)
    assert (got - expected).abs().max() < 1e-5


def test_tiny_profile_config_is_read_faithfully(small_tokenizer):
    cfg = config_from_llama(build_causal_lm(small_tokenizer, profile=TINY).config)
    assert cfg == TransformerConfig(vocab_size=len(small_tokenizer), hidden_size=192, n_layer=4, n_head=4,
                                    n_kv_head=4, intermediate_size=512, context_length=256, rope_theta=10000.0,
                                    rms_norm_eps=1e-6, tie_word_embeddings=True)


def test_attention_rows_sum_to_one_and_are_causal():
    model = Transformer(TransformerConfig(vocab_size=50, hidden_size=32, n_layer=2, n_head=4, n_kv_head=2,
                                          intermediate_size=48, context_length=16))
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(3))
    maps = attention_maps(model, ids)
    assert maps.shape == (2, 2, 4, 9, 9)  # (layer, batch, head, query, key)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 4, 9))
    assert (maps.triu(1) == 0).all()
    assert (maps[..., 0, 0] == 1).all()  # the first token can only look at itself
    assert attention_maps(model, ids[0]).shape == (2, 4, 9, 9)
    torch.testing.assert_close(attention_maps(model, ids[0]), maps[:, 0])


@pytest.mark.parametrize(("option", "value"), [
    ("rope_parameters", {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
    ("hidden_act", "gelu"),
    ("attention_bias", True),
    ("mlp_bias", True),
])
def test_unsupported_llama_options_are_named(option, value):
    cfg = LlamaConfig(**{**GQA_CONFIG, option: value})
    named = "rope_parameters['rope_type']='linear'" if option == "rope_parameters" else f"{option}={value!r}"
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
        config_from_llama(cfg)


def test_bad_inputs_get_clear_errors(small_tokenizer):
    gpt2 = build_causal_lm(small_tokenizer, arch="gpt2", n_layer=1, n_head=2, n_embd=16, intermediate_size=32)
    with pytest.raises(TypeError, match="model_type 'llama'.*got model_type='gpt2'"):
        transformer_from_llama(gpt2)
    with pytest.raises(ValueError, match="n_head=6 must be a multiple of n_kv_head=4"):
        TransformerConfig(hidden_size=48, n_head=6, n_kv_head=4)
    model = Transformer(TransformerConfig(vocab_size=10, hidden_size=16, n_layer=1, n_head=2, n_kv_head=2,
                                          intermediate_size=16, context_length=4))
    with pytest.raises(ValueError, match="5 tokens, more than the model's context_length=4"):
        model(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids must have shape \(batch, seq_len\)"):
        model(torch.zeros(5, dtype=torch.long))
