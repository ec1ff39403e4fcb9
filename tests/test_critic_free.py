"""companion.critic_free: configs, reward functions, and short GRPO / RLOO runs on a small random model."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from datasets import Dataset

from companion import critic_free as cf
from companion.models import build_causal_lm
from companion.tokenizer import chat_stop_ids

ROWS = [{"prompt": [{"role": "user", "content": "Lily"}], "topic": "ball"},
        {"prompt": [{"role": "user", "content": "Once upon a time there was a dog"}], "topic": "dog"}]


@pytest.fixture
def small_lm(small_tokenizer):
    torch.manual_seed(0)
    return build_causal_lm(small_tokenizer, n_layer=2, n_head=2, n_embd=32, intermediate_size=64,
                           context_length=128), small_tokenizer


def low_ids(prompts, completions, completion_ids, **kw):
    """The fraction of a completion's tokens with an id below 100."""
    return [sum(t < 100 for t in ids) / max(len(ids), 1) for ids in completion_ids]


# --------------------------------------------------------------------------- configs
def test_config_defaults(tmp_path):
    g = cf.grpo_config(str(tmp_path))
    r = cf.rloo_config(str(tmp_path))
    for c in (g, r):
        assert (c.max_completion_length, c.temperature, c.top_k, c.top_p) == (200, 1.0, 0, 1.0)
        assert (c.learning_rate, c.logging_steps, c.num_iterations, c.use_cpu) == (1e-4, 1, 1, True)
        assert c.generation_batch_size == 32 and c.save_strategy == "no"
    assert (g.num_generations, g.beta, g.loss_type, g.scale_rewards) == (8, 0.0, "dapo", "group")
    assert (r.num_generations, r.beta) == (4, 0.05)
    assert cf.grpo_config(str(tmp_path), beta=0.04, num_generations=4).beta == 0.04
    from companion.profiles import profile

    assert cf.rloo_config(str(tmp_path), profile=profile("gpu")).learning_rate == 1e-6


def test_batch_must_hold_whole_groups(tmp_path):
    with pytest.raises(ValueError, match="per_device_train_batch_size=12.*num_generations=8"):
        cf.grpo_config(str(tmp_path), per_device_train_batch_size=12)
    with pytest.raises(ValueError, match="generation_batch_size.*num_generations=4"):
        cf.rloo_config(str(tmp_path), generation_batch_size=30, per_device_train_batch_size=2)
    with pytest.raises(ValueError, match="num_generations must be an integer >= 2"):
        cf.rloo_config(str(tmp_path), num_generations=1)
    assert cf.rloo_config(str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=3,
                          num_generations=6).generation_batch_size == 12


# --------------------------------------------------------------------------- reward functions
def test_reward_model_func_scores_each_completion(small_lm):
    from companion.reward import reward_model_from_causal_lm

    model, tok = small_lm
    rm = reward_model_from_causal_lm(copy.deepcopy(model), tok)
    f = cf.reward_model_func(rm, tok)
    prompts = [r["prompt"] for r in ROWS] * 2
    completions = [[{"role": "assistant", "content": t}] for t in ("Max ran.", "Lily was happy.", "", "A ball.")]
    got = f(prompts=prompts, completions=completions, completion_ids=[[1]] * 4, topic=["x"] * 4)
    assert len(got) == 4 and all(isinstance(s, float) and math.isfinite(s) for s in got)
    plain = f(prompts=["Lily"] * 2, completions=["Max ran.", "Lily was happy."])
    assert len(plain) == 2 and f.__name__ == "reward_model"
    two = reward_model_from_causal_lm(copy.deepcopy(model), tok)
    two.config.num_labels = 2
    with pytest.raises(ValueError, match="num_labels=1"):
        cf.reward_model_func(two, tok)


