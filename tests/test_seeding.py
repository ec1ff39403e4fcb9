import pytest
import torch

from companion import seed_everything
from companion.models import build_causal_lm
from companion.profiles import TINY


def _losses(tokenizer, seed, steps=3):
    seed_everything(seed)
    model = build_causal_lm(tokenizer, TINY, n_layer=1, seed=None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        ids = torch.randint(0, len(tokenizer), (4, 16))
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_same_seed_same_losses(small_tokenizer):
    a = _losses(small_tokenizer, 123)
    b = _losses(small_tokenizer, 123)
    c = _losses(small_tokenizer, 124)
    assert a == b
    assert a != c
    assert a[-1] < a[0]  # three steps on the same distribution already lower the loss


def test_seed_must_be_non_negative_int():
    with pytest.raises(ValueError, match="non-negative int"):
        seed_everything(-1)
