"""The live widgets (anywidget): both mime parts, Python-side recomputation, clear errors, the static fallback."""

from __future__ import annotations

import pytest
import torch

from companion import reward
from companion.sampling import generate, next_token_logits, next_token_probs
from companion.widgets import bandit as bw
from companion.widgets import ranking as rw
from companion.widgets import temperature as tw
from companion.widgets.html import StaticWidget, live_or_static

VIEW = "application/vnd.jupyter.widget-view+json"
ANSWERS = {f"A{i}": f"answer number {i}" for i in range(1, 5)}
SCORES = {"A1": -0.5, "A2": 0.0, "A3": 0.8, "A4": 1.5}


@pytest.fixture(scope="module")
def tiny_lm(small_tokenizer):
    from companion.models import build_causal_lm

    return build_causal_lm(small_tokenizer, n_layer=1, n_embd=32, n_head=2, intermediate_size=64), small_tokenizer


def bundle(widget) -> dict:
    out = widget._repr_mimebundle_()
    return out[0] if isinstance(out, tuple) else out


# --------------------------------------------------------------------------- temperature
def test_temperature_bundle_has_the_live_view_and_the_static_widget(tiny_lm):
    model, tok = tiny_lm
    w = tw.temperature_widget(model=model, tokenizer=tok, prompt="Once upon", max_new_tokens=3)
    b = bundle(w)
    assert VIEW in b and b[VIEW]["model_id"] == w.model_id
    assert "cw-t" in b["text/html"] and '"prompts":[{"prompt":"Once upon"' in b["text/html"]
    assert "Live mode (type your own prompt) needs Jupyter or Colab" in b["text/html"]
    assert "export default" in w._esm and "drawBars" in w._esm and "drawBars" in b["text/html"]  # one drawing code


def test_temperature_live_state_follows_the_traitlets(tiny_lm):
    model, tok = tiny_lm
    w = tw.temperature_widget(model=model, tokenizer=tok, prompt="Once upon", n_samples=2, max_new_tokens=4, seed=5)
    w.prompt, w.temperature, w.top_k, w.top_p = "Lily found", 0.7, 20, 0.9
    s = w.state
    assert s["error"] == "" and s["prompt"] == "Lily found"
    p = next_token_probs(next_token_logits(model, tok, "Lily found"), 0.7, 20, 0.9)
    assert s["support"] == int((p > 0).sum()) <= 20 and s["vocab"] == len(p)
    top = torch.sort(p, descending=True).values[:5]
    assert s["probs"][:5] == pytest.approx(top.tolist(), abs=1e-6)
    assert s["samples"] == [generate(model, tok, "Lily found", 4, 0.7, 20, 0.9, seed=5 + i) for i in range(2)]
    w.temperature = 0.0
    assert w.state["support"] == 1 and w.state["probs"][0] == 1.0 and len(w.state["samples"]) == 1


def test_temperature_bad_settings_show_an_error_not_a_traceback(tiny_lm):
    model, tok = tiny_lm
    w = tw.temperature_widget(model=model, tokenizer=tok, prompt="Once", max_new_tokens=2)
    w.temperature = -1.0
    assert w.state["error"].startswith("temperature must be a number >= 0")
    w.temperature, w.top_p = 1.0, 0.0
    assert "top_p must be in (0, 1]" in w.state["error"]
    w.top_p = 1.0
    assert w.state["error"] == ""


def test_temperature_bad_arguments_name_the_argument(tiny_lm):
    model, tok = tiny_lm
    with pytest.raises(ValueError, match="tokenizer is missing"):
        tw.temperature_widget(model=model)
    with pytest.raises(ValueError, match="data is missing"):
        tw.temperature_widget()
    with pytest.raises(ValueError, match="temperature must be"):
        tw.temperature_widget(model=model, tokenizer=tok, temperature=-0.5)
    with pytest.raises(ValueError, match="n_samples must be"):
        tw.temperature_widget(model=model, tokenizer=tok, n_samples=-1)


def test_temperature_without_a_model_is_the_static_widget(tiny_lm):
    model, tok = tiny_lm
    data = tw.widget_data(model, tok, ["Once upon"], temperatures=(0.0, 1.0), top_n=5, sample_temperatures=(1.0,),
                          n_samples=1, max_new_tokens=2)
    w = tw.temperature_widget(data)
    assert isinstance(w, StaticWidget) and set(bundle(w)) == {"text/html", "text/plain"}
    assert "pass model= and tokenizer=" in w.data and "cw-t" in w.data


