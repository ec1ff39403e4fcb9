"""The gpu profile's PPO path, offline: SmolLM2- and reward-model-shaped stand-ins in local folders.

The chat model mimics SmolLM2-135M-Instruct (ChatML, PAD = EOS = ``<|im_end|>``, no
``<|pad|>`` in the vocabulary); the reward model mimics a Hub encoder such as
OpenAssistant/reward-model-deberta-v3 (its own WordPiece vocabulary, no chat template).
"""

from __future__ import annotations

import copy
import math
import string
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer, PreTrainedTokenizerFast

from companion import pipeline, ppo, reward, tinyworld
from companion.models import load_pretrained, tiny_config
from companion.tokenizer import IM_END, IM_START, PAD, chat_stop_ids, ensure_distinct_pad

# SmolLM2-Instruct's chat template: ChatML with a default system prompt.
SMOL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [s.messages()[0]["content"] for s in tinyworld.held_out_prompts(16)] + [
    "Once upon a time, there was a little dog named Max. Max liked to run in the park.",
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face.",
]


def smol_like_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with SmolLM2's special tokens: BOS <|im_start|>, EOS = PAD = <|im_end|>."""
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(CORPUS * 4, trainer=trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>", IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=IM_START, eos_token=IM_END, pad_token=IM_END,
                                  unk_token="<|endoftext|>")
    tok.chat_template = SMOL_TEMPLATE
    return tok


