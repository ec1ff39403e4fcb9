"""companion.ppo: the pieces by hand on tiny tensors, then the trainer on a small random model."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from companion import ppo
from companion.models import build_causal_lm


# --------------------------------------------------------------------------- the math, by hand
def test_kl_estimators_by_hand():
    logp, ref = torch.log(torch.tensor([0.5, 0.25])), torch.log(torch.tensor([0.25, 0.5]))
    k1 = ppo.kl_penalty(logp, ref, "k1")
    k3 = ppo.kl_penalty(logp, ref, "k3")
    # token 0: logr = log(0.25/0.5) = -log 2; k1 = log 2, k3 = 0.5 - 1 + log 2
    assert torch.allclose(k1, torch.tensor([math.log(2), -math.log(2)]))
    assert torch.allclose(k3, torch.tensor([0.5 - 1 + math.log(2), 2 - 1 - math.log(2)]))
    assert (k3 >= 0).all()  # k3 is never negative; k1 is on a single token
    with pytest.raises(ValueError, match="kl_estimator"):
        ppo.kl_penalty(logp, ref, "k2")


def test_rewards_land_on_the_last_token_early_stop_and_no_eos():
    # row 0 stopped at t=2 (its stop token is t=2), row 1 never stopped and was cut at T=4
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1]])
    kl = torch.ones(2, 4)
    rewards, non_score = ppo.shaped_rewards(torch.tensor([2.0, -1.0]), kl, mask, kl_coef=0.1)
    assert torch.allclose(rewards, torch.tensor([[-0.1, -0.1, 1.9, 0.0], [-0.1, -0.1, -0.1, -1.1]]))
    assert torch.allclose(non_score.sum(1), torch.tensor([-0.3, -0.4]))


def test_gae_on_responses_by_hand_with_padding():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 7.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 9.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])  # row 1 ends at t=1: its t=2 entries are padding
    adv, ret = ppo.advantages_and_returns(rewards, values, mask, gamma=1.0, lam=0.95, whiten=False)
    # row 0: deltas (0, 0, 0.5) -> A = (0.95^2 * 0.5, 0.95 * 0.5, 0.5)
    assert torch.allclose(adv[0], torch.tensor([0.45125, 0.475, 0.5]))
    assert torch.allclose(ret[0], adv[0] + values[0])
    # row 1: the end is t=1 (V after it is 0, whatever sits in the padding)
    assert torch.allclose(adv[1], torch.tensor([0.475, 0.5, 0.0]))
    assert torch.allclose(ret[1], torch.tensor([0.975, 1.0, 0.0]))


def test_masked_whiten_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1.0, 1, 0], [1, 1, 0]])
    w = ppo.masked_whiten(x, mask)
    on = w[mask.bool()]
    assert abs(float(on.mean())) < 1e-6 and abs(float(on.std()) - 1) < 1e-4
    assert (w[~mask.bool()] == 0).all()
    kept = ppo.masked_whiten(x, mask, shift_mean=False)
    assert abs(float(kept[mask.bool()].mean()) - 2.5) < 1e-5


def test_clipped_value_loss_by_hand():
    new, old, ret = torch.tensor([[1.0, 0.1]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    loss, stats = ppo.value_loss(new, old, ret, torch.ones(1, 2), cliprange_value=0.2)
    # token 0: unclipped (1-1)^2 = 0, clipped (0.2-1)^2 = 0.64 -> 0.64; token 1: inside the clip, 0.81
    assert math.isclose(float(loss), 0.5 * (0.64 + 0.81) / 2, rel_tol=1e-6)
    assert math.isclose(float(stats["clipfrac"]), 0.5)


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 0.5, 1.5]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, stats = ppo.policy_loss(new, old, adv, torch.ones(1, 4), cliprange=0.2)
    # per token: max(-A r, -A clip(r)) = -1.2, -0.5, 0.8, 1.5
    assert math.isclose(float(loss), (-1.2 - 0.5 + 0.8 + 1.5) / 4, rel_tol=1e-6)
    assert math.isclose(float(stats["clipfrac"]), 0.5)


def test_adaptive_kl_controller():
    ctl = ppo.AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    assert math.isclose(ctl.update(12.0, 1000), 0.2 * (1 + 0.2 * 0.1))  # error clipped to +0.2
    assert ctl.update(6.0, 1000) == pytest.approx(0.2 * 1.02)            # on target: unchanged
    assert ctl.update(0.0, 1000) < 0.2 * 1.02                            # below target: shrinks
    with pytest.raises(ValueError, match="kl_target"):
        ppo.AdaptiveKLController(0.2, target=0.0, horizon=1)


def test_config_checks_name_the_argument():
    with pytest.raises(ValueError, match="num_mini_batches"):
        ppo.PPOConfig(batch_size=10, num_mini_batches=3)
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        ppo.PPOConfig(batch_size=8, num_mini_batches=2, gradient_accumulation_steps=3)
    with pytest.raises(ValueError, match="temperature"):
        ppo.PPOConfig(temperature=0)
    with pytest.raises(ValueError, match="kl_estimator"):
        ppo.PPOConfig(kl_estimator="exact")
    assert ppo.PPOConfig(batch_size=8, num_mini_batches=2, gradient_accumulation_steps=2).micro_batch_size == 2


def test_defaults_are_trls():
    c = ppo.PPOConfig()
    assert (c.kl_coef, c.cliprange, c.cliprange_value, c.vf_coef, c.gamma, c.lam, c.num_ppo_epochs) == (
        0.05, 0.2, 0.2, 0.1, 1.0, 0.95, 4)


# --------------------------------------------------------------------------- the trainer
@pytest.fixture
def small_lm(small_tokenizer):
    torch.manual_seed(0)
    return build_causal_lm(small_tokenizer, n_layer=2, n_head=2, n_embd=32, intermediate_size=64,
                           context_length=128), small_tokenizer


ROWS = [{"prompt": [{"role": "user", "content": "Lily"}], "topic": "ball"},
        {"prompt": [{"role": "user", "content": "Once upon a time there was a dog"}], "topic": "dog"}]


def count_token(token_id):
    def reward(prompts, completions, completion_ids, **kw):
        return [float(sum(t == token_id for t in ids)) for ids in completion_ids]
    return reward


def test_rollout_logprobs_match_the_sampler(small_lm):
    model, tok = small_lm
    cfg = ppo.PPOConfig(batch_size=4, max_new_tokens=12, temperature=0.7, use_cpu=True)
    tr = ppo.PPOTrainer(cfg, model, tok, ROWS, reward_funcs=count_token(5))
    enc = [tr._encode_prompt(r["prompt"]) for r in ROWS]
    width, pad = max(map(len, enc)), tok.pad_token_id
    q = torch.tensor([[pad] * (width - len(e)) + e for e in enc])
    torch.manual_seed(1)
    out = model.generate(input_ids=q, attention_mask=(q != pad).long(), do_sample=True, temperature=0.7, top_k=0,
                         max_new_tokens=8, eos_token_id=tr.stop_ids, pad_token_id=pad, min_new_tokens=8,
                         output_logits=True, return_dict_in_generate=True)
    resp = out.sequences[:, width:]
    sampler = torch.gather(torch.log_softmax(torch.stack(out.logits, 1) / 0.7, -1), 2, resp[..., None]).squeeze(-1)
    logits, _ = tr._forward(tr.model, out.sequences, torch.cat([(q != pad).long(), torch.ones_like(resp)], 1))
    assert torch.allclose(ppo.response_logprobs(logits, resp, width, 0.7), sampler, atol=1e-5)


def test_rollout_masks_after_the_stop_token_and_penalizes_missing_eos(small_lm):
    model, tok = small_lm
    cfg = ppo.PPOConfig(batch_size=8, max_new_tokens=6, missing_eos_penalty=3.0, use_cpu=True)
    tr = ppo.PPOTrainer(cfg, model, tok, ROWS, reward_funcs=lambda prompts, completions, **kw: [1.0] * len(prompts))
    batch = tr.rollout(ROWS * 4)
    stops = torch.isin(batch.responses, torch.tensor(tr.stop_ids))
    for row in range(8):
        n = int(batch.mask[row].sum())
        assert (batch.responses[row, n:] == tok.pad_token_id).all()
        assert bool(batch.contains_eos[row]) == bool(stops[row].any())
        assert float(batch.scores[row]) == (1.0 if batch.contains_eos[row] else -2.0)
    assert (batch.logprobs * (1 - batch.mask) == 0).all() and (batch.values * (1 - batch.mask) == 0).all()


def test_one_update_moves_the_ratio_the_right_way(small_lm):
    model, tok = small_lm
    cfg = ppo.PPOConfig(batch_size=8, num_mini_batches=2, num_ppo_epochs=2, max_new_tokens=10, learning_rate=3e-3,
                        kl_coef=0.0, use_cpu=True)
    tr = ppo.PPOTrainer(cfg, model, tok, ROWS, reward_funcs=count_token(5))
    batch = tr.rollout(ROWS * 4)
    batch.scores = torch.tensor([1.0, -1.0] * 4)  # reward the even responses, punish the odd ones
    metrics = tr.update(batch)
    full = torch.cat([batch.queries, batch.responses], 1)
    attn = torch.cat([(batch.queries != tok.pad_token_id).long(), batch.mask.long()], 1)
    logits, _ = tr._forward(tr.model, full, attn)
    new = ppo.response_logprobs(logits, batch.responses, batch.queries.shape[1], cfg.temperature)
    change = ((new - batch.logprobs) * batch.mask).sum(1)
    assert float(change[0::2].mean()) > 0 > float(change[1::2].mean())
    assert 0.5 < metrics["val/ratio"] < 2.0 and metrics["policy/clipfrac_avg"] >= 0


def token_fraction(token_ids):
    """Fraction of the response's tokens that are in ``token_ids`` (a reward in [0, 1])."""
    def reward(prompts, completions, completion_ids, **kw):
        return [sum(t in token_ids for t in ids) / max(len(ids), 1) for ids in completion_ids]
    return reward


