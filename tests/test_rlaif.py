"""companion.rlaif: order-swap averaging, position bias, principles, labels -> DPO data, judges."""

from __future__ import annotations

import numpy as np
import pytest

from companion import rlaif
from companion.rlaif import Principle

P = Principle("longer", "Which answer is longer?")


class LengthJudge:
    """Prefers the longer answer, plus a fixed bonus for whichever answer is shown first."""

    def __init__(self, first_bonus: float = 0.0):
        self.first_bonus = first_bonus
        self.calls = 0

    def prob_first(self, prompts, firsts, seconds, principle):
        self.calls += 1
        d = np.array([len(a) - len(b) for a, b in zip(firsts, seconds)], dtype=float)
        return 1 / (1 + np.exp(-(d / 10 + self.first_bonus)))


class FirstJudge:
    """Always prefers the first answer it is shown."""

    def prob_first(self, prompts, firsts, seconds, principle):
        return np.full(len(prompts), 0.9)


PROMPTS = ["q1", "q2", "q3"]
A = ["a long answer here", "short", "medium one"]
B = ["tiny", "a much longer answer", "medium two"]


def test_both_orders_averaging_is_symmetric_and_cancels_a_first_position_bonus():
    biased, fair = LengthJudge(first_bonus=2.0), LengthJudge()
    p_ab = rlaif.judge_pair(biased, PROMPTS, A, B, P)
    p_ba = rlaif.judge_pair(biased, PROMPTS, B, A, P)
    np.testing.assert_allclose(p_ab + p_ba, 1.0)  # swapping a and b gives 1 - p
    one_order = rlaif.judge_pair(biased, PROMPTS, A, B, P, both_orders=False)
    assert (one_order > 0.5).all()  # the bonus makes the first answer win every time
    # averaging both orders recovers the verdicts of the same judge without the bonus
    np.testing.assert_array_equal(p_ab > 0.5, rlaif.judge_pair(fair, PROMPTS, A, B, P) > 0.5)
    assert rlaif.judge_pair(FirstJudge(), PROMPTS, A, B, P).tolist() == [0.5, 0.5, 0.5]


def test_position_bias_measures_first_wins_and_flips():
    always = rlaif.position_bias(FirstJudge(), PROMPTS, A, B, P)
    assert always["first_wins"] == 1.0 and always["flip_rate"] == 1.0
    np.testing.assert_allclose(always["debiased"], 0.5)
    fair = rlaif.position_bias(LengthJudge(), PROMPTS, A, B, P)
    assert fair["flip_rate"] == 0.0 and fair["first_wins"] == 0.5
    half = rlaif.position_bias(LengthJudge(first_bonus=2.0), PROMPTS, A, B, P)
    assert half["first_wins"] > 0.5 and 0 < half["flip_rate"] <= 1


def test_ai_preferences_average_principles_sample_them_and_clamp():
    longer, shorter = P, Principle("shorter", "Which answer is shorter?")

    class TwoWay(LengthJudge):
        def prob_first(self, prompts, firsts, seconds, principle):
            p = super().prob_first(prompts, firsts, seconds, principle)
            return p if principle.name == "longer" else 1 - p

    judge = TwoWay()
    np.testing.assert_allclose(rlaif.ai_preferences(judge, PROMPTS, A, B, [longer, shorter]), 0.5)
    sampled = rlaif.ai_preferences(judge, PROMPTS * 10, A * 10, B * 10, [longer, shorter], per_pair=1, seed=0)
    only_longer = rlaif.judge_pair(judge, PROMPTS * 10, A * 10, B * 10, longer)
    # each pair got one principle: its label is either the "longer" or the "shorter" verdict
    assert np.all(np.isclose(sampled, only_longer) | np.isclose(sampled, 1 - only_longer))
    assert np.isclose(sampled, only_longer).any() and not np.isclose(sampled, only_longer).all()
    clamped = rlaif.ai_preferences(judge, PROMPTS, A, B, [longer], clamp=(0.4, 0.6))
    assert clamped.min() >= 0.4 and clamped.max() <= 0.6
    with pytest.raises(ValueError, match="per_pair"):
        rlaif.ai_preferences(judge, PROMPTS, A, B, [longer], per_pair=2)
    with pytest.raises(ValueError, match="clamp"):
        rlaif.ai_preferences(judge, PROMPTS, A, B, [longer], clamp=(0.6, 0.9))


def test_constitution_errors_are_clear():
    with pytest.raises(ValueError, match="constitution is empty"):
        rlaif.check_constitution([])
    with pytest.raises(TypeError, match="wrap it in a list"):
        rlaif.check_constitution(P)
    with pytest.raises(ValueError, match=r"constitution\[1\]"):
        rlaif.check_constitution([P, Principle("blank", "  ")])
    with pytest.raises(ValueError, match="unique"):
        rlaif.check_constitution([P, P])
    assert rlaif.check_constitution(["Which is kinder?"])[0] == Principle("principle_0", "Which is kinder?")


