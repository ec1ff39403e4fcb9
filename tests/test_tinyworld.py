"""The tiny world: task specs, the gold judge on hand-written cases, and the data split."""

from __future__ import annotations

import re

import pytest

from companion import tinyworld as tw

GOOD = (
    "Once upon a time, there was a girl named Lily. Lily had a small dog. "
    "One day the dog ran into the park and Lily looked for him everywhere. "
    "She found him under a big tree, wagging his tail. "
    "Lily hugged her dog and they walked home together. They were very happy."
)


def test_instruction_and_messages():
    spec = tw.TaskSpec("Lily", "dog", template=0)
    assert spec.instruction == "Write a short story about Lily and a dog."
    assert spec.messages() == [{"role": "user", "content": "Write a short story about Lily and a dog."}]
    assert tw.TaskSpec("Tom", "sun", 0).instruction == "Write a short story about Tom and the sun."


def test_bad_spec_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown topic"):
        tw.TaskSpec("Lily", "spaceship")
    with pytest.raises(ValueError, match="capitalized"):
        tw.TaskSpec("lily", "dog")
    with pytest.raises(ValueError, match="template"):
        tw.TaskSpec("Lily", "dog", template=99)


def test_gold_judge_accepts_a_good_story():
    r = tw.gold_judge(tw.TaskSpec("Lily", "dog"), GOOD)
    assert r.success and r.score == 1.0
    assert set(r.checks) == set(tw.CHECKS)


@pytest.mark.parametrize(
    "spec, text, failed",
    [
        # wrong name: Lily is not Tom
        (tw.TaskSpec("Tom", "dog"), GOOD, {"name"}),
        # the topic is missing
        (tw.TaskSpec("Lily", "cake"), GOOD, {"topic"}),
        # sad ending
        (tw.TaskSpec("Lily", "dog"), GOOD.replace("They were very happy.", "Then the dog died and Lily cried."),
         {"happy_ending"}),
        # cut off mid-sentence
        (tw.TaskSpec("Lily", "dog"), GOOD[:-8], {"complete"}),
        # too short
        (tw.TaskSpec("Lily", "dog"), "Lily and her dog were happy.", {"length"}),
        # keyword stuffing: every keyword is there, but the text repeats itself
        (tw.TaskSpec("Lily", "dog"), "Lily loved her dog and was happy. " * 8, {"not_repetitive"}),
    ],
)
def test_gold_judge_rejects_bad_stories(spec, text, failed):
    r = tw.gold_judge(spec, text)
    assert not r.success
    assert {k for k, v in r.checks.items() if not v} == failed
    assert r.score == pytest.approx(1 - len(failed) / len(tw.CHECKS))


def test_judge_helpers_by_hand():
    assert tw.mentions("Two dogs ran.", "dog") and not tw.mentions("A doghouse.", "dog")
    assert tw.mentions("Lily ran.", "Lily", case_sensitive=True)
    assert not tw.mentions("lily ran.", "Lily", case_sensitive=True)
    # "a b c a b c": trigrams abc, bca, cab, abc -> 3 distinct of 4
    assert tw.distinct_trigram_ratio("a b c a b c") == pytest.approx(0.75)
    assert tw.sentences('He said "hi." Then he left! Ok?') == ['He said "hi."', "Then he left!", "Ok?"]
    assert tw.happy_ending("It rained. They smiled.") and not tw.happy_ending("They smiled. Then he cried.")


def test_judge_many_and_success_rate():
    specs = [tw.TaskSpec("Lily", "dog"), tw.TaskSpec("Tom", "dog")]
    results = tw.judge_many(specs, [GOOD, GOOD])
    assert [r.success for r in results] == [True, False]
    assert tw.success_rate(results) == 0.5 and tw.success_rate([]) == 0.0
    with pytest.raises(ValueError, match="one response per spec"):
        tw.judge_many(specs, [GOOD])


def test_spec_from_story():
    spec = tw.spec_from_story(GOOD, template=2)
    assert spec == tw.TaskSpec("Lily", "dog", 2)  # dog (3x) beats park and tree (1x)
    assert tw.story_topics(GOOD) == ["dog", "park", "tree"]
    assert tw.spec_from_story("Once there was a dog. The dog was happy.") is None  # no name


