"""The surname -> language pipeline: encoding, padding/packing, training, save/load, metrics."""

from __future__ import annotations

import pytest
import torch

from companion.names import (
    ALL_LETTERS,
    N_LETTERS,
    NameRNN,
    NamesData,
    NamesTrainConfig,
    collate_names,
    confusion_matrix,
    load_classifier,
    majority_baseline,
    name_to_indices,
    names_data,
    names_loader,
    one_hot,
    predict_topk,
    save_classifier,
    stratified_split,
    to_ascii,
    train_classifier,
)

ROWS = [{"name": n, "language": "Chinese"} for n in ["Zhang", "Wang", "Li", "Zhao", "Chen", "Liu"]] + [
    {"name": n, "language": "Russian"} for n in ["Ivanov", "Petrov", "Smirnov", "Volkov", "Popov", "Sokolov"]
] + [{"name": "Mueller", "language": "German"}, {"name": "Schmidt", "language": "German"}]


def test_letters_and_one_hot():
    assert N_LETTERS == 57 and ALL_LETTERS[:3] == "abc"
    assert to_ascii("Ślusàrski") == "Slusarski"
    assert name_to_indices("ab") == [0, 1]
    x = one_hot("Lucy")
    assert x.shape == (4, 57)
    assert x.sum().item() == 4 and x[0, ALL_LETTERS.index("L")] == 1
    with pytest.raises(ValueError, match="no letters"):
        name_to_indices("陈")


def test_names_data_and_split():
    data = names_data(ROWS)
    assert data.languages == ["Chinese", "German", "Russian"]
    assert data.labels[0] == 0 and data.labels[-1] == 1
    train, val = stratified_split(data, 0.2, seed=0)
    assert len(train) + len(val) == len(data)
    assert set(train.names).isdisjoint(val.names)
    assert sorted(val.class_counts().values()) == [1, 1, 1]  # one per language
    assert majority_baseline(train, val)[0] in ("Chinese", "Russian")


def test_collate_pads_and_reports_lengths():
    x, lengths, y = collate_names([(one_hot("Li"), 0), (one_hot("Ivanov"), 2)])
    assert x.shape == (2, 6, 57)
    assert lengths.tolist() == [2, 6]
    assert y.tolist() == [0, 2]
    assert x[0, 2:].abs().sum() == 0  # padding rows are zero


def test_packing_makes_padding_irrelevant():
    torch.manual_seed(0)
    model = NameRNN(3, hidden_size=16).eval()
    alone = model(one_hot("Li"))
    x, lengths, _ = collate_names([(one_hot("Li"), 0), (one_hot("Sokolov"), 2)])
    batched = model(x, lengths)
    assert torch.allclose(alone[0], batched[0], atol=1e-6)
    unpacked = model(x)  # without lengths the RNN also reads the zero rows
    assert not torch.allclose(alone[0], unpacked[0], atol=1e-4)


def test_training_learns_a_tiny_dataset_and_round_trips(tmp_path):
    data = NamesData(["Zhang", "Wang", "Ivanov", "Petrov"] * 8, [0, 0, 1, 1] * 8, ["Chinese", "Russian"])
    torch.manual_seed(0)
    model = NameRNN(2, hidden_size=32)
    hist = train_classifier(model, data, data, NamesTrainConfig(epochs=15, batch_size=8, learning_rate=1e-2))
    assert hist["val_acc"][-1] == 1.0
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    top = predict_topk(model, "Ivanov", data.languages, k=2)
    assert top[0][0] == "Russian" and top[0][1] > 0.5
    assert sum(p for _, p in top) == pytest.approx(1.0, abs=1e-5)
    path = save_classifier(model, data.languages, tmp_path / "rnn.pt")
    loaded, langs = load_classifier(path)
    assert langs == data.languages
    assert torch.allclose(loaded(one_hot("Wang")), model.eval()(one_hot("Wang")))


def test_confusion_matrix():
    cm = confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert cm.sum() == 5 and cm.trace() == 3
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix([0, 1], [0], 2)


def test_real_names_loader(sample_data):
    from companion.data import load_dataset

    data = names_data(load_dataset("names", limit=None))
    assert len(data) == 20074 and len(data.languages) == 18
    x, lengths, y = next(iter(names_loader(data, batch_size=32)))
    assert x.shape[0] == 32 and x.shape[2] == 57 and x.shape[1] == lengths.max()
    assert y.max() < 18
