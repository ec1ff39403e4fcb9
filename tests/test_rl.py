"""RL basics: bandits, returns, GAE, the clipped surrogate, REINFORCE (CartPole and an LM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion.rl import (
    UCB,
    EpsilonGreedy,
    GaussianBandit,
    GradientBandit,
    clipped_surrogate,
    cumulative_regret,
    discounted_returns,
    gae,
    ppo_clip_loss,
    run_bandit,
    td_errors,
)


# --------------------------------------------------------------------------- bandits
def test_cumulative_regret_by_hand():
    # arm 1 is best (mean 1); pulling arm 0 costs 1 each time
    assert cumulative_regret([0.0, 1.0], [0, 1, 0]).ravel().tolist() == [1.0, 1.0, 2.0]


def test_cumulative_regret_checks_runs():
    with pytest.raises(ValueError, match="runs"):
        cumulative_regret(np.zeros((2, 3)), np.zeros((5, 3), dtype=int))


def test_epsilon_greedy_sample_average_update():
    agent = EpsilonGreedy(k=3, runs=1, epsilon=0.0)
    agent.update(np.array([2]), np.array([1.0]))
    agent.update(np.array([2]), np.array([3.0]))
    assert agent.Q[0].tolist() == [0.0, 0.0, 2.0]  # (1 + 3) / 2
    assert agent.select(np.random.default_rng(0)).tolist() == [2]  # greedy


def test_epsilon_greedy_constant_step_and_validation():
    agent = EpsilonGreedy(k=2, epsilon=0.0, step_size=0.5)
    agent.update(np.array([0]), np.array([4.0]))
    agent.update(np.array([0]), np.array([0.0]))
    assert agent.Q[0, 0] == pytest.approx(1.0)  # 0 -> 2 -> 1
    with pytest.raises(ValueError, match="epsilon"):
        EpsilonGreedy(k=2, epsilon=1.5)


def test_epsilon_one_explores_uniformly():
    agent = EpsilonGreedy(k=4, runs=4000, epsilon=1.0)
    counts = np.bincount(agent.select(np.random.default_rng(0)), minlength=4) / 4000
    assert np.allclose(counts, 0.25, atol=0.03)


def test_ucb_tries_every_arm_then_uses_the_bonus():
    agent = UCB(k=3, c=2.0)
    rng = np.random.default_rng(0)
    tried = set()
    for r in (1.0, 0.0, 0.5):
        a = agent.select(rng)
        tried.add(int(a[0]))
        agent.update(a, np.array([r]))
    assert tried == {0, 1, 2}
    # t=3, every N=1: score = Q + 2 sqrt(ln 3) -> the arm that paid 1.0 wins
    np.testing.assert_allclose(agent.scores()[0] - agent.Q[0], 2 * np.sqrt(np.log(3)))


def test_gradient_bandit_update_by_hand():
    agent = GradientBandit(k=2, alpha=0.1, baseline=False)
    agent.update(np.array([0]), np.array([1.0]))
    # pi = (0.5, 0.5): H0 += 0.1 * 1 * (1 - 0.5), H1 -= 0.1 * 1 * 0.5
    np.testing.assert_allclose(agent.H[0], [0.05, -0.05])
    assert agent.policy()[0, 0] > 0.5


def test_agent_and_bandit_sizes_must_match():
    with pytest.raises(ValueError, match="runs"):
        run_bandit(EpsilonGreedy(k=10, runs=2), GaussianBandit.testbed(k=10, runs=3), steps=5)


def test_exploration_beats_pure_greedy_on_the_testbed():
    runs, steps = 200, 500
    regret = {}
    for eps in (0.0, 0.1):
        bandit = GaussianBandit.testbed(k=10, runs=runs, seed=1)
        out = run_bandit(EpsilonGreedy(k=10, runs=runs, epsilon=eps), bandit, steps, seed=2)
        regret[eps] = out.mean_regret()[-1]
        assert out.regret.shape == (steps, runs)
    assert regret[0.1] < 0.8 * regret[0.0]
    ucb = run_bandit(UCB(k=10, runs=runs), GaussianBandit.testbed(k=10, runs=runs, seed=1), steps, seed=2)
    grad = run_bandit(GradientBandit(k=10, runs=runs, alpha=0.1), GaussianBandit.testbed(k=10, runs=runs, seed=1),
                      steps, seed=2)
    assert ucb.mean_regret()[-1] < regret[0.0]
    assert grad.optimal_fraction()[-50:].mean() > 0.5


def test_run_bandit_snapshots():
    out = run_bandit(EpsilonGreedy(k=3, runs=2), GaussianBandit.testbed(k=3, runs=2), steps=20, snapshot_every=10)
    assert out.snapshot_steps.tolist() == [1, 10, 20]
    assert out.snapshots.shape == (3, 2, 3)


# --------------------------------------------------------------------------- returns and GAE
def test_discounted_returns_by_hand():
    np.testing.assert_allclose(discounted_returns([1, 1, 1], gamma=0.5), [1.75, 1.5, 1.0])
    np.testing.assert_allclose(discounted_returns([1, 1, 1], gamma=1.0), [3, 2, 1])


def test_discounted_returns_stop_at_termination():
    # the episode ends after step 1: G1 = 2, G0 = 1 + 0.5*2; a new episode starts at step 2
    np.testing.assert_allclose(discounted_returns([1, 2, 3, 4], 0.5, dones=[0, 1, 0, 0]), [2, 2, 5, 4])


def test_discounted_returns_bootstrap_and_validation():
    np.testing.assert_allclose(discounted_returns([1, 1], 0.5, last_value=4.0), [2.5, 3.0])  # G1 = 1 + .5*4, G0 = 1 + .5*3
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns([1.0], gamma=1.5)
    with pytest.raises(ValueError, match="dones"):
        discounted_returns([1.0, 2.0], dones=[0])


def test_gae_hand_computed_example():
    # deltas: 1 + .9*1 - .5 = 1.4 ; 0 + .9*1.5 - 1 = .35 ; 2 + 0 - 1.5 = .5 (terminal)
    rewards, values = [1.0, 0.0, 2.0], [0.5, 1.0, 1.5]
    np.testing.assert_allclose(td_errors(rewards, values, 0.9), [1.4, 0.35, 0.5])
    adv, ret = gae(rewards, values, gamma=0.9, lam=0.8)
    # A2 = .5 ; A1 = .35 + .72*.5 = .71 ; A0 = 1.4 + .72*.71 = 1.9112
    np.testing.assert_allclose(adv, [1.9112, 0.71, 0.5])
    np.testing.assert_allclose(ret, [2.4112, 1.71, 2.0])


@pytest.mark.parametrize("gamma", [-0.1, 1.5, float("nan")])
def test_td_errors_and_gae_reject_gamma_outside_0_1(gamma):
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\], got"):
        td_errors([1.0, 0.0], [0.5, 0.5], gamma=gamma)
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\], got"):
        gae([1.0, 0.0], [0.5, 0.5], gamma=gamma)


def test_gae_limits_are_td_and_monte_carlo():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=6), rng.normal(size=6)
    dones = [0, 0, 1, 0, 0, 0]
    adv0, _ = gae(r, v, 0.9, 0.0, dones=dones, last_value=0.3)
    np.testing.assert_allclose(adv0, td_errors(r, v, 0.9, dones=dones, last_value=0.3))
    adv1, _ = gae(r, v, 0.9, 1.0, dones=dones, last_value=0.3)
    np.testing.assert_allclose(adv1, discounted_returns(r, 0.9, dones=dones, last_value=0.3) - v)


def test_returns_and_gae_are_batched_over_rows():
    r = np.array([[1.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    v = np.array([[0.5, 1.0, 1.5], [1.0, 1.0, 1.0]])
    adv, _ = gae(r, v, gamma=0.9, lam=0.8, last_value=np.array([0.0, 2.0]))
    np.testing.assert_allclose(adv[0], gae(r[0], v[0], 0.9, 0.8)[0])
    np.testing.assert_allclose(adv[1], gae(r[1], v[1], 0.9, 0.8, last_value=2.0)[0])
    np.testing.assert_allclose(discounted_returns(r, 0.5)[1], [1.75, 1.5, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        discounted_returns(np.zeros((2, 2, 2)))


# --------------------------------------------------------------------------- clipped surrogate
def test_clipped_surrogate_by_hand():
    ratio = np.array([1.5, 0.5, 0.5, 1.5])
    adv = np.array([1.0, 1.0, -1.0, -1.0])
    np.testing.assert_allclose(clipped_surrogate(ratio, adv, 0.2), [1.2, 0.5, -0.8, -1.5])
    t = clipped_surrogate(torch.tensor(ratio), torch.tensor(adv), 0.2)
    assert t.tolist() == pytest.approx([1.2, 0.5, -0.8, -1.5])


def test_ppo_clip_loss_gradient_vanishes_when_clipped():
    logp_old = torch.log(torch.tensor([0.5, 0.5]))
    logp_new = torch.log(torch.tensor([0.9, 0.5])).requires_grad_(True)  # ratio 1.8 and 1.0
    loss, stats = ppo_clip_loss(logp_new, logp_old, torch.tensor([1.0, 1.0]), eps=0.2)
    loss.backward()
    assert logp_new.grad[0] == 0  # clipped: no push beyond 1 + eps
    assert logp_new.grad[1] == pytest.approx(-0.5)  # -(1/2) * ratio * A
    assert stats["clip_frac"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same shape"):
        ppo_clip_loss(logp_new, logp_old[:1], torch.ones(2))


# --------------------------------------------------------------------------- REINFORCE on CartPole
def test_policy_gradient_matches_finite_differences():
    from companion.rl.reinforce import LinearSoftmaxPolicy

    rng = np.random.default_rng(0)
    pol = LinearSoftmaxPolicy(3, 2, rng.normal(size=(3, 2)))
    obs = rng.normal(size=3)
    g = pol.grad_log_prob(obs, np.array([1]))[0]
    eps = 1e-6
    for i in range(3):
        for j in range(2):
            th = pol.theta.copy()
            th[i, j] += eps
            num = (np.log(LinearSoftmaxPolicy(3, 2, th).probs(obs)[1]) - np.log(pol.probs(obs)[1])) / eps
            assert g[i, j] == pytest.approx(num, abs=1e-4)


def test_time_baseline_and_config_validation():
    from companion.rl.reinforce import ReinforceConfig, time_baseline

    b = time_baseline([np.array([3.0, 2.0, 1.0]), np.array([1.0])])
    np.testing.assert_allclose(b[0], [2.0, 2.0, 1.0])
    np.testing.assert_allclose(b[1], [2.0])
    with pytest.raises(ValueError, match="baseline"):
        ReinforceConfig(baseline="learned")


def test_reinforce_improves_cartpole():
    from companion.rl.reinforce import ReinforceConfig, reinforce

    h = reinforce(ReinforceConfig(iterations=25, batch_episodes=6, lr=0.1, baseline="mean",
                                  normalize_grad=True, seed=0))
    first, last = np.mean(h["episode_return"][:5]), np.mean(h["episode_return"][-5:])
    assert last > 1.5 * first


# --------------------------------------------------------------------------- REINFORCE on an LM
def test_keyword_reward_distinct_and_mask():
    from companion.rl.lm import distinct_n, keyword_reward, response_mask

    assert keyword_reward(["happy"])(["Happy dog, happy cat.", "unhappy"]) == [2.0, 0.0]
    with pytest.raises(ValueError, match="target word"):
        keyword_reward([" "])
    assert distinct_n(["a b c"], 2) == 1.0
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert response_mask(torch.tensor([[5, 9, 7], [4, 4, 4]]), [9]).tolist() == [[1, 1, 0], [1, 1, 1]]


def test_reinforce_loss_by_hand():
    from companion.rl.lm import reinforce_loss

    lp = torch.log(torch.tensor([[0.5, 0.5], [0.25, 1.0]]))
    mask = torch.ones(2, 2)
    # no baseline: -(1 * log .25 + 0) / 2 = log 2
    assert float(reinforce_loss(lp, mask, torch.tensor([1.0, 0.0]), baseline=False)) == pytest.approx(np.log(2))
    # baseline 0.5: -(0.5 * log .25 - 0.5 * log .25) / 2 = 0
    assert float(reinforce_loss(lp, mask, torch.tensor([1.0, 0.0]))) == pytest.approx(0.0)


def test_reinforce_lm_raises_reward_on_a_tiny_model(small_tokenizer):
    from companion.models import build_causal_lm
    from companion.rl.lm import LMReinforceConfig, reinforce_lm, token_kl

    torch.manual_seed(0)
    model = build_causal_lm(small_tokenizer, n_layer=1, n_head=2, n_embd=32, intermediate_size=64,
                            context_length=64)
    def count_e(texts):  # a random model writes random pieces; reward the letter "e"
        return [float(t.count("e")) for t in texts]

    cfg = LMReinforceConfig(steps=20, group_size=8, max_new_tokens=6, learning_rate=2e-2, seed=0)
    h = reinforce_lm(model, small_tokenizer, ["Once upon a time"], count_e, cfg, progress=False)
    assert len(h["reward"]) == 20
    assert np.mean(h["reward"][-5:]) > np.mean(h["reward"][:5]) + 0.5
    assert h["kl"][-1] > h["kl"][0]
    logits = torch.randn(2, 3, 5)
    assert torch.allclose(token_kl(logits, logits), torch.zeros(2, 3), atol=1e-6)


# --------------------------------------------------------------------------- the bandit widget
def test_bandit_widget_data_and_html():
    from companion.widgets.bandit import bandit_widget, bandit_widget_data

    data = bandit_widget_data(epsilons=(0.0, 0.1), steps=200, runs=50, snapshot_every=50, points=20)
    assert data["steps"][0] == 1 and data["steps"][-1] == 200 and len(data["steps"]) == 20
    assert data["snap_steps"] == [1, 50, 100, 150, 200]
    c = data["curves"]["0.1"]
    assert len(c["Q"]) == 5 and len(c["Q"][0]) == 10
    assert sum(c["N"][-1]) == 200  # run 0 pulled 200 times in all
    assert c["regret"] == sorted(c["regret"])  # regret never decreases
    html = bandit_widget(data).data
    assert "Epsilon-greedy" in html and '"epsilons":[0.0,0.1]' in html
    with pytest.raises(ValueError, match="epsilons"):
        bandit_widget_data(epsilons=())
