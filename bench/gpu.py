"""GPU throughput: tokens/s, model FLOPs utilization and peak memory of SFT and of a PPO step.

Two runs on a GPT-2-small-sized Llama (12 layers, d=768, vocabulary 50,304, tied embeddings: 124M
parameters, random weights), both through the library's own code:

- **SFT** with :func:`companion.sft.train_sft` (TRL's ``SFTTrainer``): bf16 (fp16 on GPUs without
  native bf16, e.g. a T4), packing into 1,024-token blocks, SDPA attention (flash attention 2 and
  padding-free best-fit packing when the ``flash_attn`` package is installed), the gpu profile's
  gradient checkpointing.  The first steps warm up and are not timed.
- **PPO** with :class:`companion.ppo.PPOTrainer` under autocast: one rollout + update step after a
  warm-up one; policy, reference and reward model all of that size, 64 prompts x 200 new tokens,
  2 epochs of 4 minibatches (the gpu profile's settings, the policy trained in full, not LoRA).

Model FLOPs are counted at every forward call (forward hooks on each model): ``2 N`` per token
through a model of ``N`` matmul parameters, ``6 N`` when gradients flow (full fine-tuning), attention
left out (the usual convention; ``*_with_attention`` adds its ``12 L d T`` per trained token).
MFU = model FLOP/s / the GPU's peak, both the bf16 peak measured here by a large matmul and the
datasheet's dense figure for known GPUs.  Peak memory (``torch.cuda.max_memory_allocated``) of each
run is checked against a T4's 15 GiB.  Writes ``bench/results/gpu.json``.

Without a GPU it runs a dry run: the same code at tiny sizes, a few steps, no MFU (what the test runs).
Run: ``python -m bench.gpu [--dry-run] [--out PATH]`` or ``python -m bench gpu``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import random
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

RESULTS = Path(__file__).parent / "results"
T4_USABLE_GIB = 15.0  # a 16 GB T4 shows 15,360 MiB to CUDA
# dense (no sparsity) tensor-core peaks from the vendor's datasheets, FLOP/s; most specific name first
DATASHEET_PEAK = ((r"\bT4\b", 65e12, "fp16"), (r"\bA100\b", 312e12, "bf16"), (r"\bH100 PCIe", 756e12, "bf16"),
                  (r"\bH100 NVL", 835e12, "bf16"), (r"\bH100\b", 989e12, "bf16 (SXM)"),
                  (r"\bH200\b", 989e12, "bf16"), (r"\bL4\b", 121e12, "bf16"))
STORY_WORDS = """the a little big happy sad red blue dog cat bird ball tree park sun house garden toy box car ran
jumped played saw found liked wanted said went looked smiled laughed and then but so because one day she he
they was were very with in on under near friend mom dad"""


@dataclass(frozen=True)
class Sizes:
    """Model and run sizes: :data:`GPU` for the measurement, :data:`DRY_RUN` to check the code on a CPU."""

    n_layer: int
    n_embd: int
    n_head: int
    intermediate_size: int
    vocab_size: int
    context: int
    sft_batch: int
    sft_steps: int
    sft_warmup: int
    conversations: int
    ppo_batch: int
    ppo_mini_batches: int
    ppo_epochs: int
    new_tokens: int
    matmul: int


GPU = Sizes(n_layer=12, n_embd=768, n_head=12, intermediate_size=2048, vocab_size=50304, context=1024,
            sft_batch=16, sft_steps=30, sft_warmup=5, conversations=600, ppo_batch=64, ppo_mini_batches=4,
            ppo_epochs=2, new_tokens=200, matmul=8192)
DRY_RUN = Sizes(n_layer=2, n_embd=64, n_head=2, intermediate_size=128, vocab_size=1024, context=128,
                sft_batch=2, sft_steps=4, sft_warmup=1, conversations=24, ppo_batch=4, ppo_mini_batches=2,
                ppo_epochs=1, new_tokens=8, matmul=0)


# --------------------------------------------------------------------------- the GPU
def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it natively (compute capability 8.0+), fp16 before; None on a CPU (fp32)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16


def datasheet_peak(name: str) -> tuple[float | None, str | None]:
    """(dense peak FLOP/s, its precision) of a known GPU by its name, else (None, None)."""
    return next(((flops, what) for key, flops, what in DATASHEET_PEAK if re.search(key, name)), (None, None))


def measured_peak(n: int, dtype: torch.dtype, device: torch.device, repeats: int = 50) -> float:
    """FLOP/s of an ``n x n`` by ``n x n`` matmul in ``dtype`` (2 n^3 FLOPs), after a warm-up."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(5):
        a @ b
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype or torch.float32).removeprefix("torch.")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    """Free what earlier runs left (the Trainer holds reference cycles), then restart the peak count."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# --------------------------------------------------------------------------- counting FLOPs
def matmul_params(model: torch.nn.Module) -> int:
    """Parameters a token's forward pass multiplies with: all, less the input embedding (a lookup),
    plus the output head (the same matrix when tied)."""
    from companion.models import count_parameters

    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return count_parameters(model) - embed.numel() + (head.weight.numel() if head is not None else 0)


class FlopCounter:
    """Tokens and model FLOPs of every forward call of the hooked models, with and without gradients."""

    def __init__(self):
        self.tokens = {"no_grad": 0, "grad": 0}
        self.flops = {"no_grad": 0.0, "grad": 0.0}
        self._handles = []

    def watch(self, model: torch.nn.Module) -> None:
        n = matmul_params(model)

        def hook(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                return
            mode = "grad" if torch.is_grad_enabled() else "no_grad"
            self.tokens[mode] += ids.numel()
            self.flops[mode] += (6 if mode == "grad" else 2) * n * ids.numel()

        self._handles.append(model.register_forward_pre_hook(hook, with_kwargs=True))

    def snapshot(self) -> dict:
        return {"tokens": dict(self.tokens), "flops": dict(self.flops)}

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def since(counter: FlopCounter, before: dict) -> dict:
    now = counter.snapshot()
    return {k: {m: now[k][m] - before[k][m] for m in now[k]} for k in now}


# --------------------------------------------------------------------------- data and models
def synthetic_conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """``n`` tiny-world requests with made-up stories of 120-360 words (content does not matter here)."""
    from companion import tinyworld

    rng, vocabulary = random.Random(seed), STORY_WORDS.split()
    convs = []
    for i, spec in enumerate(tinyworld.make_instructions(min(n, 200), seed=seed) * (n // 200 + 1)):
        if i == n:
            break
        words = [rng.choice(vocabulary) for _ in range(rng.randint(120, 360))]
        story = " ".join(words).capitalize() + "."
        convs.append(spec.messages() + [{"role": "assistant", "content": story}])
    return convs


def make_tokenizer(convs: list[list[dict]]):
    from companion.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer([m["content"] for c in convs for m in c], vocab_size=4096)


def model_config(s: Sizes, tok):
    from companion.models import tiny_config

    if len(tok) > s.vocab_size:
        raise ValueError(f"the tokenizer has {len(tok)} tokens, more than the model's vocabulary of {s.vocab_size}")
    return tiny_config(vocab_size=s.vocab_size, n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd,
                       intermediate_size=s.intermediate_size, context_length=s.context, arch="llama",
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def attention() -> str:
    """flash_attention_2 when the flash_attn package is installed, else PyTorch's SDPA."""
    import importlib.util

    return "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"


