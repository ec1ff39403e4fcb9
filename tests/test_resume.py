"""Interruptions lose nothing: SFT, reward, DPO and PPO runs killed mid-way resume to the same numbers.

SFT and PPO are killed for real (SIGKILL in a subprocess, right after a checkpoint is written);
the reward and DPO runs stop with an exception at the same point, in this process.  Each resumed
run must end with the loss history and weights of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from companion import dpo, ppo, reward, sft
from companion.models import build_causal_lm
from companion.profiles import profile
from companion.training import resume_checkpoint

CONV = [{"role": "user", "content": "Hi there."}, {"role": "assistant", "content": "Hello, Lily."}]
ROWS = [{"prompt": [{"role": "user", "content": "Lily"}]},
        {"prompt": [{"role": "user", "content": "Once upon a time there was a dog"}]}]


@pytest.fixture
def one_thread():
    """The killed child runs on one thread; so does the parent, so both compute the same numbers."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def saved_lm(small_tokenizer, tmp_path):
    """A small random causal LM and its tokenizer, saved so that a subprocess loads the same weights."""
    torch.manual_seed(0)
    model = build_causal_lm(small_tokenizer, profile("tiny"), n_layer=1, n_embd=32, n_head=2,
                            intermediate_size=64, context_length=64)
    path = tmp_path / "init"
    model.save_pretrained(path)
    small_tokenizer.save_pretrained(path)
    return path


def load(path):
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def run_child(script: str, *args) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = "import os, signal, sys, torch\ntorch.set_num_threads(1)\n" + textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, timeout=300).returncode


def same_weights(a, b, atol=1e-6) -> bool:
    return all(torch.allclose(x, y, atol=atol) for x, y in zip(a.parameters(), b.parameters()))


# --------------------------------------------------------------------------- SFT, killed for real
def sft_args(out, **kw):
    return sft.sft_config(str(out), **{**dict(max_steps=6, per_device_train_batch_size=2, learning_rate=5e-3,
                                              logging_steps=1, warmup_steps=0, disable_tqdm=True, max_length=64,
                                              save_strategy="steps", save_steps=2), **kw})


SFT_CHILD = """
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from companion import sft
init, out = sys.argv[1], sys.argv[2]
conv = [{"role": "user", "content": "Hi there."}, {"role": "assistant", "content": "Hello, Lily."}]

class DieAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kw):
        if state.global_step == 4:
            os.kill(os.getpid(), signal.SIGKILL)

args = sft.sft_config(out, max_steps=6, per_device_train_batch_size=2, learning_rate=5e-3, logging_steps=1,
                      warmup_steps=0, disable_tqdm=True, max_length=64, save_strategy="steps", save_steps=2)
sft.train_sft(AutoModelForCausalLM.from_pretrained(init), AutoTokenizer.from_pretrained(init),
              Dataset.from_list([{"messages": conv}] * 8), args=args, callbacks=[DieAfterSave()])
"""