def test_held_out_split_is_deterministic_and_disjoint():
    held = tw.held_out_prompts(20)
    assert held == tw.held_out_prompts(20)
    assert all(s.held_out for s in held)
    assert len({(s.name, s.topic) for s in held}) == 20
    train = tw.make_instructions(20, seed=0, held_out=False)
    assert not any(s.held_out for s in train)
    n_pairs = len(tw.NAMES) * len(tw.TOPICS)
    n_held = sum(tw.is_held_out(a, t) for a in tw.NAMES for t in tw.TOPICS)
    assert 0.1 < n_held / n_pairs < 0.3  # about one in HELD_OUT_EVERY = 5
    with pytest.raises(ValueError, match="n must be between"):
        tw.held_out_prompts(10_000)


def test_make_examples_filters_and_splits():
    bad = "Tom had a cake. Tom ate the cake. Then he cried."  # sad ending, too short
    ex = tw.make_examples([GOOD, bad], held_out=None, topics_per_story=3, renames=0, topic_within=None,
                          topic_swaps=0)
    assert [s.topic for s, _ in ex] == ["dog", "park", "tree"]
    assert all(r == GOOD for _, r in ex)
    ds = tw.examples_to_dataset(ex)
    assert ds.column_names == ["messages", "name", "topic", "template"]
    assert [m["role"] for m in ds[0]["messages"]] == ["user", "assistant"]
    assert tw.spec_of(ds[1]) == ex[1][0]
    with pytest.raises(ValueError, match="no examples"):
        tw.examples_to_dataset([])


def test_topic_within_keeps_topics_of_the_first_sentences():
    # GOOD mentions dog in sentence 2, park in sentence 3, tree in sentence 4
    for within, topics in ((1, []), (2, ["dog"]), (3, ["dog", "park"]), (None, ["dog", "park", "tree"])):
        ex = tw.make_examples([GOOD], held_out=None, topics_per_story=3, renames=0, topic_within=within,
                              topic_swaps=0)
        assert [s.topic for s, _ in ex] == topics, within
    with pytest.raises(ValueError, match="topic_within must be >= 1"):
        tw.make_examples([GOOD], topic_within=0)
    # the cap: 3 topics x (original + 2 renamed copies) = 9 examples, or one per topic
    kw = dict(held_out=None, topics_per_story=3, renames=2, topic_within=None, seed=3, topic_swaps=0)
    assert len(tw.make_examples([GOOD], max_per_topic=None, **kw)) == 9
    assert [s.topic for s, _ in tw.make_examples([GOOD], max_per_topic=1, **kw)] == ["dog", "park", "tree"]
    with pytest.raises(ValueError, match="max_per_topic must be >= 1"):
        tw.make_examples([GOOD], max_per_topic=0)


def test_prompt_dataset():
    ds = tw.prompt_dataset(tw.held_out_prompts(3))
    assert len(ds) == 3 and ds[0]["prompt"][0]["role"] == "user"


def test_sft_dataset_from_tinystories(sample_data):
    ds = tw.sft_dataset()
    assert len(ds) > 200
    for row in ds.select(range(20)):
        spec = tw.spec_of(row)
        assert not spec.held_out
        assert row["messages"][0]["content"] == spec.instruction
        assert tw.gold_judge(spec, row["messages"][1]["content"]).success


def test_renamed_copies_change_the_name_everywhere():
    assert tw.rename("Lily saw Lily's dog. Lilyanne waved.", "Lily", "Mia") == "Mia saw Mia's dog. Lilyanne waved."
    ex = tw.make_examples([GOOD], held_out=None, topics_per_story=1, renames=2, seed=3, topic_swaps=0)
    assert len(ex) == 3 and ex[0][0].name == "Lily"
    for spec, story in ex[1:]:
        assert spec.name != "Lily" and "Lily" not in story and spec.name in story
        assert tw.gold_judge(spec, story).success