def causal_lm(s: Sizes, tok, attn: str, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(model_config(s, tok), attn_implementation=attn, dtype=torch.float32)


def reward_lm(s: Sizes, tok, attn: str, seed: int = 1):
    from transformers import AutoModelForSequenceClassification

    cfg = model_config(s, tok)
    cfg.num_labels = 1
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(cfg, attn_implementation=attn, dtype=torch.float32)


def utilization(flops: float, seconds: float, peaks: dict) -> dict:
    """Model FLOP/s and its share of each known peak (None on a CPU)."""
    rate = flops / seconds
    return {"model_tflops_per_s": rate / 1e12,
            **{f"mfu_vs_{k}": (rate / v if v else None) for k, v in peaks.items()}}


# --------------------------------------------------------------------------- the two runs
class StepTimer(TrainerCallback):
    """The synchronized time and FLOP counts at the end of every optimizer step."""

    def __init__(self, device: torch.device, counter: FlopCounter):
        self.device, self.counter, self.marks = device, counter, []

    def on_step_end(self, args, state, control, **kwargs):
        sync(self.device)
        self.marks.append((time.perf_counter(), self.counter.snapshot()))


def sft_run(s: Sizes, tok, convs: list, device: torch.device, dtype: torch.dtype | None, peaks: dict) -> dict:
    from datasets import Dataset

    from companion import sft
    from companion.models import count_parameters
    from companion.profiles import profile

    reset_peak(device)
    attn = attention()
    model = causal_lm(s, tok, attn)
    n = count_parameters(model)
    counter, gpu = FlopCounter(), device.type == "cuda"
    counter.watch(model)
    timer = StepTimer(device, counter)
    strategy = "bfd" if attn == "flash_attention_2" else "wrapped"  # SDPA: whole blocks, one causal mask

    with tempfile.TemporaryDirectory() as tmp:
        args = sft.sft_config(tmp, profile=profile("gpu" if gpu else "tiny"), max_steps=s.sft_steps,
                              per_device_train_batch_size=s.sft_batch, gradient_accumulation_steps=1,
                              max_length=s.context, packing=True, packing_strategy=strategy,
                              bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, use_cpu=not gpu,
                              logging_steps=s.sft_steps, warmup_steps=0, disable_tqdm=True)
        result = sft.train_sft(model, tok, Dataset.from_list([{"messages": c} for c in convs]), args=args,
                               logits_loss=False, callbacks=[timer])
    counter.close()
    (t0, c0), (t1, c1) = timer.marks[s.sft_warmup - 1], timer.marks[-1]
    seconds, tokens = t1 - t0, c1["tokens"]["grad"] - c0["tokens"]["grad"]
    flops = c1["flops"]["grad"] - c0["flops"]["grad"]
    attn_flops = 12 * s.n_layer * s.n_embd * s.context * tokens
    out = {"parameters": n, "attention": attn, "packing_strategy": strategy, "max_length": s.context,
           "batch": s.sft_batch, "timed_steps": len(timer.marks) - s.sft_warmup, "warmup_steps": s.sft_warmup,
           "gradient_checkpointing": bool(result.trainer.args.gradient_checkpointing), "dtype": dtype_name(dtype),
           "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
           "final_loss": result.history["train_loss"][-1] if result.history["train_loss"] else None,
           "peak_memory_gib": peak_gib(device)}
    if peaks:
        out.update(utilization(flops, seconds, peaks))
        out["with_attention"] = utilization(flops + attn_flops, seconds, peaks)
    return out


@contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        yield


def ppo_run(s: Sizes, tok, device: torch.device, dtype: torch.dtype | None, peaks: dict) -> dict:
    from companion import ppo, tinyworld
    from companion.models import count_parameters

    attn = "sdpa"  # as the book's PPO runs: left-padded prompts, a KV cache, one mask
    reset_peak(device)
    policy = causal_lm(s, tok, attn)
    ref = copy.deepcopy(policy)  # before the hooks: a copy would carry them
    rm = reward_lm(s, tok, attn)
    counter = FlopCounter()
    for m in (policy, ref, rm):
        counter.watch(m)
    prompts = tinyworld.prompt_dataset(tinyworld.make_instructions(s.ppo_batch * 2, seed=7))
    cfg = ppo.PPOConfig(steps=2, batch_size=s.ppo_batch, num_mini_batches=s.ppo_mini_batches,
                        num_ppo_epochs=s.ppo_epochs, learning_rate=2e-5, max_new_tokens=s.new_tokens,
                        temperature=1.0, kl_coef=0.05, missing_eos_penalty=1.0, use_cpu=device.type != "cuda")
    trainer = ppo.PPOTrainer(cfg, policy, tok, prompts, reward_model=rm, ref_model=ref)
    with autocast(device, dtype):
        trainer.train(steps=1, progress=False)  # warm-up
        sync(device)
        before, start = counter.snapshot(), time.perf_counter()
        history = trainer.train(steps=1, progress=False)
        sync(device)
    seconds, done = time.perf_counter() - start, since(counter, before)
    counter.close()
    rollout_s, update_s = history["time/rollout_s"][-1], history["time/update_s"][-1]
    generated = int(history["val/length"][-1] * s.ppo_batch)
    out = {"policy_parameters": count_parameters(policy),
           "models": "policy + value head (trained), reference, reward model: all of that size",
           "attention": attn, "dtype": dtype_name(dtype),
           "batch": s.ppo_batch, "max_new_tokens": s.new_tokens, "epochs": s.ppo_epochs,
           "mini_batches": s.ppo_mini_batches, "step_seconds": seconds, "rollout_seconds": rollout_s,
           "update_seconds": update_s, "rollout_share": rollout_s / (rollout_s + update_s),
           "generated_tokens": generated, "generated_tokens_per_s": generated / rollout_s,
           "update_tokens": done["tokens"]["grad"], "update_tokens_per_s": done["tokens"]["grad"] / update_s,
           "forward_tokens_no_grad": done["tokens"]["no_grad"], "peak_memory_gib": peak_gib(device)}
    if peaks:
        out["step"] = utilization(done["flops"]["grad"] + done["flops"]["no_grad"], seconds, peaks)
        out["rollout"] = utilization(done["flops"]["no_grad"], rollout_s, peaks)
        out["update"] = utilization(done["flops"]["grad"], update_s, peaks)
    return out


# --------------------------------------------------------------------------- report
def main(argv: list[str] | None = None) -> dict:
    from bench.bench_rl_rollouts import environment

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes, a few steps (the default without a GPU)")
    ap.add_argument("--out", default=None, help="the JSON to write (default bench/results/gpu.json; a dry run: none)")
    args = ap.parse_args(argv if argv is not None else [])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dry = args.dry_run or device.type != "cuda"
    s = DRY_RUN if dry else GPU
    dtype = amp_dtype(device)
    start = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peaks, sheet_what = {}, None
    if device.type == "cuda" and not dry:  # a dry run makes no MFU claims
        sheet, sheet_what = datasheet_peak(name)
        peaks = {"measured_peak": measured_peak(s.matmul or 1024, dtype, device), "datasheet_peak": sheet}
    print(f"device: {name}, {'dry run' if dry else 'full run'}, dtype {dtype}", flush=True)
    convs = synthetic_conversations(s.conversations)
    tok = make_tokenizer(convs)
    runs = {"sft": sft_run(s, tok, convs, device, dtype, peaks), "ppo": ppo_run(s, tok, device, dtype, peaks)}
    for k, r in runs.items():
        print(k, json.dumps(r, default=float), flush=True)
    memory = {k: (None if r["peak_memory_gib"] is None else r["peak_memory_gib"] < T4_USABLE_GIB)
              for k, r in runs.items()}
    result = {"device": name, "dry_run": dry, "sizes": asdict(s),
              "capability": list(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None,
              "peak_flops": {**peaks, "datasheet_precision": sheet_what,
                             "measured_with": f"{s.matmul}^3 matmul in {dtype}" if peaks else None},
              "runs": runs, "fits_t4_15gib": memory, "seconds": time.perf_counter() - start, **environment()}
    out = Path(args.out) if args.out else (None if dry else RESULTS / "gpu.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=float))
        print("wrote", out)
    summary = {"device": name, "dry_run": dry, "sft_tokens_per_s": round(runs["sft"]["tokens_per_s"]),
               "ppo_step_s": round(runs["ppo"]["step_seconds"], 2)}
    if not dry:
        summary["sft_mfu"] = round(runs["sft"]["mfu_vs_measured_peak"], 3)
        summary["ppo_update_mfu"] = round(runs["ppo"]["update"]["mfu_vs_measured_peak"], 3)
    return summary


if __name__ == "__main__":
    main(__import__("sys").argv[1:])
