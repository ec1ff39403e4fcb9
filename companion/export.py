"""The book's tiny models in the reader's browser: ONNX files, a tokenizer file and a manifest.

:func:`export_onnx` turns a causal LM into one ONNX graph, ``input_ids`` int64 ``[1, T]`` ->
``logits`` float32 ``[1, vocab]`` of the last position (no KV cache: at 3M parameters the
whole prefix is re-read every step, a few milliseconds).  :func:`export_web` writes several
stages, the tokenizer (:func:`write_web_tokenizer`), every model's recorded answers to a few
fixed prompts and ``manifest.json`` into one folder, which the book's
``_static/chat_onnx.js`` loads with onnxruntime-web.  :func:`onnx_greedy` is the same greedy
loop in Python, to check that the file answers what the PyTorch model answers.
"""

from __future__ import annotations

import copy
import importlib
import json
import numbers
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

QUANTIZE_FORMATS = ("fp16", "int8", "fp32")  # how the weights are stored (see compact_weights)
CHAT_STAGES = ("base", "sft", "ppo", "dpo", "rlaif")  # the stages that are chat models
DEFAULT_WEB_STAGES = ("base", "sft", "dpo")
MANIFEST = "manifest.json"
TOKENIZER_FILE = "bpe.json"
RECORDED_FILE = "recorded.json"
# GPT-2's pre-tokenizer pattern (what the tokenizers library's ByteLevel(use_regex=True) splits with).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
USER_TURN = "<|im_start|>user\n{content}<|im_end|>\n"
ASSISTANT_HEADER = "<|im_start|>assistant\n"


def _need(module: str):
    """Import ``module`` (onnx, onnxruntime), or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"companion.export needs {module}: pip install onnx onnxruntime "
                          "(or pip install 'companion[web]')") from err


class _LastLogits(torch.nn.Module):
    """``input_ids [1, T]`` -> logits of the last position, with an explicit all-ones mask.

    Passing the mask keeps transformers from looking for packed sequences in the position
    ids (``torch.diff``, which the TorchScript exporter cannot translate).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(input_ids)
        return self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[:, -1, :]


def check_quantize(quantize: str) -> str:
    """``quantize`` if it is one of ``QUANTIZE_FORMATS``, else a ValueError that names the choices."""
    if quantize not in QUANTIZE_FORMATS:
        raise ValueError(f"quantize={quantize!r} is not a known format; choose one of {list(QUANTIZE_FORMATS)} "
                         "(fp16: half the fp32 size, same answers; int8: a quarter; fp32: the exact weights)")
    return quantize


def _shared_transposes(weights: dict[str, np.ndarray]) -> dict[str, str]:
    """``{name: source}`` for every 2-D weight that is exactly another one transposed (tied embeddings)."""
    derived: dict[str, str] = {}
    for name, w in weights.items():
        for source, v in weights.items():
            if (w.ndim == 2 and source != name and source not in derived and v.shape == w.shape[::-1]
                    and np.array_equal(v.T, w)):
                derived[name] = source
                break
    return derived