def test_programmatic_reward_rises_while_kl_stays_under_its_bound(small_lm):
    # With rewards in [0, 1] the KL-regularized optimum spends at most max(r) / kl_coef nats:
    # E[r] - kl_coef * KL must beat the reference policy's E[r] >= 0.
    model, tok = small_lm
    cfg = ppo.PPOConfig(steps=30, batch_size=32, num_mini_batches=4, num_ppo_epochs=4, max_new_tokens=12,
                        temperature=1.0, learning_rate=3e-3, kl_coef=0.02, use_cpu=True)
    tr = ppo.PPOTrainer(cfg, model, tok, ROWS, reward_funcs=token_fraction(set(range(100, 130))))
    hist = tr.train(progress=False)
    first, last = sum(hist["objective/scores"][:3]) / 3, sum(hist["objective/scores"][-3:]) / 3
    assert last > first + 0.2, (first, last)
    assert 0 < sum(hist["objective/kl"][-3:]) / 3 < 1.0 / cfg.kl_coef
    for key in ("objective/rlhf_reward", "objective/non_score_reward", "policy/approxkl_avg", "loss/value_avg",
                "val/num_eos_tokens", "objective/entropy"):
        assert len(hist[key]) == cfg.steps and all(math.isfinite(v) for v in hist[key])