def save_chat_model(out: Path) -> Path:
    """A 2-layer, hidden-32 Llama with the SmolLM2-like tokenizer, saved as a checkpoint folder."""
    tok = smol_like_tokenizer()
    assert tok.pad_token_id == tok.eos_token_id == tok.convert_tokens_to_ids(IM_END) and PAD not in tok.get_vocab()
    torch.manual_seed(0)
    cfg = tiny_config(len(tok), n_layer=2, n_head=2, n_embd=32, intermediate_size=64, context_length=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    from transformers import LlamaForCausalLM

    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def save_reward_model(out: Path) -> Path:
    """A tiny BERT regression head (num_labels=1) with its own WordPiece vocabulary, no chat template."""
    words = sorted({w.strip(string.punctuation).lower() for t in CORPUS for w in t.split()} - {""})
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *[f"##{c}" for c in chars], *words]
    # transformers 5 takes the vocabulary itself (``vocab=``); a ``vocab_file=`` keyword is silently ignored
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)
    assert tok.unk_token_id not in tok(CORPUS[0])["input_ids"]
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=1, pad_token_id=tok.pad_token_id)
    BertForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def gpu_dirs(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """The gpu profile (on CPU) with its chat and reward models pointed at local stand-ins."""
    chat, rm = save_chat_model(tmp_path / "chat"), save_reward_model(tmp_path / "rm")
    monkeypatch.setenv("COMPANION_PROFILE", "gpu")
    monkeypatch.setenv("COMPANION_CHAT_MODEL", str(chat))
    monkeypatch.setenv("COMPANION_REWARD_MODEL", str(rm))
    return chat, rm


def prompts(n: int = 4):
    return tinyworld.prompt_dataset(tinyworld.held_out_prompts(n))


def test_gpu_ppo_components_train_lora_against_a_hub_style_reward_model(gpu_dirs):
    parts = pipeline.ppo_components()
    policy, tok, rm, rm_tok = parts["policy"], parts["tokenizer"], parts["reward_model"], parts["reward_tokenizer"]
    # the PAD = EOS tokenizer got a distinct <|pad|>, and the embeddings grew to hold it
    assert tok.pad_token == PAD and tok.pad_token_id not in chat_stop_ids(tok)
    assert chat_stop_ids(tok) == [tok.convert_tokens_to_ids(IM_END)]
    assert policy.get_input_embeddings().weight.shape[0] == len(tok)
    assert policy.config.pad_token_id == policy.generation_config.pad_token_id == tok.pad_token_id
    assert hasattr(policy, "disable_adapter") and hasattr(policy, "peft_config")  # a PEFT model
    assert parts["value_model"] is None
    assert isinstance(rm, BertForSequenceClassification) and rm.config.num_labels == 1
    assert rm_tok.chat_template is None and rm_tok.vocab_size != len(tok)

    base = {k: v.detach().clone() for k, v in policy.named_parameters() if "lora_" not in k}
    lora = {k: v.detach().clone() for k, v in policy.named_parameters() if "lora_" in k}
    assert lora and all(p.requires_grad for n, p in policy.named_parameters() if "lora_" in n)
    probe = torch.tensor([tok.apply_chat_template(prompts(1)[0]["prompt"], add_generation_prompt=True,
                                                  return_dict=True)["input_ids"]])
    with torch.no_grad():
        base_logits = policy(probe).logits

    cfg = ppo.PPOConfig(steps=2, batch_size=4, max_new_tokens=8, num_ppo_epochs=2, learning_rate=1e-2,
                        use_cpu=True)
    tr = ppo.PPOTrainer(cfg, policy, tok, prompts(4), reward_model=rm, reward_tokenizer=rm_tok, value_model=None)
    assert tr.is_peft and tr.ref_model is None  # the reference is the adapter-off base
    rollouts = []
    sample = tr.rollout
    tr.rollout = lambda rows: rollouts.append(sample(rows)) or rollouts[-1]
    hist = tr.train(progress=False)

    assert len(hist["objective/scores"]) == 2
    for key in ("objective/scores", "objective/kl", "objective/rlhf_reward", "loss/value_avg"):
        assert all(math.isfinite(v) for v in hist[key]), key
    first = rollouts[0]
    assert torch.allclose(first.logprobs, first.ref_logprobs, atol=1e-5)  # LoRA starts as the identity
    assert abs(hist["objective/kl"][0]) < 1e-4
    assert torch.isfinite(first.raw_scores).all() and first.raw_scores.abs().sum() > 0
    # the reward model read the decoded text re-tokenized with its own WordPiece vocabulary
    direct = reward.score(rm, rm_tok, [r["prompt"] for r in first.rows], first.texts)
    assert torch.allclose(first.raw_scores, direct, atol=1e-6)

    # only the adapters and the value head moved; the frozen base is what the reference reads
    for name, p in tr.policy.named_parameters():
        if "lora_" not in name:
            assert torch.equal(p.detach(), base[name]), name
    assert any(not torch.equal(p.detach(), lora[n]) for n, p in tr.policy.named_parameters() if "lora_" in n)
    head = tr.accelerator.unwrap_model(tr.model).value_head
    assert head is not None and head.summary.weight.abs().sum() > 0
    trainable = {n for n, p in tr.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("value_head.") for n in trainable)
    with torch.no_grad(), tr.policy.disable_adapter():
        assert torch.allclose(tr.policy(probe).logits, base_logits, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(tr.policy(probe).logits, base_logits, atol=1e-5)  # the adapted policy moved


def test_pad_equal_to_eos_is_refused_and_ensure_distinct_pad_is_idempotent(gpu_dirs, small_tokenizer):
    chat, rm_dir = gpu_dirs
    policy, tok = load_pretrained(str(chat))
    rm = BertForSequenceClassification.from_pretrained(rm_dir)
    rm_tok = BertTokenizer.from_pretrained(rm_dir)
    assert tok.pad_token_id in chat_stop_ids(tok)
    cfg = ppo.PPOConfig(steps=1, batch_size=2, max_new_tokens=4, use_cpu=True)
    with pytest.raises(ValueError, match="PAD token"):
        ppo.PPOTrainer(cfg, policy, tok, prompts(2), reward_model=rm, reward_tokenizer=rm_tok)

    n_vocab = len(tok)
    assert ensure_distinct_pad(tok, policy) is True
    assert len(tok) == n_vocab + 1 and policy.get_input_embeddings().weight.shape[0] == len(tok)
    assert ensure_distinct_pad(tok, policy) is False and len(tok) == n_vocab + 1  # a second call changes nothing
    ppo.PPOTrainer(cfg, policy, tok, prompts(2), reward_model=rm, reward_tokenizer=rm_tok)  # now accepted

    tiny = copy.deepcopy(small_tokenizer)  # our own tokenizer already has a distinct <|pad|>
    before = (tiny.pad_token_id, len(tiny))
    assert ensure_distinct_pad(tiny) is False and (tiny.pad_token_id, len(tiny)) == before