def test_gold_func_needs_the_spec_columns():
    from companion import tinyworld

    specs = tinyworld.make_instructions(2)
    ds = tinyworld.prompt_dataset(specs)
    story = f"{specs[0].name} had a {specs[0].topic}. They played all day. They were very happy."
    columns = {c: ds[c] for c in ("name", "topic", "template")}
    gold = cf.tinyworld_gold_func()
    got = gold(prompts=ds["prompt"], completions=[[{"role": "assistant", "content": story}], "no"], **columns)
    assert got == [tinyworld.gold_judge(specs[0], story).score, tinyworld.gold_judge(specs[1], "no").score]
    with pytest.raises(ValueError, match="prompt_dataset"):
        gold(prompts=ds["prompt"], completions=["a", "b"], topic=ds["topic"])


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_short_run_trains_and_logs(small_lm, tmp_path, kind):
    model, tok = small_lm
    before = copy.deepcopy(model.state_dict())
    make, train = (cf.grpo_config, cf.train_grpo) if kind == "grpo" else (cf.rloo_config, cf.train_rloo)
    args = make(str(tmp_path), max_steps=2, per_device_train_batch_size=8, num_generations=4,
                max_completion_length=16, learning_rate=1e-2, disable_tqdm=True)
    result = train(model, tok, Dataset.from_list(ROWS), low_ids, args)
    h = result.history
    assert h["step"] == [1, 2] and len(h["reward"]) == 2 and len(h["completions/mean_length"]) == 2
    assert all(0 <= x <= 1 for x in h["rewards/low_ids/mean"])
    assert ("kl" in h) == (kind == "rloo")  # GRPO's beta=0 has no reference model, hence no KL
    assert result.train_seconds > 0 and result.peak_memory_mb > 0
    assert any(not torch.equal(before[k], v) for k, v in result.model.state_dict().items())
    assert "forward" not in result.model.__dict__  # TRL's fused-head patch is gone
    assert model.config.name_or_path == ""  # the temporary reference checkpoint is forgotten
    assert set(chat_stop_ids(tok)) <= set(model.generation_config.eos_token_id)
    with torch.no_grad():
        assert result.model(input_ids=torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, len(tok))


def test_reference_is_the_model_as_given_not_its_checkpoint(small_lm, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = small_lm
    model.save_pretrained(tmp_path / "old")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "old")
    with torch.no_grad():  # trained since it was loaded: its checkpoint is stale
        for p in loaded.parameters():
            p.add_(0.05 * torch.randn_like(p))
    args = cf.grpo_config(str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=8, num_generations=4,
                          max_completion_length=8, beta=0.04, disable_tqdm=True)
    result = cf.train_grpo(loaded, tok, Dataset.from_list(ROWS), low_ids, args)
    assert result.history["kl"] == [0.0]  # a reference loaded from tmp_path/"old" would differ
    assert loaded.config.name_or_path == str(tmp_path / "old")


def test_lora_rloo_uses_its_base_as_reference(small_lm, tmp_path):
    from peft import LoraConfig, PeftModel

    model, tok = small_lm
    args = cf.rloo_config(str(tmp_path), max_steps=1, per_device_train_batch_size=8, max_completion_length=8,
                          disable_tqdm=True)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    result = cf.train_rloo(model, tok, Dataset.from_list(ROWS), low_ids, args, peft_config=lora)
    assert isinstance(result.model, PeftModel) and result.history["kl"] == [0.0]  # LoRA starts as the identity


def test_bad_inputs_get_clear_errors(small_lm, tmp_path):
    model, tok = small_lm
    args = cf.rloo_config(str(tmp_path), max_steps=1, per_device_train_batch_size=4, max_completion_length=8)
    ds = Dataset.from_list(ROWS)
    eos_pad = copy.deepcopy(tok)
    eos_pad.pad_token = eos_pad.eos_token
    with pytest.raises(ValueError, match="PAD token"):
        cf.train_rloo(model, eos_pad, ds, low_ids, args)
    with pytest.raises(ValueError, match="'prompt' column"):
        cf.train_rloo(model, tok, Dataset.from_list([{"text": "hi"}]), low_ids, args)
    with pytest.raises(TypeError, match="reward_funcs"):
        cf.train_rloo(model, tok, ds, ["not a function"], args)
    long = cf.rloo_config(str(tmp_path), max_steps=1, per_device_train_batch_size=4, max_completion_length=120)
    with pytest.raises(ValueError, match="context of 128"):
        cf.train_rloo(model, tok, ds, low_ids, long)
