"""companion.evaluation: paired differences, sequence log-probs, KL between policies."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from companion import evaluation
from companion.models import build_causal_lm


def test_paired_difference_by_hand():
    d = evaluation.paired_difference([1, 1, 0, 1], [0, 1, 0, 0])  # differences 1, 0, 0, 1
    assert d.mean == 0.5 and d.se == pytest.approx(math.sqrt(1 / 3) / 2)
    assert not d.significant and str(d) == "+0.500 ± 0.289"
    with pytest.raises(ValueError, match="same length"):
        evaluation.paired_difference([1, 0], [1])


def test_describe_says_win_loss_or_noise_by_two_standard_errors():
    win = evaluation.PairedDifference(0.12, 0.035)
    loss = evaluation.PairedDifference(-0.09, 0.03)
    noise = evaluation.PairedDifference(0.056, 0.037)
    assert win.describe("SFT's") == "above SFT's by +0.120 ± 0.035, more than two standard errors"
    assert loss.significant_loss and loss.describe("SFT's").startswith("below SFT's by -0.090 ± 0.030")
    assert not noise.significant and not noise.significant_loss
    assert noise.describe("SFT's") == ("within two standard errors of SFT's (+0.056 ± 0.037): "
                                       "no difference this run can claim")


def test_significance_needs_two_standard_errors():
    a, b = [1.0] * 30 + [0.0] * 70, [0.0] * 100
    d = evaluation.paired_difference(a, b)
    assert d.significant and d.mean == pytest.approx(0.3)


def test_sequence_logprobs_and_kl(small_tokenizer):
    torch.manual_seed(0)
    model = build_causal_lm(small_tokenizer, n_layer=1, n_head=2, n_embd=16, intermediate_size=32, context_length=128)
    prompts, answers = ["Lily"], ["Max liked to run."]
    got = evaluation.sequence_logprobs(model, small_tokenizer, prompts, answers)
    conv = [{"role": "user", "content": "Lily"}]
    head = small_tokenizer.apply_chat_template(conv, tokenize=True, add_generation_prompt=True, return_dict=True)
    full = small_tokenizer.apply_chat_template(conv + [{"role": "assistant", "content": answers[0]}], tokenize=True,
                                               return_dict=True)["input_ids"]
    n_head = len(head["input_ids"])
    logits = model(input_ids=torch.tensor([full])).logits[0].float()
    manual = sum(torch.log_softmax(logits[t - 1], -1)[full[t]] for t in range(n_head, len(full)))
    assert float(got[0]) == pytest.approx(float(manual), abs=1e-4)
    same = evaluation.sampled_kl(model, copy.deepcopy(model), small_tokenizer, prompts * 2, max_new_tokens=8)
    assert abs(same) < 1e-4


def test_compare_policies_pairs_models_on_the_same_prompts(small_tokenizer):
    from companion import tinyworld

    torch.manual_seed(0)
    model = build_causal_lm(small_tokenizer, n_layer=1, n_head=2, n_embd=16, intermediate_size=32, context_length=128)
    specs = tinyworld.held_out_prompts(3)
    rows = evaluation.compare_policies({"a": (model, small_tokenizer), "b": (copy.deepcopy(model), small_tokenizer)},
                                       specs, reference="a", temperature=1.0, samples=2, kl_prompts=2,
                                       max_new_tokens=6)
    assert list(rows) == ["a", "b"] and len(rows["a"]["per_prompt"]) == 3
    assert rows["a"]["kl"] == 0.0 and abs(rows["b"]["kl"]) < 1e-4   # identical weights
    assert rows["b"]["vs_reference"].mean == 0.0                     # same seeds, same answers
    with pytest.raises(ValueError, match="reference"):
        evaluation.compare_policies({"a": (model, small_tokenizer)}, specs, reference="sft")
    with pytest.raises(ValueError, match="samples"):
        evaluation.compare_policies({"a": (model, small_tokenizer)}, specs, samples=2)


def test_compare_policies_reuses_known_rows(small_tokenizer, monkeypatch):
    from companion import sft, tinyworld

    torch.manual_seed(0)
    model = build_causal_lm(small_tokenizer, n_layer=1, n_head=2, n_embd=16, intermediate_size=32, context_length=128)
    specs = tinyworld.held_out_prompts(3)
    first = evaluation.compare_policies({"a": (model, small_tokenizer)}, specs, max_new_tokens=6)
    calls = []
    real = sft.chat_responses
    monkeypatch.setattr(sft, "chat_responses", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = evaluation.compare_policies({"a": (model, small_tokenizer), "b": (copy.deepcopy(model), small_tokenizer)},
                                        specs, reference="a", kl_prompts=2, max_new_tokens=6, known=first)
    assert again["a"]["per_prompt"] is first["a"]["per_prompt"]
    assert again["b"]["vs_reference"].mean == 0.0 and again["a"]["kl"] == 0.0
    assert len(calls) == 2  # b's greedy answers and b's KL samples; a was not generated again
    with pytest.raises(ValueError, match="same specs"):
        evaluation.compare_policies({"a": (model, small_tokenizer)}, specs[:2], known=first)
