import pytest
from datasets import Dataset

from companion.data import FORMATS, check_format, load_dataset
from companion.data import parsers as P

EXPECTED = {  # name, split -> (format, number of rows in the sample)
    ("tinystories", "train"): ("language_modeling", 2116),
    ("tinystories", "validation"): ("language_modeling", 200),
    ("tinyshakespeare", "train"): ("language_modeling", 1),
    ("alpaca", "train"): ("conversational", 5000),
    ("hh_rlhf", "test"): ("preference", None),
    ("dpo_demo", "train"): ("preference", 300),
    ("kto_demo", "train"): ("unpaired_preference", 300),
    ("oasst_rankings", "train"): ("ranking", None),
    ("sst2", "validation"): ("classification", 872),
    ("imdb", "test"): ("classification", 200),
    ("names", "train"): ("names", 20074),
}


@pytest.mark.parametrize(("name", "split"), list(EXPECTED))
def test_each_sample_dataset_loads_in_its_format(sample_data, name, split):
    fmt, n = EXPECTED[(name, split)]
    ds = load_dataset(name, split=split, limit=None, local_only=True)
    for col in FORMATS[fmt]:
        assert col in ds.column_names
    if n is not None:
        assert len(ds) == n


def test_limit_and_profile_default(sample_data, monkeypatch):
    assert len(load_dataset("alpaca", limit=7)) == 7
    assert len(load_dataset("alpaca")) == 4000  # the tiny profile's max_rows
    with pytest.raises(ValueError, match="positive int"):
        load_dataset("alpaca", limit=0)


def test_conversational_and_preference_rows_are_well_formed(sample_data):
    row = load_dataset("alpaca", limit=1)[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    pref = load_dataset("hh_rlhf", split="test", limit=5)[0]
    assert pref["prompt"][-1]["role"] == "user"
    assert pref["chosen"][0]["role"] == pref["rejected"][0]["role"] == "assistant"
    rank = load_dataset("oasst_rankings", limit=20)
    assert all(2 <= len(r["answers"]) == len(r["ranks"]) for r in rank)
    assert all(r["ranks"] == sorted(r["ranks"]) for r in rank)


def test_tinyshakespeare_split_is_90_10(sample_data):
    train = load_dataset("tinyshakespeare", split="train", limit=None)[0]["text"]
    val = load_dataset("tinyshakespeare", split="validation", limit=None)[0]["text"]
    assert len(train) + len(val) == 1_115_394
    assert abs(len(train) / (len(train) + len(val)) - 0.9) < 1e-3


def test_malformed_dataset_names_missing_columns():
    bad = Dataset.from_dict({"question": ["hi"], "answer": ["hello"]})
    with pytest.raises(ValueError, match=r"missing column\(s\) \['prompt', 'completion'\].*question"):
        check_format(bad, "prompt_completion")
    with pytest.raises(ValueError, match="empty"):
        check_format(Dataset.from_dict({"text": []}), "language_modeling")
    with pytest.raises(ValueError, match="Unknown format"):
        check_format(bad, "nope")


def test_unknown_dataset_and_missing_split_are_clear(sample_data):
    with pytest.raises(ValueError, match="Unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(ValueError, match="no split 'validation'"):
        load_dataset("names", split="validation")


def test_missing_local_data_without_hub_is_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPANION_DATA_DIR", str(tmp_path))  # exists, but empty
    with pytest.raises(FileNotFoundError, match="COMPANION_DATA_DIR"):
        load_dataset("tinystories", local_only=True)


def test_hh_transcript_parser():
    rec = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Joke?\n\nAssistant: Knock knock.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Joke?\n\nAssistant: No.",
    }
    out = P.hh_to_preference(rec)
    assert out["prompt"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Joke?"},
    ]
    assert out["chosen"] == [{"role": "assistant", "content": "Knock knock."}]
    assert out["rejected"] == [{"role": "assistant", "content": "No."}]


def test_oasst_flat_table_to_rankings():
    rows = [
        {"message_id": "p", "parent_id": None, "text": "Q?", "lang": "en", "rank": None},
        {"message_id": "a", "parent_id": "p", "text": "second", "lang": "en", "rank": 1},
        {"message_id": "b", "parent_id": "p", "text": "first", "lang": "en", "rank": 0},
        {"message_id": "c", "parent_id": "p", "text": "unranked", "lang": "en", "rank": None},
    ]
    assert P.oasst_flat_to_rankings(rows) == [{"prompt": "Q?", "answers": ["first", "second"], "ranks": [0, 1]}]
