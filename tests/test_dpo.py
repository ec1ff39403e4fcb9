"""companion.dpo: the loss against hand-computed values and TRL's, the data builders, short runs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from companion import dpo, tinyworld
from companion.models import build_causal_lm
from companion.reward import judge_rankings


@pytest.fixture
def small_lm(small_tokenizer):
    torch.manual_seed(0)
    return build_causal_lm(small_tokenizer, n_layer=2, n_head=2, n_embd=32, intermediate_size=64,
                           context_length=128), small_tokenizer


def _pairs(n: int = 8) -> Dataset:
    rows = []
    for i in range(n):
        rows.append({"prompt": [{"role": "user", "content": f"Tell me about Lily {i}"}],
                     "chosen": [{"role": "assistant", "content": "Lily found a red ball. She was very happy."}],
                     "rejected": [{"role": "assistant", "content": "Max liked to run. Max liked to run."}]})
    return Dataset.from_list(rows)


# --------------------------------------------------------------------------- the loss
def test_dpo_loss_by_hand():
    out = dpo.dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    assert out.chosen_rewards.item() == pytest.approx(0.5)
    assert out.rejected_rewards.item() == pytest.approx(-0.5)
    assert out.losses.item() == pytest.approx(math.log(1 + math.exp(-1.0)), abs=1e-6)
    assert out.margins.item() == pytest.approx(1.0)
    # policy == reference: no preference expressed yet, the loss is log 2 whatever beta is
    same = dpo.dpo_loss(torch.tensor([-4.0]), torch.tensor([-9.0]), torch.tensor([-4.0]), torch.tensor([-9.0]), 2.0)
    assert same.losses.item() == pytest.approx(math.log(2))


def test_dpo_loss_gradient_raises_chosen_and_lowers_rejected():
    chosen, rejected = torch.tensor([-5.0], requires_grad=True), torch.tensor([-5.0], requires_grad=True)
    dpo.dpo_loss(chosen, rejected, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.1).losses.sum().backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()  # descending the loss raises log p(chosen)
    assert chosen.grad.item() == pytest.approx(-0.1 * 0.5)  # beta * sigmoid(0)


def test_ipo_loss_by_hand():
    loss = dpo.ipo_loss(torch.tensor([-2.0]), torch.tensor([-6.0]), torch.tensor([-4.0]), torch.tensor([-4.0]),
                        beta=0.5, chosen_tokens=torch.tensor([2.0]), rejected_tokens=torch.tensor([4.0]))
    # per-token log-ratios: chosen +2/2 = 1, rejected -2/4 = -0.5; margin 1.5, target 1/(2*0.5) = 1
    assert loss.item() == pytest.approx(0.25)


def test_beta_must_be_positive():
    with pytest.raises(ValueError, match="beta .*must be > 0"):
        dpo.dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=0.0)


def _sequence_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the completion tokens of TRL's batch ([chosen; rejected]) and their counts."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    logp = torch.gather(F.log_softmax(logits[:, :-1], -1), 2, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"][:, 1:].float()
    return (logp * mask).sum(1), batch["completion_mask"].sum(1).float()


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_our_loss_matches_trl_on_the_same_batch(small_lm, small_tokenizer, tmp_path, loss_type):
    from trl import DPOTrainer

    policy, tok = small_lm
    ref = copy.deepcopy(policy)
    torch.manual_seed(1)
    with torch.no_grad():
        for w in ref.parameters():
            w.add_(0.05 * torch.randn_like(w))  # a reference that differs from the policy
    policy_copy, ref_copy = copy.deepcopy(policy).eval(), copy.deepcopy(ref).eval()
    beta = 0.3
    args = dpo.dpo_config(str(tmp_path), beta=beta, loss_type=[loss_type], per_device_train_batch_size=4,
                          max_length=64)
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=_pairs(4), processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()
        lp, tokens = _sequence_logps(policy_copy, batch)
        lr, _ = _sequence_logps(ref_copy, batch)
    (pc, pr), (rc, rr), (tc, tr) = lp.chunk(2), lr.chunk(2), tokens.chunk(2)
    ours = (dpo.dpo_loss(pc, pr, rc, rr, beta).losses if loss_type == "sigmoid"
            else dpo.ipo_loss(pc, pr, rc, rr, beta, tc, tr)).mean().item()
    assert ours == pytest.approx(trl_loss, abs=1e-5)
    assert abs(ours - math.log(2)) > 1e-3 or loss_type == "ipo"  # two different models: not the trivial log 2


# --------------------------------------------------------------------------- data
def test_check_preference_pairs_errors():
    with pytest.raises(ValueError, match="missing \\['rejected'\\]"):
        dpo.check_preference_pairs(Dataset.from_list([{"prompt": "a", "chosen": "b"}]))
    with pytest.raises(ValueError, match="empty"):
        dpo.check_preference_pairs(Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []}))
    with pytest.raises(ValueError, match="identical chosen and rejected.*rows \\[1\\]"):
        dpo.check_preference_pairs(Dataset.from_list([{"prompt": "p", "chosen": "a", "rejected": "b"},
                                                      {"prompt": "p", "chosen": "same", "rejected": "same"}]))
    with pytest.raises(TypeError, match="datasets.Dataset"):
        dpo.check_preference_pairs([{"prompt": "p", "chosen": "a", "rejected": "b"}])
    ok = dpo.check_preference_pairs(Dataset.from_list([{"prompt": "p", "chosen": "a", "rejected": "b", "group": 0}]))
    assert ok.column_names == ["prompt", "chosen", "rejected"]


GOOD = ("Once upon a time, Lily had a red ball. She played with the ball in the park every day. One day the ball "
        "rolled away, and her friend found it. Lily was so happy and they smiled together.")
NO_TOPIC = ("Once upon a time, Lily had a small hat. She wore it in the park every day. One day the wind took it, "
            "and her friend found it. Lily was so happy and they smiled together.")


def _rankings():
    spec = tinyworld.TaskSpec("Lily", "ball")
    return judge_rankings([spec], [[GOOD, NO_TOPIC, "ball ball ball"]])


def test_preference_pairs_all_or_extremes():
    rankings = _rankings()
    assert len(rankings[0]["tiers"]) == 3
    assert len(dpo.preference_pairs(rankings)) == 3
    extremes = dpo.preference_pairs(rankings, extremes=True)
    assert len(extremes) == 1
    assert extremes[0]["chosen"][0]["content"] == GOOD
    assert extremes[0]["rejected"][0]["content"] == "ball ball ball"


def test_topic_contrast_pairs_differ_only_in_the_topic():
    pairs = dpo.topic_contrast_pairs(_rankings())
    assert len(pairs) == 1
    chosen, rejected = pairs[0]["chosen"][0]["content"], pairs[0]["rejected"][0]["content"]
    spec = tinyworld.TaskSpec("Lily", "ball")
    assert tinyworld.gold_judge(spec, chosen).success
    verdict = tinyworld.gold_judge(spec, rejected)
    assert not verdict.checks["topic"] and all(v for k, v in verdict.checks.items() if k != "topic")
    assert len(chosen.split()) == len(rejected.split())
    with pytest.raises(ValueError, match="lacks"):
        dpo.topic_contrast_pairs([{"prompt": [], "answers": [GOOD], "tiers": [[0]]}])


def test_kto_dataset_and_weights():
    data = dpo.kto_dataset(_rankings())
    assert data.column_names == ["prompt", "completion", "label"]
    assert data["label"] == [True, False, False]
    w = dpo.kto_weights(data["label"])
    assert w["desirable_weight"] * 1 == pytest.approx(w["undesirable_weight"] * 2)  # weighted counts equal
    with pytest.raises(ValueError, match="both desirable and undesirable"):
        dpo.kto_dataset([{"prompt": [], "answers": ["a"], "success": [False]}])
    with pytest.raises(ValueError, match="'success' flag"):
        dpo.kto_dataset([{"prompt": [], "answers": ["a", "b"]}])
    with pytest.raises(ValueError, match="ratio"):
        dpo.kto_weights([True, False], ratio=2.0)


# --------------------------------------------------------------------------- training
def test_short_dpo_run_separates_chosen_from_rejected(small_lm, tmp_path):
    model, tok = small_lm
    reference = copy.deepcopy(model)
    pairs = _pairs(16)
    before = dpo.implicit_reward_accuracy(model, reference, tok, pairs)
    assert before["accuracy"] == pytest.approx(0.5) and before["margin"] == pytest.approx(0.0, abs=1e-5)
    args = dpo.dpo_config(str(tmp_path), learning_rate=5e-3, num_train_epochs=3, per_device_train_batch_size=8,
                          max_length=64, logging_steps=1)
    result = dpo.train_dpo(model, tok, pairs, args)
    margins = [m for m in result.history["rewards/margins"] if m is not None]
    assert margins[-1] > margins[0] + 0.1
    after = dpo.implicit_reward_accuracy(result.model, reference, tok, pairs)
    assert after["accuracy"] == 1.0 and after["margin"] > 0.1
    assert after["chosen_shift"] - after["rejected_shift"] == pytest.approx(after["margin"] / args.beta, rel=1e-4)
    assert result.train_seconds > 0
    out = result.model.generate(**tok("Lily", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 1  # the returned model generates without TRL's patched forward


def test_short_kto_run_trains(small_lm, tmp_path):
    model, tok = small_lm
    rows = []
    for i in range(16):
        good = i % 2 == 0
        rows.append({"prompt": [{"role": "user", "content": f"Story {i}"}], "label": good,
                     "completion": [{"role": "assistant", "content": GOOD if good else "Max Max Max Max."}]})
    data = Dataset.from_list(rows)
    args = dpo.kto_config(str(tmp_path), learning_rate=5e-3, num_train_epochs=2, per_device_train_batch_size=8,
                          max_length=64, logging_steps=1)
    result = dpo.train_kto(model, tok, data, args)
    assert "loss" in result.history and len([x for x in result.history["loss"] if x is not None]) >= 2
    with pytest.raises(ValueError, match="missing \\['label'\\]"):
        dpo.train_kto(model, tok, data.remove_columns("label"), args)


def test_string_model_gets_a_clear_error(small_tokenizer, tmp_path):
    with pytest.raises(TypeError, match="load it first"):
        dpo.train_dpo("some/model", small_tokenizer, _pairs(2), dpo.dpo_config(str(tmp_path)))


# --------------------------------------------------------------------------- the book's iterative DPO artifact
def test_iterative_dpo_samples_each_round_from_the_previous_rounds_model(small_lm, monkeypatch, tmp_path):
    from companion import pipeline, reward

    model, tok = small_lm
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    monkeypatch.setattr(pipeline, "dpo_policy", lambda profile=None: (model, tok, None))
    monkeypatch.setattr(pipeline, "dpo_sizes", lambda profile=None: dict(prompts=4, answers=2, rounds=2))
    seen = []

    def sample(policy, tokenizer, prompts, k, **kw):  # a good and a bad answer, and which weights answered
        seen.append({n: p.detach().clone() for n, p in policy.named_parameters()})
        return [[GOOD.replace("Lily", "Max"), "bad bad bad"] for _ in prompts]

    monkeypatch.setattr(reward, "sample_answers", sample)
    out = tmp_path / "dpo"
    out.mkdir()
    meta = pipeline.build_dpo_model(out, learning_rate=5e-3, per_device_train_batch_size=2, max_length=128)
    assert len(seen) == 2 and all(torch.equal(seen[0][n], start[n]) for n in start)  # round 1: the SFT model
    assert any(not torch.equal(seen[1][n], start[n]) for n in start)  # round 2: round 1's model answers
    first = type(model).from_pretrained(out / "round-1")
    assert all(torch.equal(p, seen[1][n]) for n, p in first.named_parameters())  # saved: round 2's reference
    final = type(model).from_pretrained(out)
    assert any(not torch.equal(p, seen[1][n]) for n, p in final.named_parameters())  # round 2 trained on
    assert [len(reward.load_rankings(out / f"round-{k}" / "rankings.jsonl")) for k in (1, 2)] == [4, 4]
    assert (out / "round-2" / "history.json").is_file() and not (out / "round-2" / "config.json").exists()
    assert len(meta["rounds"]) == 2 and meta["pairs"] == sum(r["pairs"] for r in meta["rounds"])
    with pytest.raises(ValueError, match="round_number must be a round of the DPO run, 1 to 2, got 3"):
        pipeline.dpo_history(round_number=3)
    with pytest.raises(ValueError, match="round_number"):
        pipeline.dpo_model(round_number=0)
