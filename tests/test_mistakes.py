"""Plausible reader mistakes, one case each: every one gets an error naming the argument and the fix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from companion import (
    artifacts,
    critic_free,
    dpo,
    evaluation,
    export,
    overoptimization,
    ppo,
    profiles,
    reward,
    rlaif,
    runner,
    sampling,
    tinyworld,
    validation,
)
from companion.rl import bandits, lm
from companion.tokenizer import train_bpe_tokenizer

LOGITS = torch.tensor([1.0, 2.0, 3.0])
PRINCIPLE = rlaif.Principle("kind", "Which story is kinder?")
RANKING = {"prompt": [{"role": "user", "content": "A story."}], "answers": ["Good.", "Bad."], "tiers": [[0], [1]],
           "sources": ["sft", "sft"]}


class _HalfJudge:
    def prob_first(self, prompts, firsts, seconds, principle):
        return np.full(len(prompts), 0.5)


def _numpy_ppo_config():
    cfg = ppo.PPOConfig(steps=np.int64(3), batch_size=np.int64(8), learning_rate=np.float32(1e-4))
    return type(cfg.steps) is int and cfg.batch_size == 8 and isinstance(cfg.learning_rate, float)


def _reinforce(small_tokenizer, prompts, reward_fn):
    from companion.models import build_causal_lm

    torch.manual_seed(0)
    model = build_causal_lm(small_tokenizer, n_layer=1, n_head=2, n_embd=16, intermediate_size=32, context_length=64)
    lm.reinforce_lm(model, small_tokenizer, prompts, reward_fn, lm.LMReinforceConfig(steps=1, group_size=2,
                                                                                      max_new_tokens=3),
                    progress=False)


CASES = [
    # (id, callable, exception, message regex)
    ("keyword words as one string", lambda: lm.keyword_reward("happy"), TypeError, r"words must be a list.*\['happy'\]"),
    ("keyword words with a number", lambda: lm.keyword_reward(["happy", 3]), TypeError, r"words must hold strings only; item 1"),
    ("keyword per_hit NaN", lambda: lm.keyword_reward(["happy"], per_hit=math.nan), ValueError, r"per_hit must be a finite"),
    ("bpe on one string", lambda: train_bpe_tokenizer("Once upon a time"), TypeError, r"texts must be a list of strings.*\[text\]"),
    ("bpe vocab as float", lambda: train_bpe_tokenizer(["a b"], vocab_size=4096.0), TypeError, r"vocab_size must be an integer.*did you mean 4096"),
    ("reinforce steps 0", lambda: lm.LMReinforceConfig(steps=0), ValueError, r"steps must be >= 1, got 0"),
    ("reinforce group of 1", lambda: lm.LMReinforceConfig(group_size=1), ValueError, r"group_size .*must be >= 2"),
    ("reinforce numpy steps", lambda: lm.LMReinforceConfig(steps=np.int64(3)).steps == 3 or 1 / 0, None, None),
    ("reinforce lr NaN", lambda: lm.LMReinforceConfig(learning_rate=math.nan), ValueError, r"learning_rate must be a finite"),
    ("reinforce temperature 0", lambda: lm.LMReinforceConfig(temperature=0), ValueError, r"temperature must be > 0"),
    ("reinforce kl_coef NaN", lambda: lm.LMReinforceConfig(kl_coef=float("nan")), ValueError, r"kl_coef must be a finite"),
    ("reinforce kl_coef negative", lambda: lm.LMReinforceConfig(kl_coef=-0.1), ValueError, r"kl_coef must be >= 0"),
    ("reinforce steps as string", lambda: lm.LMReinforceConfig(steps="10"), TypeError, r"steps must be an integer, got '10'"),
    ("temperature NaN", lambda: sampling.next_token_probs(LOGITS, temperature=math.nan), ValueError, r"temperature must be a number >= 0"),
    ("temperature inf", lambda: sampling.next_token_probs(LOGITS, temperature=math.inf), ValueError, r"temperature must be a number >= 0"),
    ("temperature as string", lambda: sampling.next_token_probs(LOGITS, temperature="0.7"), ValueError, r"temperature must be a number"),
    ("temperature numpy float", lambda: sampling.next_token_probs(LOGITS, temperature=np.float32(0.7)).sum() > 0 or 1 / 0, None, None),
    ("dpo beta NaN", lambda: dpo.dpo_loss(*[torch.zeros(1)] * 4, beta=math.nan), ValueError, r"beta .*must be a finite"),
    ("dpo beta 0", lambda: dpo.dpo_loss(*[torch.zeros(1)] * 4, beta=0), ValueError, r"beta .*must be > 0"),
    ("dpo pairs as a list", lambda: dpo.check_preference_pairs([{"prompt": "p"}]), TypeError, r"datasets.Dataset"),
    ("dpo pairs missing rejected", lambda: dpo.check_preference_pairs(Dataset.from_list([{"prompt": "p", "chosen": "a"}])),
     ValueError, r"missing \['rejected'\]"),
    ("kto all good", lambda: dpo.kto_dataset([{"prompt": [], "answers": ["a"], "success": [True]}]), ValueError,
     r"both desirable and undesirable"),
    ("kto weights ratio", lambda: dpo.kto_weights([True, False], ratio=0.5), ValueError, r"ratio must be in \[1, 4/3\]"),
    ("on-policy k=1", lambda: dpo.on_policy_pairs(None, None, [], k=1), ValueError, r"k must be >= 2"),
    ("scores: a scalar", lambda: validation.scores("reward_fn", 1.0, 3), TypeError, r"returned a single number.*a list of 3"),
    ("scores: a 0-d tensor", lambda: validation.scores("reward_fn", torch.tensor(2.0), 3), TypeError, r"single number"),
    ("scores: one short", lambda: validation.scores("reward_fn", [1.0, 2.0], 3), ValueError, r"returned 2 scores for 3 texts"),
    ("scores: NaN", lambda: validation.scores("reward_fn", [1.0, math.nan], 2), ValueError, r"non-finite score \(nan\) for text 1"),
    ("scores: strings", lambda: validation.scores("reward_fn", ["good", "bad"], 2), TypeError, r"must return numbers"),
    ("scores: a string", lambda: validation.scores("reward_fn", "12", 2), TypeError, r"must return a list of 2 numbers"),
    ("prompts: one string", lambda: validation.prompt_list("prompts", "Once upon"), TypeError, r"wrap it in a list"),
    ("prompts: one conversation", lambda: validation.prompt_list("prompts", [{"role": "user", "content": "hi"}]),
     TypeError, r"got one conversation"),
    ("prompts: empty", lambda: validation.prompt_list("prompts", []), ValueError, r"prompts is empty"),
    ("prompts: message without role", lambda: validation.prompt_list("prompts", [[{"content": "hi"}]]), ValueError,
     r"prompts\[0\]\[0\] must be a dict with 'role' and 'content'"),
    ("prompts: content not a string", lambda: validation.prompt_list("prompts", [[{"role": "user", "content": 3}]]),
     TypeError, r"\['content'\] must be a string"),
    ("integer: bool", lambda: validation.integer("n", True), TypeError, r"n must be an integer, got True"),
    ("number: bool", lambda: validation.number("x", False), TypeError, r"x must be a number"),
    ("probability above 1", lambda: validation.probability("p", 1.5), ValueError, r"p must be <= 1.0, got 1.5"),
    ("paired results of different lengths", lambda: evaluation.paired_difference([1, 0], [1]), ValueError,
     r"same length \(one result per prompt\)"),
    ("compare_policies unknown reference", lambda: evaluation.compare_policies({}, [], reference="sft"), ValueError,
     r"reference='sft' is not one of the models"),
    ("unknown topic", lambda: tinyworld.TaskSpec("Lily", "spaceship"), ValueError, r"unknown topic 'spaceship'"),
    ("lower-case name", lambda: tinyworld.TaskSpec("lily", "ball"), ValueError, r"capitalized word such as 'Lily'"),
    ("template out of range", lambda: tinyworld.TaskSpec("Lily", "ball", template=99), ValueError, r"template must be in"),
    ("judge: responses missing", lambda: tinyworld.judge_many([tinyworld.TaskSpec("Lily", "ball")], []), ValueError,
     r"1 specs but 0 responses"),
    ("too many instructions", lambda: tinyworld.make_instructions(0), ValueError, r"n must be between 1 and"),
    ("rankings: samples missing", lambda: reward.judge_rankings([tinyworld.TaskSpec("Lily", "ball")], []), ValueError,
     r"1 specs but 0 lists of samples"),
    ("k answers 0", lambda: reward.sample_answers(None, None, [[{"role": "user", "content": "x"}]], 0), ValueError,
     r"k \(answers per prompt\) must be >= 1"),
    ("ranking with a hole", lambda: reward.parse_ranking("A > > B"), ValueError, r"empty answer id"),
    ("ranking repeats an answer", lambda: reward.check_ranking([["A"], ["A"]]), ValueError, r"more than once"),
    ("BT shapes differ", lambda: reward.bradley_terry_loss(torch.zeros(2), torch.zeros(3)), ValueError, r"same shape"),
    ("ranks one short", lambda: reward.ranks_to_tiers(["a", "b"], [1]), ValueError, r"one rank per answer"),
    ("num_pairs negative", lambda: reward.num_pairs(-1), ValueError, r"k \(answers\) must be >= 0"),
    ("top_k 0", lambda: sampling.next_token_probs(LOGITS, top_k=0), ValueError, r"top_k must be a positive int"),
    ("top_p above 1", lambda: sampling.next_token_probs(LOGITS, top_p=1.5), ValueError, r"top_p must be in \(0, 1\]"),
    ("top_p NaN", lambda: sampling.next_token_probs(LOGITS, top_p=math.nan), ValueError, r"top_p must be in"),
    ("artifact name with a path", lambda: artifacts.artifact_dir("../etc"), ValueError, r"artifact name '../etc'"),
    ("unknown profile", lambda: profiles.profile("huge"), ValueError, r"Unknown profile 'huge'"),
    ("GRPO batch not whole groups", lambda: critic_free.check_generation_batch(
        {"num_generations": 3, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}),
     ValueError, r"not divisible by num_generations=3"),
    ("GRPO group of 1", lambda: critic_free.check_generation_batch(
        {"num_generations": 1, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}),
     ValueError, r"num_generations must be an integer >= 2"),
    ("PPO minibatches", lambda: ppo.PPOConfig(batch_size=10, num_mini_batches=3), ValueError, r"not divisible"),
    ("PPO kl estimator", lambda: ppo.PPOConfig(kl_estimator="k2"), ValueError, r"kl_estimator must be one of"),
    ("PPO temperature 0", lambda: ppo.PPOConfig(temperature=0), ValueError, r"temperature must be > 0"),
    ("PPO kl_coef NaN", lambda: ppo.PPOConfig(kl_coef=math.nan), ValueError, r"kl_coef must be a finite number, got nan"),
    ("PPO batch_size as float", lambda: ppo.PPOConfig(batch_size=32.0), TypeError,
     r"batch_size must be an integer, got 32.0 .*did you mean 32"),
    ("PPO numpy ints and floats", _numpy_ppo_config, None, None),
    ("PPO kl_target 0", lambda: ppo.PPOConfig(kl_target=0), ValueError, r"kl_target .*None for a fixed kl_coef.* must be > 0"),
    ("PPO missing_eos_penalty negative", lambda: ppo.PPOConfig(missing_eos_penalty=-1.0), ValueError,
     r"missing_eos_penalty .*subtracted.* must be >= 0"),
    ("PPO flag as a string", lambda: ppo.PPOConfig(normalize_scores="false"), TypeError,
     r"normalize_scores must be True or False, got 'false'.*did you mean False"),
    ("PPO adaptive KL target NaN", lambda: ppo.AdaptiveKLController(0.2, math.nan, 10_000), ValueError,
     r"kl_target and kl_horizon must be finite numbers > 0, got nan"),
    ("PPOTrainer config as a dict", lambda: ppo.PPOTrainer({"steps": 1}, None, None, [{"prompt": "x"}]), TypeError,
     r"config must be a PPOConfig, got dict.*tiny_ppo_config"),
    ("PPOTrainer prompts as strings", lambda: ppo.PPOTrainer(ppo.PPOConfig(batch_size=2), None, None, ["Once upon"]),
     TypeError, r"prompts\[0\] is the string 'Once upon'.*\[\{'prompt': p\} for p in prompts\]"),
    ("IPO beta 0", lambda: dpo.ipo_loss(*[torch.zeros(1)] * 4, 0.0, torch.ones(1), torch.ones(1)), ValueError,
     r"beta \(IPO's target margin.* must be > 0"),
    ("DPO sources as one string", lambda: dpo.preference_pairs([RANKING], sources="sft"), TypeError,
     r"sources must be a list of strings.*\['sft'\]"),
    ("DPO rankings as one dict", lambda: dpo.preference_pairs(RANKING), TypeError,
     r"rankings must be a list of dicts, got a single dict.*\[ranking\]"),
    ("DPO unknown loss type", lambda: dpo.dpo_config("unused", loss_type=["dpo"]), ValueError,
     r"loss_type='dpo' is not one of \['sigmoid', 'hinge', 'ipo'"),
    ("on-policy k as a string", lambda: dpo.on_policy_pairs(None, None, [], k="4"), TypeError,
     r"k must be an integer, got '4'"),
    ("judge principle as a string", lambda: rlaif.judge_pair(_HalfJudge(), ["p"], ["a"], ["b"], "Which is kinder?"),
     TypeError, r"principle must be an rlaif.Principle, got str.*rlaif.Principle\('name'"),
    ("judge prompts as one string", lambda: rlaif.judge_pair(_HalfJudge(), "abc", "def", "ghi", PRINCIPLE), TypeError,
     r"prompts must be a list \(one per pair\), got the single string 'abc'"),
    ("AI label NaN", lambda: rlaif.preference_dataset(["p"], ["a"], ["b"], [math.nan]), ValueError,
     r"probs must be probabilities in \[0, 1\]; entry 0 is nan"),
    ("AI labels clamp as a number", lambda: rlaif.ai_preferences(_HalfJudge(), ["p"], ["a"], ["b"], [PRINCIPLE],
                                                                  clamp=0.5),
     TypeError, r"clamp must be a pair \(lo, hi\)"),
    ("CAI critique as a string", lambda: rlaif.critique_and_revise(None, None, "p", "a", "Be kind."), TypeError,
     r"critique must be a dict with a 'critique' and a 'revision'.*load_cai_constitution"),
    ("GRPO temperature 0", lambda: critic_free.grpo_config("unused", temperature=0), ValueError,
     r"temperature must be > 0 \(GRPO and RLOO sample"),
    ("GRPO loss type in capitals", lambda: critic_free.grpo_config("unused", loss_type="GRPO"), ValueError,
     r"loss_type='GRPO' is not one of .*did you mean 'grpo'"),
    ("GRPO batch as a string", lambda: critic_free.check_generation_batch(
        {"num_generations": 4, "per_device_train_batch_size": "8", "gradient_accumulation_steps": 1}),
     TypeError, r"per_device_train_batch_size must be an integer, got '8'"),
    ("RLOO trained with a GRPO config", lambda: critic_free.train_rloo(None, None, None, None,
                                                                       args=critic_free.grpo_config("unused")),
     TypeError, r"train_rloo needs args=critic_free.rloo_config\(...\) \(a RLOOConfig\); got a GRPOConfig"),
    ("Gao fit with a NaN gain", lambda: overoptimization.fit_gao([0, 1, 2], [0, math.nan, 1], "bon"), ValueError,
     r"d and gain must be finite; drop the NaN/inf points first \(0 in d, 1 in gain\)"),
    ("ONNX stop id not in a list", lambda: export.greedy_ids("model.onnx", [1], 5, 2), TypeError,
     r"stop_ids must be a list of token ids, got 2; wrap it in a list: \[2\]"),
    ("web export prompts as one string", lambda: export.export_web("sft", "unused", prompts="Hi!"), TypeError,
     r"prompts must be a list of prompts, got the single string 'Hi!'"),
    ("pipeline numpy seed", lambda: runner.PipelineConfig(seed=np.int64(1)).seed == 1, None, None),
    ("pipeline sizes as CLI strings", lambda: runner.PipelineConfig(sizes=["base.max_steps=600"]), TypeError,
     r"sizes must be a dict \{stage: \{setting: value\}\}.*runner.parse_sizes"),
    ("paired result NaN", lambda: evaluation.paired_difference([1.0, math.nan], [0.0, 0.0]), ValueError,
     r"a and b must be finite results, got 1 NaN/inf in a"),
    ("logprobs of one string", lambda: evaluation.sequence_logprobs(None, None, "Hello", "World"), TypeError,
     r"prompts must be a list of prompts, got the single string 'Hello'"),
    ("compare_policies models as a list", lambda: evaluation.compare_policies([("SFT", (None, None))], []), TypeError,
     r"models must be a dict name -> \(model, tokenizer\), got list"),
    ("distinct_n of one string", lambda: lm.distinct_n("a b a b"), TypeError,
     r"texts must be a list of strings, got the single string 'a b a b'"),
    ("UCB c NaN", lambda: bandits.UCB(k=5, c=math.nan), ValueError, r"c must be a finite number, got nan"),
]


@pytest.mark.parametrize("call,exc,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mistake_gets_a_clear_error(call, exc, message):
    if exc is None:  # a value that used to be refused and is valid
        assert call()
        return
    with pytest.raises(exc, match=message):
        call()


def test_reinforce_with_a_scalar_reward_says_so(small_tokenizer):
    with pytest.raises(TypeError, match=r"reward_fn returned a single number .*a list of 2"):
        _reinforce(small_tokenizer, ["Once upon"], lambda texts: 1.0)


def test_reinforce_with_one_score_short_says_so(small_tokenizer):
    with pytest.raises(ValueError, match=r"reward_fn returned 1 scores for 2 texts"):
        _reinforce(small_tokenizer, ["Once upon"], lambda texts: [1.0])


def test_reinforce_with_a_string_for_prompts_says_so(small_tokenizer):
    with pytest.raises(TypeError, match=r"prompts must be a list of prompts, got the single string 'Once upon'"):
        _reinforce(small_tokenizer, "Once upon", lambda texts: [1.0] * len(texts))


def test_unknown_dataset_names_the_choices():
    from companion.data import load_dataset

    with pytest.raises(ValueError, match=r"Unknown dataset 'nosuchdata'. Available: \['alpaca'"):
        load_dataset("nosuchdata")


def test_a_split_only_on_the_hub_names_the_local_splits_when_offline(monkeypatch, sample_data):
    from companion.data import load_dataset

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"no split 'nosplit' .*local splits: \['train', 'validation'\].*offline"):
        load_dataset("tinystories", split="nosplit")


def test_a_mistyped_data_folder_is_an_error_not_a_silent_default(monkeypatch, tmp_path):
    from companion.data import data_dir

    monkeypatch.setenv("COMPANION_DATA_DIR", str(tmp_path / "shraed" / "data"))
    with pytest.raises(FileNotFoundError, match=r"COMPANION_DATA_DIR=.*shraed.* is not a folder"):
        data_dir()


def test_oasst_rankings_fit_rankings_to_preferences(sample_data):
    from companion.data import load_dataset

    rows = list(load_dataset("oasst_rankings", split="train", limit=5))
    pairs = reward.rankings_to_preferences(rows)
    assert len(pairs) >= len(rows)  # at least one strict pair per prompt (2+ ranked replies)
    first = rows[0]
    best = first["answers"][int(np.argmin(first["ranks"]))]
    assert pairs[0]["chosen"] == best
    with pytest.raises(ValueError, match=r"neither 'tiers' nor 'ranks'.*reward.ranks_to_tiers"):
        reward.rankings_to_preferences([{"prompt": "p", "answers": ["a", "b"]}])


def _tiny_lm(tokenizer, context_length: int = 64):
    from companion.models import build_causal_lm

    torch.manual_seed(0)
    return build_causal_lm(tokenizer, n_layer=1, n_head=2, n_embd=16, intermediate_size=32,
                           context_length=context_length)


def test_a_prompt_longer_than_the_context_says_so(small_tokenizer):
    model = _tiny_lm(small_tokenizer, context_length=16)
    long_prompt = "Once upon a time, there was a little dog named Max. " * 4
    for call in (lambda: sampling.generate(model, small_tokenizer, long_prompt, max_new_tokens=3),
                 lambda: sampling.next_token_logits(model, small_tokenizer, long_prompt)):
        with pytest.raises(ValueError, match=r"prompt is \d+ tokens long, more than the model's context of 16"):
            call()


def test_token_ids_the_model_has_no_embedding_for_say_so(small_tokenizer):
    import copy

    model = _tiny_lm(small_tokenizer)
    tok = copy.deepcopy(small_tokenizer)  # the fixture is shared: add the marker to a copy
    tok.add_special_tokens({"additional_special_tokens": ["<|new_marker|>"]})
    rows = model.get_input_embeddings().weight.shape[0]
    assert len(tok) > rows
    with pytest.raises(ValueError, match=rf"token id {rows}, but the model.s embedding has {rows} rows.*resize_token_embeddings"):
        sampling.generate(model, tok, "Max <|new_marker|>", max_new_tokens=3)