def test_swap_topic_replaces_singular_plural_and_capitals():
    story = "The dog ran. Dogs bark. A hotdog is food. Dog said hi."
    assert tw.swap_topic(story, "dog", "puppy") == "The puppy ran. Puppies bark. A hotdog is food. Puppy said hi."
    assert tw.swap_topic("Two boxes and a box.", "box", "mouse") == "Two mice and a mouse."
    assert tw.swap_topic("A fish and two fish.", "fish", "dog") == "A dog and two dog."  # same-form plural
    assert tw.plural("bunny") == "bunnies" and tw.plural("ball") == "balls"
    assert "dog" in tw.stand_ins("cat") and "cat" not in tw.stand_ins("cat")
    assert tw.stand_ins("sun") == ()
    # every topic but the uncountable ones has stand-ins, and stand-ins are real topics
    assert {t for t in tw.TOPICS if not tw.stand_ins(t)} == {"sun", "sand"}
    assert all(set(kind) <= set(tw.TOPICS) for kind in tw.TOPIC_KINDS.values())


def test_topic_swaps_teach_rare_topics_from_common_stories():
    kw = dict(held_out=None, topics_per_story=1, renames=0, topic_within=None, seed=3)
    assert len(tw.make_examples([GOOD], topic_swaps=0, **kw)) == 1
    ex = tw.make_examples([GOOD], topic_swaps=3, **kw)
    assert len(ex) == 4 and ex[0][0].topic == "dog"
    swapped = [s.topic for s, _ in ex[1:]]
    assert len(set(swapped)) == 3 and set(swapped) <= set(tw.stand_ins("dog"))
    for spec, story in ex[1:]:
        assert not tw.mentions(story, "dog") and tw.mentions(story, spec.topic)
        assert spec.name != "Lily" and "Lily" not in story  # a new name as well
        assert tw.gold_judge(spec, story).success
    with pytest.raises(ValueError, match="topic_swaps >= 0"):
        tw.make_examples([GOOD], topic_swaps=-1)


@pytest.mark.parametrize("topic", ["mouse", "bunny", "puppy", "butterfly", "box", "fish", "dog"])
def test_gold_judge_accepts_every_topic_in_its_plural(topic):
    story = re.sub(r"\bdogs?\b", tw.plural(topic), GOOD.replace("a small dog", "small dogs"))
    assert tw.plural(topic) in story and (topic == "dog" or not tw.mentions(story, "dog"))
    assert tw.gold_judge(tw.TaskSpec("Lily", topic), story).success
    assert tw.story_topics(story)[0] == topic


def test_mentions_is_whole_word():
    assert not tw.mentions("a doghouse and a catalogue", "dog") and not tw.mentions("catalogue", "cat")
    assert not tw.mentions("Lilypad", "Lily", case_sensitive=True) and not tw.mentions("lily", "Lily", case_sensitive=True)


def test_gold_reward_is_the_judge_with_grpos_signature():
    specs = tw.make_instructions(6, seed=3)
    rows = tw.prompt_dataset(specs).to_list()
    stories = [f"Once upon a time {s.name} found a {s.topic}. {s.name} was very happy. The end." for s in specs]
    stories[0] = "Once upon a time there was a dog."
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    got = tw.gold_reward([r["prompt"] for r in rows], [[{"role": "assistant", "content": t}] for t in stories], **columns)
    assert got == tw.judge_rows(rows, stories)
    assert got[0] < max(got)  # the answer that ignores the request scores lower
    with pytest.raises(ValueError, match="prompt dataset's columns"):
        tw.gold_reward([], stories, name=columns["name"][:2], topic=columns["topic"])


def test_topic_reward_is_the_judges_topic_check_as_a_rule():
    specs = [tw.TaskSpec("Lily", "mouse", 0), tw.TaskSpec("Tom", "dog", 1), tw.TaskSpec("Max", "frog", 2)]
    rows = tw.prompt_dataset(specs).to_list()
    stories = ["Lily saw two mice in the barn. She was happy.", "Tom had a cat. The end.", "Max and the frog played."]
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    got = tw.topic_reward([r["prompt"] for r in rows], [[{"role": "assistant", "content": t}] for t in stories],
                          **columns)
    assert got == [1.0, 0.0, 1.0]  # an irregular plural counts; a story about another animal does not
    assert got == [float(tw.gold_judge(s, t).checks["topic"]) for s, t in zip(specs, stories)]
    with pytest.raises(ValueError, match="prompt dataset's columns"):
        tw.topic_reward([], stories, topic=columns["topic"][:2])
