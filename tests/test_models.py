import pytest
import torch
from transformers import AutoModelForCausalLM

from companion.models import build_causal_lm, count_parameters, load_pretrained, tiny_config
from companion.profiles import TINY


def test_tiny_llama_size_and_forward(small_tokenizer):
    model = build_causal_lm(small_tokenizer, TINY)
    n = count_parameters(model)
    # embeddings (tied) + 4 blocks of attention (4 d^2) and SwiGLU MLP (3 d ff) + norms
    d, ff, v = 192, 512, len(small_tokenizer)
    expected = v * d + 4 * (4 * d * d + 3 * d * ff + 2 * d) + d
    assert n == expected
    ids = torch.tensor([small_tokenizer("Once upon a time")["input_ids"]])
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, ids.shape[1], v)
    assert torch.isfinite(out.loss) and out.loss.item() > 0


def test_gpt2_arch_and_overrides(small_tokenizer):
    model = build_causal_lm(small_tokenizer, TINY, arch="gpt2", n_layer=2)
    assert model.config.model_type == "gpt2" and model.config.n_layer == 2


def test_bad_config_is_clear():
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(vocab_size=100, n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="arch must be"):
        tiny_config(vocab_size=100, arch="rnn")


def test_count_trainable_only(small_tokenizer):
    model = build_causal_lm(small_tokenizer, TINY, n_layer=1)
    model.get_input_embeddings().weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) < count_parameters(model)


def test_gpu_path_loads_a_local_checkpoint(small_tokenizer, tmp_path, monkeypatch):
    """The gpu profile loads `profile().base_model`; point it at a local save_pretrained dir."""
    model = build_causal_lm(small_tokenizer, TINY, n_layer=1)
    model.save_pretrained(tmp_path)
    small_tokenizer.save_pretrained(tmp_path)
    monkeypatch.setenv("COMPANION_PROFILE", "gpu")
    monkeypatch.setenv("COMPANION_BASE_MODEL", str(tmp_path))
    from companion import pipeline

    loaded, tok = pipeline.base_model()
    assert isinstance(loaded, type(AutoModelForCausalLM.from_pretrained(tmp_path)))
    assert tok.chat_template is not None and tok.pad_token is not None
    m2, _ = load_pretrained(str(tmp_path))
    assert count_parameters(m2) == count_parameters(model)
