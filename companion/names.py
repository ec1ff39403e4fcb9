"""Surname -> language: a character-level RNN classifier (the classic PyTorch project).

Each surname is a sequence of one-hot letters over 57 symbols (``a-z``, ``A-Z`` and
`` .,;'``).  An ``nn.RNN`` reads the letters one by one; its last hidden state summarizes
the name and a linear layer turns it into scores for the 18 languages.

Names have different lengths.  For minibatches we pad them to the longest name in the
batch and *pack* them (``pack_padded_sequence``), so the RNN stops at each name's real end
and the padding never touches the result.
"""

from __future__ import annotations

import string
import time
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

ALL_LETTERS = string.ascii_letters + " .,;'"
N_LETTERS = len(ALL_LETTERS)  # 57
_INDEX = {c: i for i, c in enumerate(ALL_LETTERS)}


# --------------------------------------------------------------------------- encoding
def to_ascii(name: str) -> str:
    """Strip accents and drop characters outside :data:`ALL_LETTERS` (``'Ślusàrski' -> 'Slusarski'``)."""
    decomposed = unicodedata.normalize("NFD", name)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn" and c in _INDEX)


def name_to_indices(name: str) -> list[int]:
    """Letter indices of an (ASCII-folded) name."""
    folded = to_ascii(name)
    if not folded:
        raise ValueError(f"name {name!r} has no letters from ALL_LETTERS after removing accents")
    return [_INDEX[c] for c in folded]


def one_hot(name: str) -> torch.Tensor:
    """(length, 57) one-hot matrix of a name: row i has a single 1 at the index of letter i."""
    idx = torch.tensor(name_to_indices(name))
    return F.one_hot(idx, N_LETTERS).float()


# --------------------------------------------------------------------------- data
@dataclass
class NamesData:
    """Names, integer labels and the label names (sorted languages)."""

    names: list[str]
    labels: list[int]
    languages: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: Sequence[int]) -> NamesData:
        return NamesData([self.names[i] for i in indices], [self.labels[i] for i in indices], self.languages)

    def class_counts(self) -> Counter:
        return Counter(self.languages[y] for y in self.labels)


def names_data(rows) -> NamesData:
    """Build :class:`NamesData` from rows ``{"name", "language"}`` (a list or a ``datasets.Dataset``).

    Names with no usable letter after accent folding are dropped.
    """
    rows = [r for r in rows if to_ascii(r["name"])]
    if not rows:
        raise ValueError("no names with usable letters: expected rows like {'name': 'Smith', 'language': 'English'}")
    languages = sorted({r["language"] for r in rows})
    index = {lang: i for i, lang in enumerate(languages)}
    return NamesData([r["name"] for r in rows], [index[r["language"]] for r in rows], languages)


def stratified_split(data: NamesData, val_fraction: float = 0.1, seed: int = 0) -> tuple[NamesData, NamesData]:
    """Hold out ``val_fraction`` of every language (at least one name each when possible)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    g = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(data.labels):
        by_class.setdefault(y, []).append(i)
    train_idx, val_idx = [], []
    for _, idx in sorted(by_class.items()):
        perm = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
        n_val = max(1, round(val_fraction * len(idx))) if len(idx) > 1 else 0
        val_idx += perm[:n_val]
        train_idx += perm[n_val:]
    return data.subset(sorted(train_idx)), data.subset(sorted(val_idx))


class NamesDataset(Dataset):
    """(one-hot letters of shape (length, 57), label) pairs."""

    def __init__(self, data: NamesData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return one_hot(self.data.names[i]), self.data.labels[i]


def collate_names(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad a batch: x (B, longest, 57) with zero rows after each name, lengths (B,), labels (B,)."""
    xs, ys = zip(*batch)
    lengths = torch.tensor([len(x) for x in xs])
    return pad_sequence(list(xs), batch_first=True), lengths, torch.tensor(ys)


def names_loader(data: NamesData, batch_size: int = 64, shuffle: bool = True, seed: int = 0) -> DataLoader:
    """A DataLoader of padded batches (see :func:`collate_names`)."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(NamesDataset(data), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=collate_names, generator=g)


# --------------------------------------------------------------------------- model
class NameRNN(nn.Module):
    """``nn.RNN(57 -> hidden)`` over the letters, then ``Linear(hidden -> n_classes)`` on the last state."""

    def __init__(self, n_classes: int, hidden_size: int = 128, n_letters: int = N_LETTERS,
                 num_layers: int = 1):
        super().__init__()
        self.rnn = nn.RNN(n_letters, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x: (batch, length, 57) one-hot letters; lengths: real lengths (None = no padding)."""
        if x.ndim == 2:  # a single name (length, 57)
            x = x.unsqueeze(0)
        if lengths is not None:
            x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h_n = self.rnn(x)  # h_n: (num_layers, batch, hidden), the state after each real last letter
        return self.head(h_n[-1])