def test_adaptive_kl_raises_the_coefficient_above_target(small_lm):
    model, tok = small_lm
    cfg = ppo.PPOConfig(steps=4, batch_size=8, max_new_tokens=8, learning_rate=1e-2, kl_coef=0.05, kl_target=0.01,
                        kl_horizon=100, use_cpu=True)
    tr = ppo.PPOTrainer(cfg, model, tok, ROWS, reward_funcs=token_fraction({5}))
    hist = tr.train(progress=False)
    coefs = hist["objective/kl_coef"] + [tr.kl_coef]  # the coefficient each step used, then the next one
    for kl, before, after in zip(hist["objective/kl"], coefs, coefs[1:]):
        assert (after > before) == (kl > cfg.kl_target)


def test_reward_model_and_shared_or_separate_critic(small_lm):
    from companion.reward import reward_model_from_causal_lm

    model, tok = small_lm
    rm = reward_model_from_causal_lm(copy.deepcopy(model), tok)
    cfg = ppo.PPOConfig(steps=2, batch_size=4, max_new_tokens=6, learning_rate=1e-3, use_cpu=True,
                        normalize_scores=True)
    for critic in (None, copy.deepcopy(rm)):
        tr = ppo.PPOTrainer(cfg, copy.deepcopy(model), tok, ROWS, reward_model=rm, value_model=critic)
        hist = tr.train(progress=False)
        assert tr.score_scale != 1.0 and len(hist["objective/scores"]) == 2


