"""bench/gpu.py: its CPU dry run (the GPU measurement's code at tiny sizes) and its FLOP bookkeeping."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]  # bench/ is not a package of the install: import it from the checkout
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import gpu  # noqa: E402


def test_datasheet_peaks_by_device_name():
    assert gpu.datasheet_peak("Tesla T4") == (65e12, "fp16")
    assert gpu.datasheet_peak("NVIDIA A100-SXM4-80GB")[0] == 312e12
    assert gpu.datasheet_peak("NVIDIA H100 80GB HBM3")[0] == 989e12
    assert gpu.datasheet_peak("NVIDIA H100 PCIe")[0] == 756e12
    assert gpu.datasheet_peak("NVIDIA H200")[0] == 989e12
    assert gpu.datasheet_peak("NVIDIA L4")[0] == 121e12
    assert gpu.datasheet_peak("NVIDIA L40S") == (None, None)  # not an L4
    assert gpu.datasheet_peak("NVIDIA RTX A1000") == (None, None)  # not an A100


def test_gpu_sizes_are_gpt2_small():
    tok = gpu.make_tokenizer(gpu.synthetic_conversations(8))
    with torch.device("meta"):
        model = gpu.causal_lm(gpu.GPU, tok, "sdpa")
    assert 123e6 < gpu.matmul_params(model) < 125e6  # tied: the head counts, the input lookup does not


def test_flop_counter_counts_forward_and_training_tokens():
    tok = gpu.make_tokenizer(gpu.synthetic_conversations(8))
    model = gpu.causal_lm(gpu.DRY_RUN, tok, "sdpa")
    n, counter = gpu.matmul_params(model), gpu.FlopCounter()
    counter.watch(model)
    ids = torch.randint(0, len(tok), (2, 5))
    with torch.no_grad():
        model(input_ids=ids)
    model(input_ids=ids).logits.sum().backward()
    counter.close()
    model(input_ids=ids)  # after close(): not counted
    assert counter.tokens == {"no_grad": 10, "grad": 10}
    assert counter.flops == {"no_grad": 2 * n * 10, "grad": 6 * n * 10}


def test_cpu_dry_run_measures_both_runs_without_mfu(tmp_path):
    out = tmp_path / "gpu.json"
    summary = gpu.main(["--dry-run", "--out", str(out)])
    result = json.loads(out.read_text())
    assert summary["dry_run"] and result["dry_run"]
    s, sft, ppo = gpu.DRY_RUN, result["runs"]["sft"], result["runs"]["ppo"]
    # wrapped packing: every timed step trains on whole blocks of max_length tokens
    assert sft["tokens"] == sft["timed_steps"] * s.sft_batch * s.context > 0
    assert sft["tokens_per_s"] > 0 and sft["packing_strategy"] in ("wrapped", "bfd")
    assert ppo["update_tokens"] > 0 and ppo["generated_tokens"] > 0 and 0 < ppo["rollout_share"] < 1
    if not torch.cuda.is_available():
        assert "mfu_vs_measured_peak" not in sft and "update" not in ppo  # no MFU claims on a CPU
        assert result["fits_t4_15gib"] == {"sft": None, "ppo": None}
    for key in ("device", "machine", "threads", "versions", "peak_flops", "seconds"):
        assert key in result


@pytest.mark.parametrize("name", ["gpu"])
def test_gpu_bench_runs_only_when_named(name):
    from bench import __main__ as bench_main

    assert name not in bench_main.BENCHES and name in bench_main.ON_REQUEST