def test_a_killed_sft_run_resumes_to_the_same_loss_and_weights(saved_lm, tmp_path, one_thread):
    data = Dataset.from_list([{"messages": CONV}] * 8)
    model, tok = load(saved_lm)
    straight = sft.train_sft(model, tok, data, args=sft_args(tmp_path / "straight"))

    assert run_child(SFT_CHILD, saved_lm, tmp_path / "killed") == -9
    assert sorted(p.name for p in (tmp_path / "killed").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    model, tok = load(saved_lm)
    resumed = sft.train_sft(model, tok, data, args=sft_args(tmp_path / "killed"), resume_from_checkpoint=True)
    assert resumed.history["train_steps"] == straight.history["train_steps"] == [1, 2, 3, 4, 5, 6]
    assert resumed.history["train_loss"] == pytest.approx(straight.history["train_loss"], abs=1e-5)
    assert same_weights(resumed.model, straight.model)


# --------------------------------------------------------------------------- reward model and DPO, stopped
class Interrupt(Exception):
    pass


class StopAfterSave(TrainerCallback):
    """Raise right after the checkpoint of ``step`` is written: the run ends as a kill would end it."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise Interrupt(self.step)


def preference_pairs(n: int = 8) -> Dataset:
    """``n`` copies of one conversational preference pair (for the reward model and DPO)."""
    return Dataset.from_list([{"prompt": [{"role": "user", "content": "Tell a story."}],
                               "chosen": [{"role": "assistant", "content": "Lily was happy."}],
                               "rejected": [{"role": "assistant", "content": "The the the."}]}] * n)


def test_a_stopped_reward_run_resumes_to_the_same_loss_and_weights(saved_lm, tmp_path, one_thread):
    pairs = preference_pairs()

    def args(out):
        return reward.reward_config(str(out), max_steps=6, per_device_train_batch_size=2, learning_rate=1e-3,
                                    logging_steps=1, disable_tqdm=True, save_strategy="steps", save_steps=2)

    def fresh():
        lm, tok = load(saved_lm)
        return reward.reward_model_from_causal_lm(lm, tok), tok

    straight = reward.train_reward_model(*fresh(), pairs, args=args(tmp_path / "straight"))
    with pytest.raises(Interrupt):
        reward.train_reward_model(*fresh(), pairs, args=args(tmp_path / "stopped"), callbacks=[StopAfterSave(4)])
    resumed = reward.train_reward_model(*fresh(), pairs, args=args(tmp_path / "stopped"), resume_from_checkpoint=True)
    assert resumed.history["train_loss"] == pytest.approx(straight.history["train_loss"], abs=1e-5)
    assert len(resumed.history["train_loss"]) == 6
    assert same_weights(resumed.model, straight.model)


def test_a_stopped_dpo_run_resumes_to_the_same_loss_and_weights(saved_lm, tmp_path, one_thread):
    pairs = preference_pairs()

    def args(out):
        return dpo.dpo_config(str(out), max_steps=6, per_device_train_batch_size=2, learning_rate=1e-3,
                              logging_steps=1, disable_tqdm=True, save_strategy="steps", save_steps=2)

    model, tok = load(saved_lm)
    straight = dpo.train_dpo(model, tok, pairs, args(tmp_path / "straight"))
    model, tok = load(saved_lm)
    with pytest.raises(Interrupt):
        dpo.train_dpo(model, tok, pairs, args(tmp_path / "stopped"), callbacks=[StopAfterSave(4)])
    model, tok = load(saved_lm)
    resumed = dpo.train_dpo(model, tok, pairs, args(tmp_path / "stopped"), resume_from_checkpoint=True)
    assert resumed.history["loss"] == pytest.approx(straight.history["loss"], abs=1e-5)
    assert len(resumed.history["loss"]) == 6
    assert same_weights(resumed.model, straight.model)


def test_resume_true_without_a_checkpoint_starts_fresh_and_a_wrong_folder_is_a_clear_error(tmp_path):
    assert resume_checkpoint(str(tmp_path / "none-yet"), True) is None
    assert resume_checkpoint(str(tmp_path), None) is None
    with pytest.raises(FileNotFoundError, match="resume_from_checkpoint='/nope' is not a folder"):
        resume_checkpoint(str(tmp_path), "/nope")


# --------------------------------------------------------------------------- our PPO, killed for real
PPO_CHILD = """
from transformers import AutoModelForCausalLM, AutoTokenizer
from companion import ppo
init, out = sys.argv[1], sys.argv[2]
rows = [{"prompt": [{"role": "user", "content": "Lily"}]},
        {"prompt": [{"role": "user", "content": "Once upon a time there was a dog"}]}]

def token_sum_reward(prompts, completions, completion_ids, **kw):
    return [float(sum(ids) % 7) for ids in completion_ids]  # varies from sample to sample: real gradients

cfg = ppo.PPOConfig(steps=4, batch_size=4, max_new_tokens=6, learning_rate=1e-2, use_cpu=True,
                    output_dir=out, save_steps=1)
trainer = ppo.PPOTrainer(cfg, AutoModelForCausalLM.from_pretrained(init), AutoTokenizer.from_pretrained(init),
                         rows, reward_funcs=token_sum_reward)
save = trainer.save_checkpoint

def save_then_die(path):
    save(path)
    if trainer.step == 2:
        os.kill(os.getpid(), signal.SIGKILL)

trainer.save_checkpoint = save_then_die
trainer.train(progress=False)
"""


def token_sum_reward(prompts, completions, completion_ids, **kw):
    return [float(sum(ids) % 7) for ids in completion_ids]  # varies from sample to sample: real gradients


def test_a_killed_ppo_run_resumes_to_the_same_numbers(saved_lm, tmp_path, one_thread):
    cfg = ppo.PPOConfig(steps=4, batch_size=4, max_new_tokens=6, learning_rate=1e-2, use_cpu=True,
                        output_dir=str(tmp_path / "killed"), save_steps=1)
    straight = ppo.PPOTrainer(cfg, *load(saved_lm), ROWS, reward_funcs=token_sum_reward)
    straight.config = ppo.PPOConfig(**{**vars(cfg), "output_dir": None, "save_steps": None})
    want = straight.train(progress=False)

    assert run_child(PPO_CHILD, saved_lm, tmp_path / "killed") == -9
    assert ppo.latest_checkpoint(tmp_path / "killed").name == "checkpoint-2"
    resumed = ppo.PPOTrainer(cfg, *load(saved_lm), ROWS, reward_funcs=token_sum_reward)
    got = resumed.train(progress=False, resume_from_checkpoint=True)
    assert resumed.step == 4 and got["step"] == [1, 2, 3, 4]
    assert max(want["objective/kl"][1:]) > 0 and max(map(abs, want["loss/policy_avg"])) > 0  # it learned
    for key in ("objective/scores", "objective/kl", "loss/policy_avg", "loss/value_avg"):
        assert got[key] == pytest.approx(want[key], abs=1e-5), key
    assert got["samples"] == want["samples"]
    assert same_weights(resumed.policy, straight.policy, atol=1e-5)


def test_ppo_update_retries_a_gpu_out_of_memory_with_smaller_micro_batches(saved_lm, capsys):
    cfg = ppo.PPOConfig(steps=1, batch_size=4, max_new_tokens=6, learning_rate=1e-2, use_cpu=True)
    trainer = ppo.PPOTrainer(cfg, *load(saved_lm), ROWS, reward_funcs=token_sum_reward)
    before = copy.deepcopy(trainer.policy)
    forward, calls = trainer.model.forward, []

    def oom_on_a_micro_batch_of_four(*args, **kw):  # update forwards only (rollouts run without grad)
        if torch.is_grad_enabled():
            calls.append(len(args[0]))
            if len(args[0]) > 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(*args, **kw)

    trainer.model.forward = oom_on_a_micro_batch_of_four
    trainer.train(progress=False)
    assert trainer.config.gradient_accumulation_steps == 2 and trainer.config.micro_batch_size == 2
    assert calls[0] == 4 and set(calls[1:]) == {2} and len(calls) == 1 + 2 * cfg.num_ppo_epochs
    assert "retrying with 2 x 2 accumulation steps" in capsys.readouterr().err
    assert trainer.step == 1 and not same_weights(trainer.policy, before)  # the update went through

    def always_oom(*args, **kw):
        if torch.is_grad_enabled():
            raise torch.OutOfMemoryError("CUDA out of memory")
        return forward(*args, **kw)

    trainer.model.forward = always_oom
    with pytest.raises(RuntimeError, match="out of GPU memory in the PPO update at micro-batch 1 "):
        trainer.train(steps=1, progress=False)