def test_a_critic_copied_from_the_reward_model_predicts_normalized_scores(small_lm):
    # A reward model whose scores sit far from 0: normalized, they have mean 0 and std 1, and the
    # critic copied from it must predict on that scale too, or it starts several units off its targets.
    from companion.reward import reward_model_from_causal_lm

    model, tok = small_lm
    rm = reward_model_from_causal_lm(copy.deepcopy(model), tok)
    head = torch.nn.Linear(rm.score.in_features, 1, bias=True)  # a head with a bias, as some reward models have
    with torch.no_grad():
        head.weight.copy_(rm.score.weight * 10)
        head.bias.fill_(5.0)
    rm.score = head
    cfg = ppo.PPOConfig(steps=1, batch_size=8, max_new_tokens=6, use_cpu=True, normalize_scores=True)
    tr = ppo.PPOTrainer(cfg, copy.deepcopy(model), tok, ROWS, reward_model=rm, value_model=copy.deepcopy(rm))
    batch = tr.rollout(ROWS * 4)
    full = torch.cat([batch.queries, batch.responses], 1)
    attn = torch.cat([(batch.queries != tok.pad_token_id).long(), batch.mask.long()], 1)
    before = tr._forward(tr.model, full, attn)[1]
    shift, scale = tr.calibrate_scores()
    assert abs(shift) > 3 * scale  # the raw scores are far from 0 on their own scale
    after = tr._forward(tr.model, full, attn)[1]
    assert torch.allclose(after, (before - shift) / scale, atol=1e-4)
    # without a reward model to be copied from, a given critic is left on its own scale
    plain = ppo.PPOTrainer(cfg, copy.deepcopy(model), tok, ROWS, reward_funcs=count_token(5),
                           value_model=copy.deepcopy(rm))
    plain.calibrate_scores()
    assert torch.allclose(plain._forward(plain.model, full, attn)[1], before, atol=1e-4)


def test_reward_weights_combine_sources_and_each_source_is_logged(small_lm):
    from companion.reward import reward_model_from_causal_lm
    from companion.reward import score as rm_score

    model, tok = small_lm
    rm = reward_model_from_causal_lm(copy.deepcopy(model), tok)

    def ones(prompts, completions, **kw):
        return [1.0] * len(completions)

    def half_none(prompts, completions, **kw):
        return [None if i % 2 else 4.0 for i in range(len(completions))]

    cfg = ppo.PPOConfig(steps=1, batch_size=4, max_new_tokens=6, use_cpu=True, reward_weights=[2.0, 0.5])
    tr = ppo.PPOTrainer(cfg, copy.deepcopy(model), tok, ROWS, reward_model=rm, reward_funcs=[ones, half_none])
    batch = tr.rollout(ROWS * 2)
    direct = rm_score(rm, tok, [r["prompt"] for r in batch.rows], batch.texts)
    assert torch.allclose(batch.parts["reward_model"], direct, atol=1e-6)
    expected = direct + 2.0 * 1.0 + torch.tensor([0.5 * 4.0, 0.0, 0.5 * 4.0, 0.0])  # None: that source is skipped
    assert torch.allclose(batch.raw_scores, expected, atol=1e-5)
    hist = tr.train(progress=False)
    assert hist["rewards/ones"] == [1.0] and hist["rewards/half_none"] == [4.0]  # unweighted means, NaNs left out
    assert "rewards/reward_model" in hist
    with pytest.raises(ValueError, match="one weight per function"):
        ppo.PPOTrainer(ppo.PPOConfig(batch_size=2, max_new_tokens=4, use_cpu=True, reward_weights=[1.0]),
                       copy.deepcopy(model), tok, ROWS, reward_funcs=[ones, half_none])
    with pytest.raises(ValueError, match="reward_weights"):
        ppo.PPOConfig(reward_weights=2.0)