# --------------------------------------------------------------------------- training
@dataclass
class NamesTrainConfig:
    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 3e-3
    seed: int = 0


@torch.no_grad()
def predict_batches(model: nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(true labels, predicted labels, mean cross-entropy) over a loader."""
    model.eval()
    ys, preds, total = [], [], 0.0
    for x, lengths, y in loader:
        logits = model(x, lengths)
        total += F.cross_entropy(logits, y, reduction="sum").item()
        ys.append(y)
        preds.append(logits.argmax(-1))
    y_true, y_pred = torch.cat(ys), torch.cat(preds)
    return y_true, y_pred, total / len(y_true)


def evaluate(model: nn.Module, loader: DataLoader) -> dict:
    """``{"loss", "accuracy"}`` on a loader."""
    y_true, y_pred, loss = predict_batches(model, loader)
    return {"loss": loss, "accuracy": (y_true == y_pred).float().mean().item()}


def train_classifier(model: nn.Module, train: NamesData, val: NamesData | None,
                     cfg: NamesTrainConfig) -> dict:
    """Adam on cross-entropy; per-epoch train/val loss and accuracy plus wall-clock seconds."""
    torch.manual_seed(cfg.seed)
    loader = names_loader(train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_loader = names_loader(val, 512, shuffle=False) if val is not None else None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    hist: dict[str, list] = {k: [] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")}
    start = time.perf_counter()
    for epoch in tqdm(range(1, cfg.epochs + 1), desc="RNN epochs"):
        model.train()
        total, correct, seen = 0.0, 0, 0
        for x, lengths, y in loader:
            logits = model(x, lengths)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * len(y)
            correct += (logits.argmax(-1) == y).sum().item()
            seen += len(y)
        hist["epoch"].append(epoch)
        hist["train_loss"].append(total / seen)
        hist["train_acc"].append(correct / seen)
        if val_loader is not None:
            m = evaluate(model, val_loader)
            hist["val_loss"].append(m["loss"])
            hist["val_acc"].append(m["accuracy"])
    hist["seconds"] = time.perf_counter() - start
    return hist


def time_per_name(model: nn.Module, data: NamesData, batch_size: int, n_names: int = 512,
                  learning_rate: float = 1e-3) -> float:
    """Seconds of training per name at a given batch size (forward, backward, Adam step)."""
    sub = data.subset(range(min(n_names, len(data))))
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    start = time.perf_counter()
    for x, lengths, y in names_loader(sub, batch_size, shuffle=False):
        loss = F.cross_entropy(model(x, lengths), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / len(sub)


# --------------------------------------------------------------------------- using the model
def majority_baseline(train: NamesData, val: NamesData) -> tuple[str, float]:
    """The most common training language and the accuracy of always predicting it on ``val``."""
    label, _ = Counter(train.labels).most_common(1)[0]
    return train.languages[label], sum(y == label for y in val.labels) / len(val)


def confusion_matrix(y_true, y_pred, n_classes: int) -> torch.Tensor:
    """Counts: entry (i, j) = how many names of true class i were predicted as class j."""
    y_true, y_pred = torch.as_tensor(y_true), torch.as_tensor(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {tuple(y_true.shape)} and {tuple(y_pred.shape)}")
    flat = y_true * n_classes + y_pred
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@torch.no_grad()
def predict_topk(model: nn.Module, name: str, languages: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most likely languages of ``name`` with their probabilities."""
    model.eval()
    probs = torch.softmax(model(one_hot(name)), dim=-1)[0]
    values, ids = probs.topk(min(k, len(languages)))
    return [(languages[i], float(v)) for v, i in zip(values, ids.tolist())]


def save_classifier(model: NameRNN, languages: Sequence[str], path: str | Path) -> Path:
    """Save weights, sizes and label names in one file (``torch.save``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "languages": list(languages),
                "hidden_size": model.rnn.hidden_size, "num_layers": model.rnn.num_layers}, path)
    return path


def load_classifier(path: str | Path) -> tuple[NameRNN, list[str]]:
    """Inverse of :func:`save_classifier`: (model in eval mode, languages)."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = NameRNN(len(ckpt["languages"]), ckpt["hidden_size"], num_layers=ckpt["num_layers"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt["languages"]