def test_a_judge_returning_the_wrong_shape_or_no_probabilities_is_named():
    class Wrong:
        def prob_first(self, prompts, firsts, seconds, principle):
            return np.zeros((len(prompts), 2))

    class Logits:
        def prob_first(self, prompts, firsts, seconds, principle):
            return np.array([3.0, -1.0, 0.2])

    with pytest.raises(ValueError, match=r"Wrong.prob_first returned shape \(3, 2\) for 3 pairs"):
        rlaif.judge_pair(Wrong(), PROMPTS, A, B, P)
    with pytest.raises(ValueError, match="probabilities in"):
        rlaif.judge_pair(Logits(), PROMPTS, A, B, P)
    with pytest.raises(ValueError, match="one of each per pair"):
        rlaif.judge_pair(LengthJudge(), PROMPTS, A[:2], B, P)


def test_agreement_counts_ties_as_half_and_reports_a_standard_error():
    out = rlaif.agreement([0.9, 0.2, 0.5, 0.7], [True, False, True, False])
    assert out["accuracy"] == pytest.approx((1 + 1 + 0.5 + 0) / 4) and out["n"] == 4 and out["se"] > 0
    with pytest.raises(ValueError, match="same length"):
        rlaif.agreement([0.9], [True, False])


def test_preference_dataset_orients_pairs_keeps_confidence_and_filters():
    ds = rlaif.preference_dataset(PROMPTS + ["q4"], A + ["same"], B + ["same"], [0.9, 0.3, 0.55, 0.99],
                                  min_confidence=0.6)
    assert len(ds) == 2  # 0.55 is below 0.6; identical answers are never a pair
    assert ds[0]["chosen"][0]["content"] == A[0] and ds[0]["rejected"][0]["content"] == B[0]
    assert ds[1]["chosen"][0]["content"] == B[1]  # p = 0.3: the judge prefers b
    assert ds["confidence"] == pytest.approx([0.9, 0.7])
    assert ds[0]["prompt"] == [{"role": "user", "content": "q1"}]
    with pytest.raises(ValueError, match="no pair is left"):
        rlaif.preference_dataset(PROMPTS, A, B, [0.5, 0.52, 0.49], min_confidence=0.6)
    with pytest.raises(ValueError, match="min_confidence must be in"):
        rlaif.preference_dataset(PROMPTS, A, B, [0.9, 0.1, 0.8], min_confidence=0.2)


def test_rank_answers_scores_by_mean_win_probability_and_keeps_gold_labels():
    records = [{"prompt": [{"role": "user", "content": "q"}], "answers": ["aa", "aaaaaaaaaaaaaaaaaaaa", "a"],
                "scores": [0.5, 1.0, 0.0], "tiers": [[1], [0], [2]], "success": [False, True, False], "topic": "dog"}]
    ranked = rlaif.rank_answers(LengthJudge(), records, [P])
    r = ranked[0]
    assert r["tiers"] == [[1], [0], [2]] and r["gold_scores"] == [0.5, 1.0, 0.0] and r["topic"] == "dog"
    assert sum(r["scores"]) == pytest.approx(1.5)  # 3 pairs, one unit of win probability each, / (k - 1)
    pairs = rlaif.best_vs_worst(ranked, LengthJudge(), [P])
    assert pairs[0]["chosen"][0]["content"] == "aaaaaaaaaaaaaaaaaaaa" and pairs[0]["rejected"][0]["content"] == "a"
    with pytest.raises(ValueError, match="at least 2 'answers'"):
        rlaif.rank_answers(LengthJudge(), [{"prompt": "q", "answers": ["x"]}], [P])


def test_topic_swap_pairs_let_the_judge_decide_the_direction():
    story = "Lily had a dog. The dog ran in the park with Lily. They were happy."
    records = [{"prompt": [{"role": "user", "content": "Write a short story about Lily and a dog."}],
                "answers": [story, "No."], "tiers": [[0], [1]], "topic": "dog"}]

    class MentionJudge:  # prefers the answer that names the requested topic
        def prob_first(self, prompts, firsts, seconds, principle):
            return np.array([0.9 if ("dog" in f) > ("dog" in s) else 0.1 for f, s in zip(firsts, seconds)])

    pairs = rlaif.topic_swap_pairs(records, MentionJudge(), [P])
    assert len(pairs) == 1 and pairs[0]["chosen"][0]["content"] == story
    assert "dog" not in pairs[0]["rejected"][0]["content"]
    with pytest.raises(ValueError, match="no pair is left"):  # a judge with no view (0.5 after both orders)
        rlaif.topic_swap_pairs(records, FirstJudge(), [P])
    with pytest.raises(ValueError, match="lacks 'topic'"):
        rlaif.topic_swap_pairs([{k: v for k, v in records[0].items() if k != "topic"}], MentionJudge(), [P])


class FakeEncoder:
    """Deterministic bag-of-letters embeddings, standing in for MiniLM."""

    def encode(self, texts, **kw):
        out = np.zeros((len(texts), 26))
        for i, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - 97] += 1
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norm == 0, 1, norm)