def test_lora_policy_uses_its_base_as_reference(small_lm):
    from peft import LoraConfig, get_peft_model

    model, tok = small_lm
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=True))
    cfg = ppo.PPOConfig(steps=3, batch_size=4, max_new_tokens=8, learning_rate=1e-2, kl_coef=0.1, use_cpu=True)
    tr = ppo.PPOTrainer(cfg, lora, tok, ROWS, reward_funcs=count_token(5))
    assert tr.is_peft and tr.ref_model is None
    batch = tr.rollout(ROWS * 2)
    assert torch.allclose(batch.logprobs, batch.ref_logprobs, atol=1e-5)  # LoRA starts as the identity
    hist = tr.train(progress=False)
    assert len(hist["objective/kl"]) == 3


def test_checkpoint_round_trip(small_lm, tmp_path):
    model, tok = small_lm
    cfg = ppo.PPOConfig(steps=2, batch_size=4, max_new_tokens=6, learning_rate=1e-2, use_cpu=True)
    tr = ppo.PPOTrainer(cfg, copy.deepcopy(model), tok, ROWS, reward_funcs=count_token(5))
    tr.train(progress=False)
    tr.save_checkpoint(tmp_path / "ckpt")
    fresh = ppo.PPOTrainer(cfg, copy.deepcopy(model), tok, ROWS, reward_funcs=count_token(5))
    fresh.load_checkpoint(tmp_path / "ckpt")
    assert fresh.step == 2 and fresh.history["objective/kl"] == tr.history["objective/kl"]
    for a, b in zip(tr.policy.parameters(), fresh.policy.parameters()):
        assert torch.equal(a, b)
    fresh.train(steps=1, progress=False)
    assert fresh.step == 3
    with pytest.raises(FileNotFoundError, match="save_checkpoint"):
        fresh.load_checkpoint(tmp_path)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, message", [
    (lambda prompts, completions, **kw: 1.0, "one score per completion"),
    (lambda prompts, completions, **kw: [1.0] * (len(prompts) - 1), "returned 1 scores for 2"),
    (lambda prompts, completions, **kw: [float("nan")] * len(prompts), "non-finite"),
    (lambda prompts, completions, **kw: [None] * len(prompts), "returned None"),
])
def test_bad_reward_functions_get_clear_errors(small_lm, bad, message):
    model, tok = small_lm
    tr = ppo.PPOTrainer(ppo.PPOConfig(batch_size=2, max_new_tokens=4, use_cpu=True), model, tok, ROWS,
                        reward_funcs=bad)
    with pytest.raises(ValueError, match=message):
        tr.rollout(ROWS)


def test_bad_setup_gets_clear_errors(small_lm):
    model, tok = small_lm
    cfg = ppo.PPOConfig(batch_size=2, max_new_tokens=4, use_cpu=True)
    with pytest.raises(ValueError, match="needs a reward"):
        ppo.PPOTrainer(cfg, model, tok, ROWS)
    with pytest.raises(ValueError, match="'prompt'"):
        ppo.PPOTrainer(cfg, model, tok, [{"text": "hi"}], reward_funcs=count_token(5))
    with pytest.raises(ValueError, match="non-empty"):
        ppo.PPOTrainer(cfg, model, tok, "Once upon a time", reward_funcs=count_token(5))
    eos_pad = copy.deepcopy(tok)
    eos_pad.pad_token = eos_pad.eos_token
    with pytest.raises(ValueError, match="PAD token"):
        ppo.PPOTrainer(cfg, model, eos_pad, ROWS, reward_funcs=count_token(5))
    from companion.reward import reward_model_from_causal_lm

    small_vocab = reward_model_from_causal_lm(copy.deepcopy(model), tok)
    small_vocab.resize_token_embeddings(50)
    with pytest.raises(ValueError, match="reward_tokenizer"):
        ppo.PPOTrainer(cfg, model, tok, ROWS, reward_model=small_vocab)
    long = ppo.PPOTrainer(ppo.PPOConfig(batch_size=2, max_new_tokens=120, use_cpu=True), model, tok, ROWS,
                          reward_funcs=count_token(5))
    with pytest.raises(ValueError, match="context"):
        long.rollout(ROWS)
    with pytest.raises(TypeError, match="callables"):
        ppo.PPOTrainer(cfg, model, tok, ROWS, reward_funcs=["not a function"])
