"""companion.export: the ONNX files of the in-page chat answer what the PyTorch models answer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from companion import artifacts, cli, export, pipeline  # noqa: E402
from companion.models import build_causal_lm  # noqa: E402
from companion.sft import chat_responses  # noqa: E402
from companion.tokenizer import chat_stop_ids  # noqa: E402

PROMPTS = ["Tell me about Lily.", "Max liked to run.", "Once upon a time"]
# the book's cache, read before conftest points COMPANION_CACHE at an empty folder for each test
BOOK_SFT = Path(os.environ.get("COMPANION_CACHE", ".cache/companion")) / "tiny" / "sft"


@pytest.fixture(scope="module")
def small_model(small_tokenizer):
    return build_causal_lm(small_tokenizer, n_layer=2, n_head=2, n_embd=64, intermediate_size=128,
                           context_length=64, seed=0).eval()


@pytest.fixture(scope="module")
def fp32_file(small_model, small_tokenizer, tmp_path_factory):
    return export.export_onnx(small_model, small_tokenizer, tmp_path_factory.mktemp("onnx"), "fp32", name="small")


def torch_last_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].numpy()


def test_fp32_logits_match_pytorch_at_every_length(small_model, small_tokenizer, fp32_file):
    assert fp32_file.name == "small.fp32.onnx"
    rng = np.random.default_rng(0)
    for length in (1, 5, 37):
        ids = rng.integers(4, len(small_tokenizer), length).tolist()
        np.testing.assert_allclose(export.onnx_logits(fp32_file, ids), torch_last_logits(small_model, ids),
                                   atol=1e-4, rtol=1e-4)


def test_fp32_greedy_answers_match_chat_responses(small_model, small_tokenizer, fp32_file):
    session = export.onnx_session(fp32_file)
    for prompt in PROMPTS:
        expected = chat_responses(small_model, small_tokenizer, [[{"role": "user", "content": prompt}]],
                                  max_new_tokens=12)[0]
        assert export.onnx_greedy(session, small_tokenizer, prompt, max_new_tokens=12) == expected


def test_fp16_file_is_the_model_with_fp16_weights(small_model, small_tokenizer, tmp_path):
    path = export.export_onnx(small_model, small_tokenizer, tmp_path, "fp16")
    rounded = build_causal_lm(small_tokenizer, n_layer=2, n_head=2, n_embd=64, intermediate_size=128,
                              context_length=64, seed=0).eval()
    rounded.load_state_dict({k: v.half().float() for k, v in small_model.state_dict().items()})
    ids = export.chat_prompt_ids(small_tokenizer, PROMPTS[0])
    np.testing.assert_allclose(export.onnx_logits(path, ids), torch_last_logits(rounded, ids), atol=1e-4, rtol=1e-4)


def test_compact_files_are_smaller_and_store_the_tied_embedding_once(small_model, small_tokenizer, fp32_file,
                                                                     tmp_path):
    import onnx

    sizes = {q: export.export_onnx(small_model, small_tokenizer, tmp_path, q).stat().st_size
             for q in ("fp16", "int8")}
    assert sizes["fp16"] < 0.6 * fp32_file.stat().st_size and sizes["int8"] < 0.4 * fp32_file.stat().st_size
    table = small_model.get_input_embeddings().weight.numel()
    for path in (fp32_file, tmp_path / "model.int8.onnx"):
        stored = [i.name for i in onnx.load(str(path)).graph.initializer if int(np.prod(i.dims)) == table]
        assert len(stored) == 1, f"{path.name} stores the tied embedding as {stored}"


def test_int8_logits_stay_close(small_model, small_tokenizer, fp32_file, tmp_path):
    path = export.export_onnx(small_model, small_tokenizer, tmp_path, "int8")
    ids = export.chat_prompt_ids(small_tokenizer, PROMPTS[1])
    exact, approx = export.onnx_logits(fp32_file, ids), export.onnx_logits(path, ids)
    assert np.abs(approx - exact).max() < 0.05 * np.abs(exact).max()


def teacher_forced_agreement(path, prompts_ids, continuations) -> float:
    """Share of positions where the file's argmax is PyTorch's greedy token, fed PyTorch's tokens."""
    session = export.onnx_session(path)
    hits = total = 0
    for ids, new in zip(prompts_ids, continuations):
        seq = list(ids)
        for token in new:
            hits += int(np.argmax(export.onnx_logits(session, seq))) == token
            total += 1
            seq.append(token)
    return hits / total


@pytest.mark.skipif(not (BOOK_SFT / artifacts.META_FILE).exists(),
                    reason=f"the book's SFT model is not cached in {BOOK_SFT} (chapter 4 builds it)")
