"""bench/bench_trainer_overhead.py: its step accounting, and a seconds-long run of both workloads."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).parents[1]  # bench/ is not a package of the install: import it from the checkout
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import bench_trainer_overhead as bto  # noqa: E402


class SleepyHand:
    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0

    def step(self):
        self.calls += 1
        time.sleep(self.seconds)


@pytest.mark.parametrize("at", ["end", "begin"])
def test_a_trainer_step_leaves_out_the_hand_step_run_between(at):
    hand, state = SleepyHand(0.2), SimpleNamespace(num_input_tokens_seen=0)
    timer = bto.Interleaved(hand, at)
    timer.on_train_begin(None, state, None)
    for _ in range(3):
        timer.on_step_begin(None, state, None)
        time.sleep(0.02)  # the Trainer's own work
        state.num_input_tokens_seen += 10
        timer.on_step_end(None, state, None)
    seconds, tokens, cpu = timer.steps()
    assert hand.calls == 3 and tokens == [10, 10, 10] and len(cpu) == 3
    assert all(0.015 < s < 0.15 for s in seconds), seconds  # 0.02 s each, never the hand step's 0.2 s


def test_rate_leaves_out_the_first_steps():
    assert bto.rate([9.0, 1.0, 1.0], [100, 10, 30], skip=1) == 20.0
    with pytest.raises(ValueError, match="no step left"):
        bto.rate([1.0], [10], skip=1)


def test_both_workloads_see_the_same_batches_on_both_sides(sample_data):
    from companion.pipeline import tokenizer
    from companion.profiles import profile

    size = dict(steps=3, skip=1, warmup_steps=2, rounds=2, batch=2, max_length=None)
    p = profile()
    tok = tokenizer(p)  # trains the tiny BPE once into the test's cache (seconds)
    for work in (bto.SFTWorkload(tok, p, size), bto.RewardWorkload(tok, p, size)):
        r = bto.measure(work, size)
        assert r["same_batches"], work.name
        assert r["ratio"] > 0 and r["median_step_ratio"] > 0 and r["cpu_time_ratio"] > 0
        for side in ("hand", "companion"):
            assert len(r["runs"][side]) == 2
            assert all(len(run["step_seconds"]) == 3 and min(run["step_tokens"]) > 0 for run in r["runs"][side])