# --------------------------------------------------------------------------- ranking
def test_ranking_bundle_and_live_table_match_ranking_summary():
    w = rw.ranking_widget("a prompt", ANSWERS, SCORES, initial="A4 > A3 > A1 = A2")
    b = bundle(w)
    assert VIEW in b and "cw-place" in b["text/html"] and '"tables":' in b["text/html"]
    assert "Live mode (edit and add answers)" in b["text/html"] and "pairsHtml" in w._esm
    assert w.places == [3, 3, 2, 1]
    w.places = [1, 2, 4, 4]  # gaps are made dense
    assert w.places == [1, 2, 3, 3]
    tiers = [["A1"], ["A2"], ["A3", "A4"]]
    assert w.state["tiers"] == tiers
    expected = rw.ranking_summary(SCORES, tiers)
    assert w.state["rows"] == expected["rows"] and w.state["mean_loss"] == pytest.approx(expected["mean_loss"])
    w.scores = [2.0, 1.0, 0.0, -1.0]
    assert w.state["agreement"] == 1.0


def test_ranking_edits_and_bad_answers():
    w = rw.ranking_widget("a prompt", ANSWERS, SCORES)
    w.set_state({"answers": [*w.answers, ""], "places": [*w.places, 5], "scores": [*w.scores, 0.0]})
    assert w.state["error"] == "answer A5 is empty: type its text or remove it"
    w.answers = [*w.answers[:4], "a fifth answer"]
    assert w.state["error"] == "" and w.state["ids"] == ["A1", "A2", "A3", "A4", "A5"]
    assert sum(len(t) for t in w.state["tiers"]) == 5 and len(w.state["rows"]) == 10
    w.set_state({"answers": ["only one"], "places": [1], "scores": [0.0]})
    assert w.state["error"].startswith("rank at least two answers")
    with pytest.raises(ValueError, match="scores is missing"):
        rw.ranking_widget("p", ANSWERS)
    with pytest.raises(ValueError, match="reward_tokenizer is missing"):
        rw.ranking_widget("p", ANSWERS, SCORES, reward_model=object())


def test_ranking_rescores_edited_answers_with_the_reward_model(tiny_lm):
    model, tok = tiny_lm
    rm = reward.reward_model_from_causal_lm(model, tok)
    w = rw.ranking_widget("a prompt", ANSWERS, reward_model=rm, reward_tokenizer=tok)
    assert w.scored and w.scores == pytest.approx(reward.score(rm, tok, ["a prompt"] * 4, list(ANSWERS.values())).tolist(),
                                                  abs=1e-4)
    w.answers = ["a brand new answer", *w.answers[1:]]
    assert w.scores[0] == pytest.approx(float(reward.score(rm, tok, ["a prompt"], ["a brand new answer"])[0]), abs=1e-4)
    assert w.state["error"] == "" and {r["r_better"] for r in w.state["rows"]} <= set(w.scores)


# --------------------------------------------------------------------------- bandit
def test_bandit_bundle_and_new_episodes_match_bandit_widget_data():
    data = bw.bandit_widget_data(epsilons=(0.0, 0.1), steps=60, runs=8, snapshot_every=20, points=10)
    w = bw.bandit_widget(data)
    b = bundle(w)
    assert VIEW in b and '"epsilons":[0.0,0.1]' in b["text/html"] and "drawBandit" in w._esm
    assert w.state["data"]["curves"] == data["curves"] and w.state["data"]["selected"] == 0.1
    w.set_state({"epsilon": 0.5, "seed": 3})
    fresh = bw.bandit_widget_data(epsilons=(0.0, 0.1, 0.5), steps=60, runs=8, seed=3, snapshot_every=20, points=10)
    assert w.state["data"]["epsilons"] == [0.0, 0.1, 0.5] and w.state["data"]["curves"] == fresh["curves"]
    assert w.state["data"]["means"] == fresh["means"]
    w.epsilon = 1.5
    assert w.state["error"].startswith("epsilon must be in [0, 1]")
    with pytest.raises(ValueError, match="epsilon must be"):
        bw.bandit_widget(data, epsilon=2)
    with pytest.raises(ValueError, match="data lacks"):
        bw.bandit_widget({"epsilons": [0.1]})


# --------------------------------------------------------------------------- never a blank box
def test_a_live_widget_that_cannot_be_built_falls_back_to_the_static_html():
    def broken():
        raise RuntimeError("no comm")

    with pytest.warns(UserWarning, match="live widget unavailable"):
        w = live_or_static(broken, lambda note: f"<div>static {note}</div>", "anything")
    assert isinstance(w, StaticWidget) and VIEW not in bundle(w)
    assert bundle(w)["text/html"] == "<div>static Live mode is off here: RuntimeError: no comm</div>"
