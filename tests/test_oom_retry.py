"""training.train_with_oom_retry: a simulated GPU out-of-memory halves the micro-batch, keeps the effective batch."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from companion import dpo
from companion.training import train_with_oom_retry


@dataclass
class Args:
    per_device_train_batch_size: int = 16
    gradient_accumulation_steps: int = 1


class FakeTrainer:
    """Runs out of memory whenever the micro-batch is above ``fits`` (after ``steps_before_oom`` steps)."""

    def __init__(self, args, fits: int, steps_before_oom: int = 0):
        self.args, self.fits = args, fits
        self.state = type("State", (), {"global_step": 0})()
        self.steps_before_oom = steps_before_oom

    def train(self):
        if self.args.per_device_train_batch_size > self.fits:
            self.state.global_step = self.steps_before_oom
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.state.global_step = 10


def test_halves_the_micro_batch_until_it_fits_and_keeps_the_effective_batch(capsys):
    built = []
    trainer, args = train_with_oom_retry(lambda a: built.append(a) or FakeTrainer(a, fits=4), Args())
    assert [a.per_device_train_batch_size for a in built] == [16, 8, 4]
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 16
    assert trainer.state.global_step == 10
    assert "retrying with 8 x 2 accumulation steps" in capsys.readouterr().err


def test_an_oom_after_training_started_is_not_retried():
    with pytest.raises(RuntimeError, match=r"after training had started: use per_device_train_batch_size=8 and "
                                           r"gradient_accumulation_steps=2"):
        train_with_oom_retry(lambda a: FakeTrainer(a, fits=4, steps_before_oom=3), Args())


def test_gives_up_at_the_smallest_batch_with_advice():
    with pytest.raises(RuntimeError, match=r"batch_size=1, gradient_accumulation_steps=16.*shorter max_length, or LoRA"):
        train_with_oom_retry(lambda a: FakeTrainer(a, fits=0), Args())


def test_other_errors_pass_through_and_no_retry_means_no_retry():
    def broken(a):
        raise ValueError("not memory")

    with pytest.raises(ValueError, match="not memory"):
        train_with_oom_retry(lambda a: type("T", (), {"train": broken, "state": None})(), Args())
    with pytest.raises(RuntimeError, match="out of GPU memory with per_device_train_batch_size=16"):
        train_with_oom_retry(lambda a: FakeTrainer(a, fits=4), Args(), retry=False)


def test_real_configs_can_be_replaced(tmp_path):
    import dataclasses

    args = dpo.dpo_config(str(tmp_path))
    smaller = dataclasses.replace(args, per_device_train_batch_size=8, gradient_accumulation_steps=2)
    assert smaller.per_device_train_batch_size == 8 and smaller.loss_type == args.loss_type


def _oom_above(trainer_class, fits: int, built: list):
    """A real TRL trainer class that runs out of memory (simulated) while the micro-batch is above ``fits``."""

    class OOMTrainer(trainer_class):
        def train(self, *args, **kwargs):
            built.append(self.args.per_device_train_batch_size)
            if self.args.per_device_train_batch_size > fits:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
            return super().train(*args, **kwargs)

    return OOMTrainer


def test_sft_and_reward_training_retry_a_simulated_oom_with_the_same_effective_batch(small_tokenizer, tmp_path,
                                                                                        monkeypatch, capsys):
    from datasets import Dataset

    from companion import reward, sft
    from companion.models import build_causal_lm
    from companion.profiles import profile

    conv = [{"role": "user", "content": "Tell a story."},
            {"role": "assistant", "content": "Lily was happy and played in the park."}]
    lm = build_causal_lm(small_tokenizer, profile("tiny"), n_layer=1, n_embd=32, n_head=2, intermediate_size=64,
                         context_length=64)
    built = []
    monkeypatch.setattr(sft, "LogitsLossSFTTrainer", _oom_above(sft.LogitsLossSFTTrainer, 2, built))
    args = sft.sft_config(str(tmp_path / "sft"), max_steps=2, per_device_train_batch_size=4, logging_steps=1,
                          disable_tqdm=True, max_length=64)
    res = sft.train_sft(lm, small_tokenizer, Dataset.from_list([{"messages": conv}] * 8), args=args)
    assert built == [4, 2] and len(res.history["train_loss"]) == 2
    assert res.trainer.args.per_device_train_batch_size * res.trainer.args.gradient_accumulation_steps == 4
    assert "retrying with 2 x 2 accumulation steps" in capsys.readouterr().err

    rm = reward.reward_model_from_causal_lm(lm, small_tokenizer)
    rows = [{"prompt": conv[:1], "chosen": conv[1:], "rejected": [{"role": "assistant", "content": "dog dog"}]}] * 8
    built.clear()
    monkeypatch.setattr(reward, "RewardTrainer", _oom_above(reward.RewardTrainer, 1, built))
    rargs = reward.reward_config(str(tmp_path / "rm"), profile("tiny"), max_steps=2, logging_steps=1,
                                 per_device_train_batch_size=4, disable_tqdm=True)
    out = reward.train_reward_model(rm, small_tokenizer, Dataset.from_list(rows), None, rargs)
    assert built == [4, 2, 1] and len(out.history["train_loss"]) == 2 and out.train_seconds > 0