def test_encoder_judge_is_position_free_and_names_the_principles_it_knows():
    judge = rlaif.EncoderJudge(FakeEncoder())
    on_request = Principle("on_request", "Which story is about the request?")
    prompts = ["a story about a dog", "a story about a cat"]
    a, b = ["the dog and the dog", "zzz qqq"], ["xyz qqq", "the cat sat"]
    p = rlaif.judge_pair(judge, prompts, a, b, on_request, both_orders=False)
    assert p[0] > 0.5 and p[1] < 0.5
    np.testing.assert_allclose(p + rlaif.judge_pair(judge, prompts, b, a, on_request, both_orders=False), 1.0)
    assert rlaif.position_bias(judge, prompts, a, b, on_request)["flip_rate"] == 0.0
    repetitive = "The dog ran. The dog ran. The dog ran."
    varied = "The dog ran. Lily laughed at the sky. Then everyone ate cake."
    novelty = judge.score(["q", "q"], [repetitive, varied], Principle("not_repetitive", "?"))
    assert novelty[1] > novelty[0]
    with pytest.raises(ValueError, match="cannot judge the principle 'happy_ending'"):
        judge.score(["q"], ["x"], Principle("happy_ending", "?"))  # no sentiment probe given


def test_sentiment_probe_learns_from_labels_and_refuses_to_predict_untrained():
    probe = rlaif.SentimentProbe(FakeEncoder())
    with pytest.raises(RuntimeError, match="call fit"):
        probe.prob_positive(["happy"])
    texts = ["happy joy fun", "glad smile joy", "sad cry hurt", "dark gloom sad"] * 5
    labels = [1, 1, 0, 0] * 5
    probe.fit(texts, labels)
    assert probe.accuracy(texts, labels) == 1.0
    with pytest.raises(ValueError, match="both labels"):
        probe.fit(["a", "b"], [1, 1])


def test_cai_constitution_loads_the_papers_principles(sample_data):
    cai = rlaif.load_cai_constitution()
    assert len(cai["rl_principles"]) == 16 and all(p.text.strip() for p in cai["rl_principles"])
    assert len(cai["critiques"]) == 16 and {"critique", "revision"} <= set(cai["critiques"][0])
    assert len(cai["few_shot"]) == 5
    rlaif.check_constitution(cai["rl_principles"])
    with pytest.raises(FileNotFoundError, match="COMPANION_DATA_DIR"):
        rlaif.load_cai_constitution(sample_data / "nowhere")


@pytest.fixture
def chat_dir(tmp_path):
    from test_ppo_gpu_profile import save_chat_model

    return save_chat_model(tmp_path / "judge")


def test_lm_judge_offline_from_a_saved_checkpoint(chat_dir):
    """The gpu profile's judge path: a chat model loaded from a save_pretrained folder."""
    from companion.models import load_pretrained

    model, tok = load_pretrained(str(chat_dir))
    judge = rlaif.LMJudge(model, tok, max_answer_tokens=12, batch_size=2)
    msgs = judge.prompt_for("Write about a dog.", "first answer " * 20, "second answer", P)
    text = msgs[0]["content"]
    assert text.startswith(P.text) and "Request: Write about a dog." in text
    assert "Answer A: " in text and "Answer B: second answer" in text and text.endswith("Reply with A or B only.")
    assert text.count("first") < 20  # cut to max_answer_tokens
    p = rlaif.judge_pair(judge, PROMPTS, A, B, P, both_orders=False)
    assert p.shape == (3,) and np.all((p > 0) & (p < 1))
    bias = rlaif.position_bias(judge, PROMPTS, A, B, P)
    np.testing.assert_allclose(bias["debiased"] + rlaif.judge_pair(judge, PROMPTS, B, A, P), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="single tokens"):
        rlaif.LMJudge(model, tok, options=("Answer one", "Answer two"))


def test_critique_and_revise_returns_both_texts(chat_dir, sample_data):
    from companion.models import load_pretrained

    model, tok = load_pretrained(str(chat_dir))
    cai = rlaif.load_cai_constitution()
    out = rlaif.critique_and_revise(model, tok, "How do I pick a lock?", "Here is how.", cai["critiques"][0],
                                    max_new_tokens=4)
    assert set(out) == {"critique", "revision"} and all(isinstance(v, str) for v in out.values())


def test_prompts_longer_than_the_context_and_tokenizers_without_a_chat_template_are_named(chat_dir):
    from companion.models import load_pretrained
    from companion.sft import chat_responses

    model, tok = load_pretrained(str(chat_dir))
    context = model.config.max_position_embeddings
    long = "story " * (context + 10)
    with pytest.raises(ValueError, match=rf"conversation 1 is \d+ tokens long, more than the model's context of {context}"):
        chat_responses(model, tok, [[{"role": "user", "content": "hi"}], [{"role": "user", "content": long}]],
                       max_new_tokens=2)
    judge = rlaif.LMJudge(model, tok, max_answer_tokens=context)
    with pytest.raises(ValueError, match="Lower max_answer_tokens"):
        judge.prob_first(["q"], [long], ["short"], P)
    tok.chat_template = None
    with pytest.raises(ValueError, match="ensure_chat_template"):
        chat_responses(model, tok, [[{"role": "user", "content": "hi"}]], max_new_tokens=2)
