"""Same seed, same numbers: each trainer's short run on CPU, twice from the same start, gives identical results."""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset

from companion import dpo, ppo, reward, sft
from companion.models import build_causal_lm
from companion.seeding import seed_everything

PAIRS = [{"prompt": [{"role": "user", "content": f"Tell me about Lily {i}"}],
          "chosen": [{"role": "assistant", "content": "Lily found a red ball. She was very happy."}],
          "rejected": [{"role": "assistant", "content": "Max liked to run. Max liked to run."}]} for i in range(8)]
CONV = [{"role": "user", "content": "Tell me about Lily"},
        {"role": "assistant", "content": "Lily found a red ball in the park. She was very happy."}]
PROMPTS = [{"prompt": [{"role": "user", "content": "Lily"}]}, {"prompt": [{"role": "user", "content": "Once upon"}]}]


@pytest.fixture
def start(small_tokenizer):
    torch.manual_seed(0)
    return build_causal_lm(small_tokenizer, n_layer=1, n_head=2, n_embd=32, intermediate_size=64,
                           context_length=128), small_tokenizer


def run_dpo(model, tok, out):
    args = dpo.dpo_config(str(out), learning_rate=5e-3, per_device_train_batch_size=4, max_length=64, logging_steps=1,
                          disable_tqdm=True)
    r = dpo.train_dpo(model, tok, Dataset.from_list(PAIRS), args)
    return r.model, r.history["loss"]


def run_sft(model, tok, out):
    args = sft.sft_config(str(out), max_steps=4, per_device_train_batch_size=4, learning_rate=5e-3, logging_steps=1,
                          warmup_steps=0, disable_tqdm=True, max_length=64)
    r = sft.train_sft(model, tok, Dataset.from_list([{"messages": CONV}] * 8), args=args)
    return r.model, r.history["train_loss"]


def run_ppo(model, tok, out):
    def ones(prompts, completions, completion_ids, **kw):
        return [float(sum(t < 100 for t in ids)) for ids in completion_ids]

    cfg = ppo.PPOConfig(steps=2, batch_size=2, num_mini_batches=1, max_new_tokens=8, learning_rate=1e-3, use_cpu=True)
    tr = ppo.PPOTrainer(cfg, model, tok, PROMPTS, reward_funcs=ones)
    h = tr.train(progress=False)
    return tr.policy, h["objective/scores"] + h["loss/policy_avg"] + h["objective/kl"]


def run_reward(model, tok, out):
    rm = reward.reward_model_from_causal_lm(model, tok)
    pairs = Dataset.from_list([{k: v for k, v in p.items()} for p in PAIRS])
    args = reward.reward_config(str(out), max_steps=4, per_device_train_batch_size=4, learning_rate=5e-3,
                                logging_steps=1, warmup_steps=0, disable_tqdm=True, max_length=64)
    r = reward.train_reward_model(rm, tok, pairs, args=args)
    return r.model, r.history["train_loss"]


@pytest.mark.parametrize("run", [run_sft, run_reward, run_dpo, run_ppo], ids=["sft", "reward", "dpo", "ppo"])
def test_same_seed_same_numbers(start, tmp_path, run):
    model, tok = start
    results = []
    for attempt in range(2):
        seed_everything(0)
        trained, metrics = run(copy.deepcopy(model), tok, tmp_path / f"run{attempt}")
        results.append((metrics, {k: v.detach().clone() for k, v in trained.state_dict().items()}))
    (m1, w1), (m2, w2) = results
    assert m1 == m2, f"{run.__name__}: the logged metrics differ between two runs with the same seed"
    assert all(torch.equal(w1[k], w2[k]) for k in w1), f"{run.__name__}: the trained weights differ"
    assert any(not torch.equal(w1[k], v) for k, v in model.state_dict().items() if k in w1)  # training changed them