def _int8(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 of ``w`` with one scale per slice along ``axis`` reduced (``None``: one scale)."""
    scale = (np.abs(w).max(axis=axis, keepdims=True) / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale


def compact_weights(graph_model, quantize: str):
    """Store the big float32 weights of an ONNX model compactly; the graph restores float32 at load time.

    ``fp16``: each weight is stored as float16 and a ``Cast`` gives float32 back.  ``int8``: each
    weight is stored as int8 with one float32 scale per output unit (a MatMul's column, an
    embedding's row), restored by ``Cast`` and ``Mul``.  A weight that is another one transposed
    (the tied embedding and output layer) is stored once.  onnxruntime folds these constant
    nodes when it loads the model, so it computes in float32, as fast as the float32 file, with
    plain ONNX ops that onnxruntime-web runs too.  (onnxruntime's dynamic int8 quantization also
    quantizes the activations; on the tiny SFT model it agreed with PyTorch on 95% of greedy
    tokens, against 99.2% here and 100% for fp16.)
    """
    from onnx import TensorProto, helper, numpy_helper

    check_quantize(quantize)
    graph = graph_model.graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer
               if i.data_type == TensorProto.FLOAT and int(np.prod(i.dims)) >= 1024}
    uses: dict[str, set] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            uses.setdefault(name, set()).add((node.op_type, k))
    derived = _shared_transposes(weights)
    kept = [i for i in graph.initializer if i.name not in weights]
    restore, transposes = [], []
    for name, w in weights.items():
        if name in derived:
            transposes.append(helper.make_node("Transpose", [derived[name]], [name], perm=[1, 0], name=f"{name}/T"))
        elif quantize == "fp32":
            kept.append(numpy_helper.from_array(w, name))
        elif quantize == "fp16":
            kept.append(numpy_helper.from_array(w.astype(np.float16), f"{name}/fp16"))
            restore.append(helper.make_node("Cast", [f"{name}/fp16"], [name], to=TensorProto.FLOAT, name=f"{name}/cast"))
        else:
            per_column = w.ndim == 2 and uses.get(name, set()) <= {("MatMul", 1)}
            q, scale = _int8(w, axis=(0 if per_column else 1) if w.ndim == 2 else None)
            kept += [numpy_helper.from_array(q, f"{name}/int8"), numpy_helper.from_array(scale, f"{name}/scale")]
            restore += [helper.make_node("Cast", [f"{name}/int8"], [f"{name}/float"], to=TensorProto.FLOAT,
                                         name=f"{name}/cast"),
                        helper.make_node("Mul", [f"{name}/float", f"{name}/scale"], [name], name=f"{name}/dequant")]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(restore + transposes + nodes)
    return graph_model


def export_onnx(model, tokenizer, out_dir: str | Path, quantize: str = "fp16", name: str = "model") -> Path:
    """Write ``model`` as ``out_dir/{name}.{quantize}.onnx`` and return its path.

    The graph maps ``input_ids`` (int64 ``[1, T]``, any T) to ``logits`` (float32 ``[1, vocab]``,
    the last position).  ``quantize`` is how the weights are stored (see :func:`compact_weights`):
    ``fp16`` (half the size; on the book's models 99.8-100% of greedy tokens as PyTorch's), ``int8``
    (a quarter; 98.6-99.2%, so long answers drift) or ``fp32``.  The caller's model is not changed (a CPU float32 copy is exported).
    """
    onnx = _need("onnx")
    check_quantize(quantize)
    if getattr(model, "config", None) is None or not hasattr(model, "get_input_embeddings"):
        raise TypeError(f"model must be a transformers causal LM (e.g. LlamaForCausalLM), got {type(model).__name__}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.{quantize}.onnx"
    cpu = copy.deepcopy(model).to("cpu", torch.float32).eval()
    cpu.set_attn_implementation("eager")  # plain ops; the sdpa path bakes the traced length's is_causal in
    example = torch.tensor([[tokenizer.convert_tokens_to_ids("<|im_start|>")] + [tokenizer.eos_token_id] * 7])
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # the TorchScript exporter's deprecation notice, and tracer warnings about shapes read as Python
        # numbers: with the all-ones mask they hold for every T (tests/test_export.py checks several lengths)
        warnings.simplefilter("ignore")
        traced = Path(tmp) / "traced.onnx"
        with torch.no_grad():
            torch.onnx.export(_LastLogits(cpu), (example,), str(traced), input_names=["input_ids"],
                              output_names=["logits"], dynamic_axes={"input_ids": {1: "T"}},
                              opset_version=18, dynamo=False)
        compact = compact_weights(onnx.load(str(traced)), quantize)
    onnx.checker.check_model(compact)
    onnx.save(compact, str(target))
    return target


def onnx_session(path_or_session):
    """An onnxruntime InferenceSession (CPU, one thread) for a path; a session is returned as is."""
    ort = _need("onnxruntime")

    if isinstance(path_or_session, ort.InferenceSession):
        return path_or_session
    path = Path(path_or_session)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}: export one with companion.export.export_onnx(...)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(path_or_session, input_ids: Sequence[int]) -> np.ndarray:
    """The ONNX model's logits of the last position after ``input_ids``: float32 ``[vocab]``."""
    session = onnx_session(path_or_session)
    ids = np.asarray([list(input_ids)], dtype=np.int64)
    return session.run(["logits"], {"input_ids": ids})[0][0]


def chat_prompt_ids(tokenizer, prompt: str | Sequence[Mapping]) -> list[int]:
    """Token ids of a user prompt (or a list of messages) in the chat format, ending with the assistant header."""
    from companion import validation

    if not isinstance(prompt, str):
        validation.chat_messages("prompt", prompt)
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def greedy_ids(path_or_session, prompt_ids: Sequence[int], max_new_tokens: int, stop_ids: Sequence[int],
               context_length: int | None = None) -> list[int]:
    """Greedy continuation of ``prompt_ids`` (the stop token included, when one is reached).

    Stops after ``max_new_tokens``, at a stop id, or when the sequence fills ``context_length``.
    """
    from companion import validation

    max_new_tokens = validation.integer("max_new_tokens", max_new_tokens, minimum=0)
    if context_length is not None:
        context_length = validation.integer("context_length", context_length, minimum=1)
    if isinstance(stop_ids, numbers.Integral | str) or not all(isinstance(i, numbers.Integral) for i in stop_ids):
        raise TypeError(f"stop_ids must be a list of token ids, got {stop_ids!r}"
                        + (f"; wrap it in a list: [{stop_ids}]" if isinstance(stop_ids, numbers.Integral) else ""))
    session = onnx_session(path_or_session)
    ids, new = list(prompt_ids), []
    while len(new) < max_new_tokens and (context_length is None or len(ids) < context_length):
        token = int(np.argmax(onnx_logits(session, ids)))
        ids.append(token)
        new.append(token)
        if token in stop_ids:
            break
    return new


def onnx_greedy(path_or_session, tokenizer, prompt: str | Sequence[Mapping], max_new_tokens: int = 160,
                context_length: int | None = None) -> str:
    """The ONNX model's greedy answer to ``prompt`` (a user message or a list of messages).

    The same recipe as ``companion.sft.chat_responses(..., temperature=0)``: the chat template
    plus the assistant header, stop at ``<|im_end|>`` or EOS, special tokens dropped, stripped.
    """
    from companion.tokenizer import chat_stop_ids

    new = greedy_ids(path_or_session, chat_prompt_ids(tokenizer, prompt), max_new_tokens,
                     chat_stop_ids(tokenizer), context_length)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def web_tokenizer_data(tokenizer) -> dict:
    """What the browser needs to encode and decode like ``tokenizer``: vocab, merges, special tokens.

    Only the book's byte-level BPE is supported (ByteLevel pre-tokenizer with GPT-2's regex,
    no normalizer, ByteLevel decoder); anything else raises a ValueError that says what differs.
    """
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model, pre, dec = spec.get("model", {}), spec.get("pre_tokenizer") or {}, spec.get("decoder") or {}
    problems = []
    if model.get("type") != "BPE":
        problems.append(f"model {model.get('type')!r} (want 'BPE')")
    if pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or not pre.get("use_regex", True):
        problems.append(f"pre_tokenizer {pre} (want ByteLevel, add_prefix_space=False, use_regex=True)")
    if dec.get("type") != "ByteLevel":
        problems.append(f"decoder {dec.get('type')!r} (want 'ByteLevel')")
    if spec.get("normalizer"):
        problems.append(f"normalizer {spec['normalizer'].get('type')!r} (want none)")
    if problems:
        raise ValueError("the browser tokenizer only speaks the book's byte-level BPE; this tokenizer has "
                         + "; ".join(problems) + ". Export a tiny-profile model (companion.tokenizer.train_bpe_tokenizer).")
    vocab = dict(model["vocab"])
    for t in spec.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError("the tokenizer's ids are not 0..N-1 without gaps; the browser file lists tokens by id")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return {"vocab": sorted(vocab, key=vocab.get), "merges": merges, "pattern": GPT2_PATTERN,
            "special_tokens": {t["content"]: t["id"] for t in spec.get("added_tokens", []) if t.get("special")}}


def write_web_tokenizer(tokenizer, out_dir: str | Path) -> Path:
    """Write :func:`web_tokenizer_data` as ``out_dir/bpe.json`` (compact JSON) and return its path."""
    path = Path(out_dir) / TOKENIZER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(web_tokenizer_data(tokenizer), ensure_ascii=False, separators=(",", ":")))
    return path


def tokenizer_from_web(path: str | Path):
    """A transformers tokenizer rebuilt from a ``bpe.json`` (the page's tokenizer, as Python sees it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from companion.tokenizer import wrap_tokenizer

    data = json.loads(Path(path).read_text())
    merges = [tuple(m.split(" ")) for m in data["merges"]]
    raw = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(data["vocab"])}, merges=merges))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens(sorted(data["special_tokens"], key=data["special_tokens"].get))
    return wrap_tokenizer(raw)


def default_prompts() -> list[str]:
    """The prompts of chapter 10's chat widget: four held-out tiny-world requests and two off-world questions."""
    from companion import tinyworld

    return [s.instruction for s in tinyworld.held_out_prompts(4, seed=99)] + [
        "What is the capital of France?", "Write a poem about the sea."]


def check_web_stages(stages: Sequence[str] | str) -> list[str]:
    """The stage names as a list, or a ValueError naming an unknown (or non-chat) stage."""
    names = [s.strip() for s in stages.split(",")] if isinstance(stages, str) else list(stages)
    names = [s for s in names if s]
    if not names:
        raise ValueError(f"stages={stages!r} is empty; give some of {list(CHAT_STAGES)}, e.g. 'base,sft,dpo'")
    unknown = [s for s in names if s not in CHAT_STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown} in stages={stages!r}; the chat models are {list(CHAT_STAGES)} "
                         "(the tokenizer and the reward model are not chat models)")
    if len(set(names)) != len(names):
        raise ValueError(f"stages={stages!r} names a stage twice")
    return names


