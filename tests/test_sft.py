"""SFT: chat template, assistant-only masking, data checks, training, LoRA wiring and merging."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from companion import sft
from companion.models import build_causal_lm
from companion.profiles import profile

CONV = [{"role": "user", "content": "Hi there."}, {"role": "assistant", "content": "Hello, Lily."}]


@pytest.fixture
def tiny_model(small_tokenizer):
    return build_causal_lm(small_tokenizer, profile("tiny"), n_layer=1, n_embd=32, n_head=2,
                           intermediate_size=64, context_length=64)


def _data(n: int = 8) -> Dataset:
    return Dataset.from_list([{"messages": CONV} for _ in range(n)])


def _args(tmp_path, **kw):
    base = dict(max_steps=6, per_device_train_batch_size=4, learning_rate=5e-3, logging_steps=1,
                warmup_steps=0, disable_tqdm=True, max_length=64)
    return sft.sft_config(str(tmp_path / "run"), **{**base, **kw})


def test_chat_template_round_trip(small_tokenizer):
    text = small_tokenizer.apply_chat_template(CONV, tokenize=False)
    assert text == ("<|im_start|>user\nHi there.<|im_end|>\n"
                    "<|im_start|>assistant\nHello, Lily.<|im_end|>\n")
    ids = small_tokenizer.apply_chat_template(CONV, tokenize=True, return_dict=True)["input_ids"]
    assert small_tokenizer.decode(ids) == text  # lossless: text -> ids -> the same text
    prompt = small_tokenizer.apply_chat_template(CONV[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and text.startswith(prompt)


def test_assistant_mask_exact_positions(small_tokenizer):
    ids, mask = sft.assistant_mask(small_tokenizer, CONV)
    tok = small_tokenizer
    prefix = tok("<|im_start|>user\nHi there.<|im_end|>\n<|im_start|>assistant\n",
                 add_special_tokens=False)["input_ids"]
    answer = tok("Hello, Lily.<|im_end|>", add_special_tokens=False)["input_ids"]
    # mask: 0 on the prompt, 1 on the answer *and* its <|im_end|> (so the model learns to stop),
    # 0 on the trailing newline
    assert mask == [0] * len(prefix) + [1] * len(answer) + [0]
    assert ids == prefix + answer + tok("\n", add_special_tokens=False)["input_ids"]
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "Hello, Lily.<|im_end|>"


def test_trl_labels_follow_the_assistant_mask(small_tokenizer, tiny_model, tmp_path):
    trainer = sft.SFTTrainer(model=tiny_model, args=_args(tmp_path), train_dataset=_data(2),
                             processing_class=small_tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    _, mask = sft.assistant_mask(small_tokenizer, CONV)
    labels = batch["labels"][0].tolist()
    assert [lab != -100 for lab in labels] == [bool(m) for m in mask]

    # all-token loss: every position is a label
    trainer = sft.SFTTrainer(model=tiny_model, args=_args(tmp_path, assistant_only_loss=False),
                             train_dataset=_data(2), processing_class=small_tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert (batch["labels"][0] != -100).all()


def test_bad_datasets_are_clear_errors():
    with pytest.raises(ValueError, match="'messages' column"):
        sft.check_sft_dataset(Dataset.from_list([{"text": "hello"}]))
    empty = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]
    with pytest.raises(ValueError, match="row 1 has an empty assistant turn"):
        sft.check_sft_dataset(Dataset.from_list([{"messages": CONV}, {"messages": empty}]))
    with pytest.raises(ValueError, match="no assistant turn"):
        sft.check_sft_dataset(Dataset.from_list([{"messages": CONV[:1]}]))


def test_train_sft_lowers_the_answer_loss(small_tokenizer, tiny_model, tmp_path):
    before = sft.answer_loss(tiny_model, small_tokenizer, _data(1))
    res = sft.train_sft(tiny_model, small_tokenizer, _data(), args=_args(tmp_path, learning_rate=2e-2))
    after = sft.answer_loss(res.model, small_tokenizer, _data(1))
    assert after < before - 1.0
    assert len(res.history["train_loss"]) == 6 and res.trainable_params == res.total_params


def test_lora_trains_only_the_adapter_and_merges(small_tokenizer, tiny_model, tmp_path):
    base_state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    res = sft.train_sft(tiny_model, small_tokenizer, _data(), args=_args(tmp_path, learning_rate=2e-2),
                        peft_config=sft.lora_config(r=4, alpha=8))
    model = res.model
    assert 0 < res.trainable_params < res.total_params / 5
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # the frozen base weights did not move; the adapters (lora_B starts at zero) did
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(p.detach(), base_state[key]), name
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)

    x = torch.tensor([sft.assistant_mask(small_tokenizer, CONV)[0]])
    with torch.no_grad():
        adapted = model(x).logits
        merged = sft.merge_lora(model)
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        assert torch.allclose(merged(x).logits, adapted, atol=1e-4)
    with pytest.raises(ValueError, match="PeftModel"):
        sft.merge_lora(merged)


def test_lora_trainable_tokens_train_only_those_embedding_rows(small_tokenizer, tiny_model, tmp_path):
    ids = sft.chat_token_ids(small_tokenizer)
    assert small_tokenizer.convert_ids_to_tokens(ids) == ["<|im_start|>", "<|im_end|>"]
    before = tiny_model.get_input_embeddings().weight.detach().clone()
    res = sft.train_sft(tiny_model, small_tokenizer, _data(), args=_args(tmp_path, learning_rate=2e-2),
                        peft_config=sft.lora_config(r=4, alpha=8, trainable_tokens=ids))
    after = sft.merge_lora(res.model).get_input_embeddings().weight.detach()
    changed = sorted(torch.nonzero((after - before).abs().sum(dim=1) > 0).flatten().tolist())
    assert changed == sorted(ids)  # the marker rows moved, every other row is still the base model's


def test_chat_token_ids_needs_the_markers():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")),
                                   unk_token="[UNK]")
    with pytest.raises(ValueError, match="ensure_chat_template"):
        sft.chat_token_ids(bare)


def test_chat_responses_stop_at_end_of_turn(small_tokenizer, tiny_model, tmp_path):
    res = sft.train_sft(tiny_model, small_tokenizer, _data(16), args=_args(tmp_path, learning_rate=2e-2,
                                                                           max_steps=30))
    replies = sft.chat_responses(res.model, small_tokenizer, [CONV[:1], CONV[:1]], max_new_tokens=20)
    assert replies == ["Hello, Lily.", "Hello, Lily."]


def test_plain_text_and_config_defaults():
    assert sft.to_plain_text(CONV, eos="<|endoftext|>") == "Hi there.\nHello, Lily.<|endoftext|>"
    cfg = sft.sft_config("/tmp/x")
    assert cfg.assistant_only_loss and cfg.max_length == 256 and cfg.learning_rate == 3e-3
    assert not cfg.gradient_checkpointing and sft.sft_config("/tmp/x", max_steps=5).max_steps == 5
    with pytest.raises(ValueError, match="rank"):
        sft.lora_config(r=0)


def test_answer_loss_is_the_same_batched_or_not(small_tokenizer, tiny_model):
    long = [{"role": "user", "content": "Tell me about Max."},
            {"role": "assistant", "content": "Max was a little dog. He liked to run in the park."}]
    data = Dataset.from_list([{"messages": CONV}, {"messages": long}])
    one, two = (sft.answer_loss(tiny_model, small_tokenizer, data, batch_size=b) for b in (1, 2))
    assert one == pytest.approx(two, rel=1e-5)
    # a random model is about uniform: loss close to log(vocabulary size)
    assert abs(one - torch.log(torch.tensor(len(small_tokenizer))).item()) < 1.0


def test_logits_loss_trainer_computes_trl_s_loss(small_tokenizer, tiny_model, tmp_path):
    # The CPU trainer must give the same loss (and so the same gradients) as TRL's fused head.
    data = Dataset.from_list([{"messages": CONV},
                              {"messages": [CONV[0], {"role": "assistant", "content": "Lily ran to the park."}]}])
    fused = sft.SFTTrainer(model=tiny_model, args=_args(tmp_path), train_dataset=data,
                           processing_class=small_tokenizer)
    batch = fused.data_collator([fused.train_dataset[i] for i in range(2)])
    n = int((batch["labels"][:, 1:] != -100).sum())
    want = fused.compute_loss(tiny_model, dict(batch), num_items_in_batch=n).item()
    plain = sft.LogitsLossSFTTrainer(model=tiny_model, args=_args(tmp_path), train_dataset=data,
                                     processing_class=small_tokenizer)
    got = plain.compute_loss(tiny_model, dict(batch), num_items_in_batch=n).item()
    assert got == pytest.approx(want, rel=1e-4)
    assert 5.0 < got < 12.0  # an untrained model: about ln(vocab size)


def test_train_sft_picks_the_logits_loss_trainer_on_cpu(small_tokenizer, tiny_model, tmp_path):
    res = sft.train_sft(tiny_model, small_tokenizer, _data(), args=_args(tmp_path, max_steps=1))
    assert type(res.trainer) is sft.LogitsLossSFTTrainer
    res = sft.train_sft(tiny_model, small_tokenizer, _data(), args=_args(tmp_path, max_steps=1), logits_loss=False)
    assert type(res.trainer) is sft.SFTTrainer


def test_a_static_cache_writes_the_same_answers_as_the_default_cache(small_tokenizer, tiny_model):
    from companion.sampling import cache_kwargs

    assert cache_kwargs(tiny_model, 32) == {"cache_implementation": "static"} and cache_kwargs(tiny_model, 16) == {}
    convs = [[{"role": "user", "content": f"Tell a story about {w}."}] for w in ("Lily", "a dog", "Max", "the sun")] * 8
    default = sft.chat_responses(tiny_model, small_tokenizer, convs, max_new_tokens=20, batch_size=32,
                                 suppress_tokens=[0, 1, 2, 3])  # no special tokens: text
    static = sft.chat_responses(tiny_model, small_tokenizer, convs, max_new_tokens=20, batch_size=32,
                                suppress_tokens=[0, 1, 2, 3], **cache_kwargs(tiny_model, 32))
    assert static == default