def test_book_sft_model_fp16_and_int8_agree_with_pytorch(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(BOOK_SFT).eval(), AutoTokenizer.from_pretrained(BOOK_SFT)
    prompts = ["Tell me a story for kids. The main character is Amy, and the story must include a fish.",
               "Write a story about Max and a boat.", "What is the capital of France?"]
    prompt_ids = [export.chat_prompt_ids(tok, p) for p in prompts]
    continuations = []
    for ids in prompt_ids:
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=40, do_sample=False,
                                 eos_token_id=chat_stop_ids(tok), pad_token_id=tok.pad_token_id)
        continuations.append(out[0, len(ids):].tolist())
    agreement = {q: teacher_forced_agreement(export.export_onnx(model, tok, tmp_path, q), prompt_ids, continuations)
                 for q in ("fp16", "int8")}
    assert agreement["fp16"] >= 0.98 and agreement["int8"] >= 0.95, f"greedy-token agreement {agreement}"


def test_web_tokenizer_file_lists_the_vocab_by_id(small_tokenizer, tmp_path):
    data = json.loads(export.write_web_tokenizer(small_tokenizer, tmp_path).read_text())
    assert len(data["vocab"]) == len(small_tokenizer)
    assert all(small_tokenizer.convert_tokens_to_ids(t) == i for i, t in enumerate(data["vocab"]))
    assert data["special_tokens"] == {"<|endoftext|>": 0, "<|pad|>": 1, "<|im_start|>": 2, "<|im_end|>": 3}
    assert all(len(m.split(" ")) == 2 for m in data["merges"])


def test_a_tokenizer_the_page_cannot_speak_is_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="byte-level BPE.*WordLevel"):
        export.web_tokenizer_data(PreTrainedTokenizerFast(tokenizer_object=raw))


def test_bad_arguments_are_named(small_model, small_tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"quantize='int4'.*\['fp16', 'int8', 'fp32'\]"):
        export.export_onnx(small_model, small_tokenizer, tmp_path, "int4")
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['reward'\].*chat models"):
        export.export_web("base,reward", tmp_path)
    with pytest.raises(ValueError, match="quantize='q8'"):
        export.export_web("sft", tmp_path, quantize="q8")
    with pytest.raises(TypeError, match="transformers causal LM"):
        export.export_onnx(torch.nn.Linear(2, 2), small_tokenizer, tmp_path)
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        export.onnx_session(tmp_path / "missing.onnx")


def test_a_stage_that_is_not_cached_is_an_error_or_skipped(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"cannot export stage\(s\) \['sft'\].*companion build sft"):
        export.export_web("sft", tmp_path / "web")
    manifest = json.loads(export.export_web("sft", tmp_path / "web", skip_missing=True).read_text())
    assert manifest["models"] == [] and list(manifest["skipped"]) == ["sft"] and manifest["recorded"] is None
    with pytest.raises(ValueError, match="max_new_tokens"):
        export.export_web("sft", tmp_path / "web", max_new_tokens=0)
    assert cli.main(["export-web", "--out", str(tmp_path / "w2"), "--stages", "ppo"]) == 2
    assert "cannot export stage(s) ['ppo']" in capsys.readouterr().err


def test_export_web_writes_models_tokenizer_recorded_answers_and_manifest(small_model, small_tokenizer, tmp_path):
    def save(out: Path) -> dict:
        small_model.save_pretrained(out)
        small_tokenizer.save_pretrained(out)
        return {"recipe": pipeline.RECIPES["sft"]}

    artifacts.store("sft", save)
    out = tmp_path / "web"
    (out / "old.int8.onnx").parent.mkdir()
    (out / "old.int8.onnx").write_bytes(b"stale")
    assert cli.main(["export-web", "--out", str(out), "--stages", "sft", "--max-new-tokens", "6"]) == 0
    manifest = json.loads((out / export.MANIFEST).read_text())
    assert [m["label"] for m in manifest["models"]] == ["SFT"] and manifest["stop_ids"] == [0, 3]
    assert sorted(p.name for p in out.iterdir()) == ["bpe.json", "manifest.json", "recorded.json", "sft.fp16.onnx"]
    recorded = json.loads((out / export.RECORDED_FILE).read_text())
    assert recorded["prompts"] == export.default_prompts() and recorded["models"] == ["SFT"]
    session = export.onnx_session(out / "sft.fp16.onnx")
    assert recorded["replies"]["SFT"][0] == export.onnx_greedy(session, small_tokenizer, recorded["prompts"][0], 6)