def check_chat_format(tokenizer) -> None:
    """Raise unless ``tokenizer``'s chat template renders a user turn as the page does (USER_TURN + ASSISTANT_HEADER)."""
    messages = [{"role": "user", "content": "Hi."}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    page = USER_TURN.format(content="Hi.") + ASSISTANT_HEADER
    if rendered != page:
        raise ValueError(f"the tokenizer's chat template renders {rendered!r}, the page would send {page!r}; "
                         "export models that use the book's ChatML template (companion.tokenizer.CHAT_TEMPLATE)")


def _not_exportable(stage: str, profile_name: str) -> str | None:
    """Why cached stage ``stage`` cannot be loaded without training (missing, or made by an older recipe), or None."""
    from companion import artifacts, pipeline

    if not artifacts.exists(stage, profile_name):
        return f"{stage!r} is not cached in {artifacts.artifact_dir(stage, profile_name)}"
    want = pipeline.RECIPES.get(stage)
    have = artifacts.metadata(stage, profile_name).get("recipe")
    if want is not None and have != want:
        return f"the cached {stage!r} was made by recipe {have!r}, the book now makes {want!r} (loading it would retrain)"
    return None


def export_web(stages: Sequence[str] | str = DEFAULT_WEB_STAGES, out_dir: str | Path = "_build/chat",
               profile=None, quantize: str = "fp16", prompts: Sequence[str] | None = None,
               max_new_tokens: int = 120, skip_missing: bool = False) -> Path:
    """Export the cached ``stages`` for the browser into ``out_dir``; returns the manifest's path.

    Writes ``{stage}.{quantize}.onnx`` per stage, ``bpe.json``, ``recorded.json`` (every exported
    model's greedy answers to ``prompts``, by default chapter 10's, computed from the ONNX files so
    the page's fallback shows what its models say) and ``manifest.json``.  A stage whose artifact is
    not cached raises FileNotFoundError (nothing is trained here), or is left out with
    ``skip_missing=True``.
    """
    from companion import pipeline, runner, validation
    from companion.profiles import profile as active_profile
    from companion.tokenizer import IM_END, chat_stop_ids

    check_quantize(quantize)
    names = check_web_stages(stages)
    max_new_tokens = validation.integer("max_new_tokens", max_new_tokens, minimum=1)
    if prompts is not None:
        prompts = validation.prompt_list("prompts", prompts)
    p = active_profile(profile) if isinstance(profile, str) or profile is None else profile
    problems = {s: why for s in names if (why := _not_exportable(s, p.name))}
    missing = list(problems)
    if missing and not skip_missing:
        raise FileNotFoundError(
            f"cannot export stage(s) {missing} of the {p.name!r} profile: {'; '.join(problems.values())}. "
            "export-web exports cached models and trains nothing: build them first (`make notebooks`, or "
            f"`companion build {missing[0]}`), or pass skip_missing=True (--skip-missing) to export the others.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.onnx"), out / RECORDED_FILE]:
        old.unlink(missing_ok=True)
    prompts = list(prompts) if prompts is not None else default_prompts()
    models, replies, tokenizer = [], {}, None
    for stage in (s for s in names if s not in missing):
        model, tok = pipeline.STAGES[stage](p)
        if tokenizer is None:
            check_chat_format(tok)
            tokenizer = tok
            write_web_tokenizer(tok, out)
        elif tok.get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"stage {stage!r} has a different tokenizer from {models[0]['stage']!r}; "
                             "one page tokenizer serves every model, so export them separately")
        path = export_onnx(model, tok, out, quantize, name=stage)
        label = runner.MODEL_NAMES[stage]
        session = onnx_session(path)
        context = getattr(model.config, "max_position_embeddings", None)
        replies[label] = [onnx_greedy(session, tok, q, max_new_tokens, context) for q in prompts]
        models.append({"stage": stage, "label": label, "file": path.name, "bytes": path.stat().st_size,
                       "quantize": quantize, "parameters": sum(t.numel() for t in model.parameters())})
    manifest = {"format": 1, "profile": p.name, "models": models, "skipped": problems,
                "max_new_tokens": max_new_tokens, "recorded": RECORDED_FILE if models else None}
    if tokenizer is not None:
        manifest.update(tokenizer=TOKENIZER_FILE, context_length=context, stop_ids=chat_stop_ids(tokenizer),
                        eos_id=tokenizer.eos_token_id, im_end_id=tokenizer.convert_tokens_to_ids(IM_END),
                        chat_format={"user": USER_TURN, "assistant": ASSISTANT_HEADER})
        (out / RECORDED_FILE).write_text(json.dumps(
            {"prompts": prompts, "models": [m["label"] for m in models], "replies": replies}, ensure_ascii=False))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return out / MANIFEST
