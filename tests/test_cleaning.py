"""Data cleaning: each step on crafted inputs (bad text removed, clean text kept)."""

from __future__ import annotations

import pytest

from companion.data.cleaning import (
    AD,
    QualityRules,
    clean_corpus,
    contaminated,
    exact_duplicates,
    jaccard,
    keyword_hits,
    make_dirty_corpus,
    minhash_signatures,
    near_duplicate_pairs,
    near_duplicates,
    quality_problems,
    repetition_ratio,
    shingles,
    strip_markup,
    symbol_ratio,
)

STORY = ("Once upon a time, there was a little girl named Lily. She loved to play in the garden with "
         "her dog Max. One day they found a shiny stone under a tree and took it home to show Mom.")
OTHER = ("Tom wanted to build a boat. He asked his dad for help, and together they cut wood, painted "
         "it blue, and sailed it on the pond until the sun went down and the stars came out.")


def test_strip_markup_removes_tags_scripts_entities_and_keeps_text_and_emoji():
    raw = ("<html><head><script>var x = 1;</script><style>p {color: red}</style></head>"
           "<body><p>Tom &amp; Lily   smiled 😊</p>\n\n\n<p>The end.</p></body></html>")
    out = strip_markup(raw)
    assert "<" not in out and "var x" not in out and "color" not in out
    assert "Tom & Lily smiled 😊" in out and "The end." in out
    assert strip_markup(STORY) == STORY  # clean text is untouched


def test_exact_duplicates_ignore_case_spacing_and_punctuation():
    docs = [STORY, OTHER, STORY.upper(), "  " + STORY.replace(",", ""), OTHER + "!"]
    assert exact_duplicates(docs) == [2, 3, 4]
    assert exact_duplicates([STORY, OTHER]) == []


def test_shingles_and_jaccard_by_hand():
    assert shingles("a b c d", n=2) == {"a b", "b c", "c d"}
    assert shingles("a b", n=5) == {"a b"}
    assert jaccard({"a", "b", "c"}, {"b", "c", "d"}) == pytest.approx(2 / 4)


def test_minhash_agreement_estimates_jaccard():
    a = {f"w{i}" for i in range(100)}
    b = {f"w{i}" for i in range(50, 150)}  # true Jaccard 50/150 = 1/3
    sig = minhash_signatures([a, b, a], num_perm=512)
    assert (sig[0] == sig[2]).all()
    assert (sig[0] == sig[1]).mean() == pytest.approx(1 / 3, abs=0.07)


def test_near_duplicates_found_and_distinct_texts_kept():
    words = STORY.split()
    near = " ".join("happy" if i == 10 else w for i, w in enumerate(words))
    docs = [STORY, OTHER, near]
    pairs = near_duplicate_pairs(docs, threshold=0.7)
    assert [(i, j) for i, j, _ in pairs] == [(0, 2)]
    assert 0.7 <= pairs[0][2] < 1.0
    assert near_duplicates(docs) == [2]
    assert near_duplicates([STORY, OTHER]) == []


def test_quality_rules_flag_junk_and_pass_a_story():
    assert quality_problems(STORY) == []
    assert quality_problems("ok") == ["too short"]
    assert "symbols" in quality_problems("#### $$$ {{{ }}} <<< >>> *** ||| " * 5 + STORY)
    assert "repetitive" in quality_problems("click here " * 20)
    assert "not words" in quality_problems(" ".join(str(i) for i in range(40)))
    assert symbol_ratio("a#b") == pytest.approx(1 / 3)
    assert symbol_ratio("Hi, Tom! (Yes.) 😊") == 0.0  # punctuation and emoji are not junk
    assert repetition_ratio("a b c a b c") == pytest.approx(1 - 3 / 4)
    assert quality_problems("word " * 30, QualityRules(max_repetition=1.0)) == []


def test_keyword_filter_matches_whole_words_only():
    assert keyword_hits("You are a stupid idiot.") == ["idiot", "stupid"]
    assert keyword_hits("He said: SHUT UP!") == ["shut up"]
    assert keyword_hits("The kid was stupendous.") == []
    assert keyword_hits(STORY) == []


def test_decontamination_finds_leaked_test_text_not_shared_phrases():
    test = [OTHER]
    leaked = "Preface. " + OTHER
    formulaic = STORY + " " + " ".join(OTHER.split()[:13])  # one shared 13-gram
    docs = [STORY, leaked, formulaic]
    assert contaminated(docs, test) == [1, 2]
    assert contaminated(docs, test, min_overlap=0.5) == [1]


def test_clean_corpus_removes_every_planted_problem_and_keeps_clean_stories(sample_data):
    from companion.data import load_dataset

    train = list(load_dataset("tinystories", split="train", limit=300)["text"])
    test = list(load_dataset("tinystories", split="validation", limit=50)["text"])
    dirty, planted = make_dirty_corpus(train, test, n_markup=20, n_ad=15, n_near=10, n_junk=8,
                                       n_toxic=4, n_leaked=5)
    assert len(dirty) == 300 + 15 + 10 + 8 + 4 + 5
    clean, report = clean_corpus(dirty, test)
    clean_set = set(clean)
    assert clean.count(AD) == 1  # one copy of the advert survives
    for name in ("junk", "toxic", "leaked test stories"):
        assert not clean_set & set(planted[name]), name
    for copy in planted["near copies"]:  # never both a story and its near copy
        original = max(train, key=lambda t: jaccard(shingles(t), shingles(copy)))
        assert (copy in clean_set) + (original in clean_set) <= 1
    assert all("<" not in d for d in clean)
    kept = sum(strip_markup(t) in clean_set for t in train + planted["markup"])  # markup: cleaned copy
    assert kept >= 300 - 10 - 3  # only near-copy originals and a few false positives go
    assert [name for name, _ in report.steps][0] == "raw" and report.steps[-1][1] == len(clean)
    assert "decontamination" in report.table()
