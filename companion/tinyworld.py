"""The "tiny world": a story-writing task family with a programmatic gold judge.

Chapters 4-10 need an alignment task that a 2.6M-parameter model trained on TinyStories
can learn, and whose success a program can check, so that a *gold judge* can play the
human labeler: it labels preferences, evaluates policies, and exposes a learned reward
model that is being over-optimized.

A task is a :class:`TaskSpec`: a character name and a topic, phrased as one of several
instruction templates, e.g. "Write a short story about Lily and a dog."  A response
succeeds when it (1) names the character, (2) mentions the topic, (3) ends happily,
(4) is not repetitive, (5) has a sensible length, and (6) ends in a complete sentence.
:func:`gold_judge` returns each check, their mean as a score in [0, 1], and success
(all checks pass).

SFT data comes from real TinyStories stories: :func:`spec_from_story` reads the main
character and a topic off a story, and the story itself becomes the answer; renamed copies
(:func:`rename`) and topic-swapped ones (:func:`swap_topic`) make the model read
the name and topic from the request instead of guessing them from the story it tells.  The
(name, topic) pairs are split deterministically into train and held-out pairs, so the
held-out prompts (:func:`held_out_prompts`) ask for combinations never seen in SFT data.
"""

from __future__ import annotations

import random
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field

from datasets import Dataset

# Character names that recur in TinyStories (each is the "named X" of several stories).
NAMES: tuple[str, ...] = (
    "Lily", "Tim", "Timmy", "Lucy", "Tom", "Jack", "Jane", "Sue", "Max", "Sarah", "Spot",
    "Joe", "Bob", "John", "Daisy", "Amy", "Sally", "Benny", "Mia", "Kitty", "Andy", "Grace",
    "Anna", "Molly", "Sam", "Emma", "Sophie", "Billy", "Polly", "Bobby", "Ben", "Mittens",
    "Ella", "Lola", "Susie", "Emily", "Danny", "Jimmy", "Bella", "Rosie",
)

# Topics (nouns frequent in TinyStories) and how an instruction refers to them.
TOPICS: dict[str, str] = {
    "park": "a park", "house": "a house", "tree": "a tree", "sun": "the sun",
    "garden": "a garden", "toy": "a toy", "bird": "a bird", "dog": "a dog", "box": "a box",
    "car": "a car", "bear": "a bear", "ball": "a ball", "cat": "a cat", "fish": "a fish",
    "rabbit": "a rabbit", "boat": "a boat", "beach": "the beach", "flower": "a flower",
    "school": "school", "bunny": "a bunny", "mouse": "a mouse", "cake": "a cake",
    "rock": "a rock", "hat": "a hat", "truck": "a truck", "butterfly": "a butterfly",
    "river": "a river", "book": "a book", "doll": "a doll", "sand": "sand", "frog": "a frog",
    "puppy": "a puppy",
}

# Topics that can stand in for one another in a story (same kind of noun, same article).
# "sun" and "sand" have no stand-in: "the sun" and "sand" are not countable things.
TOPIC_KINDS: dict[str, tuple[str, ...]] = {
    "places": ("park", "house", "garden", "beach", "school", "river"),
    "animals": ("bird", "dog", "bear", "cat", "fish", "rabbit", "bunny", "mouse", "butterfly", "frog", "puppy"),
    "things": ("toy", "box", "car", "ball", "rock", "hat", "truck", "book", "doll", "cake", "boat", "flower", "tree"),
}
_IRREGULAR_PLURALS = {"mouse": "mice", "fish": "fish", "sand": "sand", "box": "boxes",
                      "bunny": "bunnies", "puppy": "puppies", "butterfly": "butterflies"}

TEMPLATES: tuple[str, ...] = (
    "Write a short story about {name} and {phrase}.",
    "Tell me a story for kids. The main character is {name}, and the story must include {phrase}.",
    "Can you write a happy story about {name}? Please include {phrase}.",
    "Story request: a child named {name}, {phrase}, and a happy ending.",
    "Write a bedtime story featuring {name} and {phrase}. End it happily.",
    "I want a short story. Main character: {name}. It should be about {phrase}. Make the ending happy.",
)

HAPPY_WORDS = frozenset([
    "happy", "happily", "glad", "smile", "smiled", "smiles", "smiling", "laugh", "laughed",
    "laughing", "love", "loved", "loves", "fun", "joy", "joyful", "proud", "best", "friends",
    "friend", "thanked", "thank", "hug", "hugged", "hugs", "excited", "great", "good", "safe",
    "together", "wonderful", "nice", "kind", "played", "play", "cheered", "enjoyed",
])
SAD_WORDS = frozenset([
    "sad", "sadly", "cried", "cry", "crying", "hurt", "died", "dead", "angry", "mad", "scared",
    "afraid", "lost", "alone", "broken", "never", "lonely", "upset", "worried",
])

MIN_WORDS, MAX_WORDS = 25, 250
MIN_DISTINCT_TRIGRAMS = 0.7  # distinct word trigrams / all trigrams
HELD_OUT_EVERY = 5  # one (name, topic) pair in five is held out of the SFT data
CHECKS = ("name", "topic", "happy_ending", "not_repetitive", "length", "complete")

_WORD = re.compile(r"[A-Za-z']+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'])\s+")


@dataclass(frozen=True)
class TaskSpec:
    """One instruction of the tiny world: write a story about ``name`` and ``topic``."""

    name: str
    topic: str
    template: int = 0

    def __post_init__(self):
        if self.topic not in TOPICS:
            raise ValueError(f"unknown topic {self.topic!r}; use one of tinyworld.TOPICS: {sorted(TOPICS)}")
        if not self.name or not self.name[0].isupper() or not self.name.isalpha():
            raise ValueError(f"name must be a capitalized word such as 'Lily', got {self.name!r}")
        if not 0 <= self.template < len(TEMPLATES):
            raise ValueError(f"template must be in [0, {len(TEMPLATES) - 1}], got {self.template}")

    @property
    def instruction(self) -> str:
        """The user's request, in words."""
        return TEMPLATES[self.template].format(name=self.name, topic=self.topic, phrase=TOPICS[self.topic])

    def messages(self) -> list[dict]:
        """The request as a one-turn conversation (the prompt of a chat model)."""
        return [{"role": "user", "content": self.instruction}]

    @property
    def held_out(self) -> bool:
        """True for the (name, topic) pairs reserved for evaluation."""
        return is_held_out(self.name, self.topic)


@dataclass(frozen=True)
class JudgeResult:
    """The gold judge's verdict: ``score`` = fraction of checks passed, ``success`` = all."""

    score: float
    success: bool
    checks: dict[str, bool] = field(default_factory=dict)


def is_held_out(name: str, topic: str) -> bool:
    """Deterministic split of (name, topic) pairs: about one in ``HELD_OUT_EVERY`` is held out."""
    return zlib.crc32(f"{name}|{topic}".encode()) % HELD_OUT_EVERY == 0


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _word_pattern(word: str) -> str:
    """A regex for ``word`` or its plural: "+s"/"+es", or the irregular plural of a topic ("mice")."""
    forms = [rf"{re.escape(word)}(?:s|es)?"]
    if word.lower() in _IRREGULAR_PLURALS:
        forms.append(re.escape(_IRREGULAR_PLURALS[word.lower()]))
    return rf"\b(?:{'|'.join(forms)})\b"


def mentions(text: str, word: str, case_sensitive: bool = False) -> bool:
    """Whole-word match of ``word`` or its plural ("dog"/"dogs", "box"/"boxes", "mouse"/"mice")."""
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.search(_word_pattern(word), text, flags) is not None


def distinct_trigram_ratio(text: str) -> float:
    """Distinct word trigrams / all word trigrams (1.0 = no repeated phrase; texts < 3 words: 1.0)."""
    w = [x.lower() for x in words(text)]
    grams = list(zip(w, w[1:], w[2:]))
    return len(set(grams)) / len(grams) if grams else 1.0


def happy_ending(text: str, last: int = 2) -> bool:
    """A happy word in the last ``last`` sentences and no sad word in the very last one."""
    sents = sentences(text)
    if not sents:
        return False
    tail = {w.lower() for s in sents[-last:] for w in words(s)}
    final = {w.lower() for w in words(sents[-1])}
    return bool(tail & HAPPY_WORDS) and not (final & SAD_WORDS)


def gold_judge(spec: TaskSpec, response: str) -> JudgeResult:
    """Score a response to ``spec`` with six programmatic checks (see the module docstring)."""
    text = response.strip()
    n = len(words(text))
    checks = {
        "name": mentions(text, spec.name, case_sensitive=True),
        "topic": mentions(text, spec.topic),
        "happy_ending": happy_ending(text),
        "not_repetitive": n >= 3 and distinct_trigram_ratio(text) >= MIN_DISTINCT_TRIGRAMS,
        "length": MIN_WORDS <= n <= MAX_WORDS,
        "complete": re.search(r"[.!?][\"']?$", text) is not None,
    }
    score = sum(checks.values()) / len(checks)
    return JudgeResult(score=score, success=all(checks.values()), checks=checks)


def judge_many(specs: list[TaskSpec], responses: list[str]) -> list[JudgeResult]:
    if len(specs) != len(responses):
        raise ValueError(f"got {len(specs)} specs but {len(responses)} responses; pass one response per spec")
    return [gold_judge(s, r) for s, r in zip(specs, responses)]


def success_rate(results: list[JudgeResult]) -> float:
    """Fraction of successful responses (0.0 for an empty list)."""
    return sum(r.success for r in results) / len(results) if results else 0.0


def main_character(story: str) -> str | None:
    """The most mentioned name of :data:`NAMES` (at least twice), or None."""
    counts = Counter(w for w in words(story) if w in NAMES)
    if not counts:
        return None
    name, c = max(counts.items(), key=lambda kv: (kv[1], -NAMES.index(kv[0])))
    return name if c >= 2 else None


def story_topics(story: str) -> list[str]:
    """Topics of :data:`TOPICS` the story mentions, most mentioned first (ties: TOPICS order)."""
    low = story.lower()
    counts = {t: len(re.findall(_word_pattern(t), low)) for t in TOPICS}
    return sorted((t for t in TOPICS if counts[t]), key=lambda t: -counts[t])


def main_topic(story: str) -> str | None:
    """The most mentioned topic of :data:`TOPICS`, or None."""
    topics = story_topics(story)
    return topics[0] if topics else None


def spec_from_story(story: str, template: int = 0) -> TaskSpec | None:
    """The instruction a story answers (its main character and topic), or None."""
    name, topic = main_character(story), main_topic(story)
    if name is None or topic is None:
        return None
    return TaskSpec(name, topic, template)


def rename(story: str, old: str, new: str) -> str:
    """The story with every whole-word ``old`` name replaced by ``new``."""
    return re.sub(rf"\b{re.escape(old)}\b", new, story)


def plural(topic: str) -> str:
    """The plural of a topic noun ("box" -> "boxes", "mouse" -> "mice")."""
    return _IRREGULAR_PLURALS.get(topic, topic + "s")


def swap_topic(story: str, old: str, new: str) -> str:
    """The story with the noun ``old`` (singular and plural, any capitalization) replaced by ``new``."""
    forms = {plural(old): plural(new), old: new}  # singular last: wins where both are equal ("fish")

    def repl(m: re.Match) -> str:
        word = forms[m.group(0).lower()]
        return word.capitalize() if m.group(0)[0].isupper() else word

    pattern = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.sub(rf"\b(?:{pattern})\b", repl, story, flags=re.IGNORECASE)


def stand_ins(topic: str) -> tuple[str, ...]:
    """The topics that can replace ``topic`` in a story (same kind of noun), or ()."""
    return next((tuple(t for t in kind if t != topic) for kind in TOPIC_KINDS.values() if topic in kind), ())


def mentions_early(story: str, word: str, within: int | None) -> bool:
    """True if ``word`` occurs in the first ``within`` sentences of ``story`` (None: anywhere)."""
    return mentions(" ".join(sentences(story)[:within]) if within else story, word)


def make_examples(stories: list[str], seed: int = 0, held_out: bool | None = False,
                  max_words: int = 160, topics_per_story: int = 4, renames: int = 2,
                  topic_within: int | None = 2, max_per_topic: int | None = 40,
                  topic_swaps: int = 0) -> list[tuple[TaskSpec, str]]:
    """(spec, story) pairs for stories that pass the gold judge for their own spec.

    A story answers one instruction per topic it mentions (its ``topics_per_story`` most
    mentioned ones), each with a random template (seeded).  ``renames`` extra copies give
    the main character a random other name (in the instruction and the story alike), so
    the model must read the name from the request instead of guessing it from the story.
    ``topic_within`` keeps a topic only if the story mentions it in its first sentences:
    demonstrations then show the habit "use the requested topic early", which a small
    model picks up far more easily than a mention anywhere later (None: anywhere).
    ``max_per_topic`` caps the examples of any one topic: TinyStories mentions parks and toys
    far more often than frogs or hats, and without a cap the model learns to write about a
    park whatever was asked (None: no cap).
    ``topic_swaps`` extra copies replace the topic noun by a stand-in of the same kind
    (:data:`TOPIC_KINDS`: a dog becomes a frog, a park a beach), choosing the stand-in with
    the fewest examples so far, and rename the character too: rare topics get as many
    demonstrations as common ones, and the topic, like the name, must be read from the request.
    :func:`sft_dataset` uses two: when they were chosen (150 SFT steps) they raised the SFT
    model's held-out success from 39% to 45-58% depending on the data seed (200 prompts), more
    than any other data setting; ``sft.sft_config`` says how the step count was then chosen.
    ``held_out``: False keeps training pairs only, True held-out pairs only, None both.
    ``max_words`` drops long stories (the tiny model's context is 256 tokens).
    """
    if topics_per_story < 1 or renames < 0 or topic_swaps < 0:
        raise ValueError("need topics_per_story >= 1, renames >= 0 and topic_swaps >= 0, got "
                         f"{topics_per_story}, {renames}, {topic_swaps}")
    if topic_within is not None and topic_within < 1:
        raise ValueError(f"topic_within must be >= 1 sentence or None, got {topic_within}")
    if max_per_topic is not None and max_per_topic < 1:
        raise ValueError(f"max_per_topic must be >= 1 or None (no cap), got {max_per_topic}")
    rng = random.Random(seed)
    out = []
    per_topic: Counter = Counter()
    for story in stories:
        story = story.strip()
        name = main_character(story)
        if name is None or len(words(story)) > max_words:
            continue
        for topic in story_topics(story)[:topics_per_story]:
            if not mentions_early(story, topic, topic_within):
                continue
            other_names = [n for n in NAMES if n != name and n not in story]
            variants = [(name, topic, story)]
            for _ in range(renames):
                new = rng.choice(other_names)
                variants.append((new, topic, rename(story, name, new)))
            for _ in range(topic_swaps):
                options = [t for t in stand_ins(topic) if not mentions(story, t)]
                if not options:
                    break
                fewest = min(per_topic[t] for t in options)
                new_topic = rng.choice([t for t in options if per_topic[t] == fewest])
                new = rng.choice(other_names)
                variants.append((new, new_topic, rename(swap_topic(story, topic, new_topic), name, new)))
            for who, what, text in variants:
                spec = TaskSpec(who, what, rng.randrange(len(TEMPLATES)))
                if held_out is not None and spec.held_out != held_out:
                    continue
                full = max_per_topic is not None and per_topic[what] >= max_per_topic
                if not full and gold_judge(spec, text).success:
                    per_topic[what] += 1
                    out.append((spec, text))
    return out


def to_messages(spec: TaskSpec, response: str) -> list[dict]:
    return [*spec.messages(), {"role": "assistant", "content": response}]


def examples_to_dataset(examples: list[tuple[TaskSpec, str]]) -> Dataset:
    """A conversational dataset (``messages``) with the spec kept in ``name``/``topic``/``template``."""
    if not examples:
        raise ValueError("no examples: every story was filtered out; pass more stories or raise max_words")
    return Dataset.from_list([
        {"messages": to_messages(s, r), "name": s.name, "topic": s.topic, "template": s.template}
        for s, r in examples
    ])


def sft_dataset(split: str = "train", limit: int | None = None, seed: int = 0, max_words: int = 160,
                topics_per_story: int = 4, renames: int = 2, topic_within: int | None = 2,
                max_per_topic: int | None = 40, topic_swaps: int = 2,
                held_out: bool | None = False) -> Dataset:
    """SFT data of the tiny world, from real TinyStories stories, in ``messages`` format.

    Only stories whose (name, topic) pair is a *training* pair are kept, so
    :func:`held_out_prompts` stays unseen; ``held_out=True`` returns the other pairs
    instead, ``None`` both.  For a held-out *loss*, also take unseen stories
    (``split="validation"``): the training split's stories recur under other names and
    topics.  ``limit`` caps the number of rows.  ``topic_swaps=2`` (the default) adds two
    copies of each demonstration moved to a rarer topic of the same kind (see
    :func:`make_examples`); they lifted held-out gold success from about 40% to 55-60%.
    """
    from companion.data import load_dataset

    stories = load_dataset("tinystories", split=split, limit=None)["text"]
    examples = make_examples(stories, seed=seed, held_out=held_out, max_words=max_words,
                             topics_per_story=topics_per_story, renames=renames, topic_within=topic_within,
                             max_per_topic=max_per_topic, topic_swaps=topic_swaps)
    return examples_to_dataset(examples[:limit] if limit else examples)


def make_instructions(n: int, seed: int = 0, held_out: bool = False) -> list[TaskSpec]:
    """``n`` distinct random specs (name x topic x template), training or held-out pairs."""
    pairs = [(a, t) for a in NAMES for t in TOPICS if is_held_out(a, t) == held_out]
    if not 0 < n <= len(pairs):
        raise ValueError(f"n must be between 1 and {len(pairs)} (the number of distinct pairs), got {n}")
    rng = random.Random(seed)
    chosen = rng.sample(pairs, n)
    return [TaskSpec(a, t, rng.randrange(len(TEMPLATES))) for a, t in chosen]


def held_out_prompts(n: int = 64, seed: int = 1234) -> list[TaskSpec]:
    """``n`` evaluation specs whose (name, topic) pairs never occur in :func:`sft_dataset`."""
    return make_instructions(n, seed=seed, held_out=True)


def prompt_dataset(specs: list[TaskSpec]) -> Dataset:
    """Specs as a conversational prompt dataset (``prompt`` = [user turn]) for RL/preference trainers."""
    if not specs:
        raise ValueError("prompt_dataset needs at least one spec")
    return Dataset.from_list([
        {"prompt": s.messages(), "name": s.name, "topic": s.topic, "template": s.template} for s in specs
    ])


def spec_of(row: dict) -> TaskSpec:
    """Rebuild the :class:`TaskSpec` of a dataset row (it has ``name``, ``topic``, ``template``)."""
    return TaskSpec(row["name"], row["topic"], int(row.get("template", 0)))


def completion_texts(completions: list) -> list[str]:
    """The answer text of each completion, plain strings or conversations (the last message's content)."""
    return [c if isinstance(c, str) else c[-1]["content"] for c in completions]


def gold_reward(prompts: list, completions: list, name: list[str], topic: list[str], template: list[int] | None = None,
                **kwargs) -> list[float]:
    """The gold judge's score as a reward function with GRPO's signature, for :func:`prompt_dataset` rows.

    For experiments only: optimizing the very judge that grades the result measures what a perfect
    reward model would allow, the ceiling of RLHF in this world (Gao et al.'s "gold" reward).
    """
    if not (len(completions) == len(name) == len(topic)):
        raise ValueError(f"gold_reward got {len(completions)} completions but {len(name)} names and {len(topic)} "
                         "topics; pass the prompt dataset's columns (tinyworld.prompt_dataset) unchanged")
    templates = template if template is not None else [0] * len(completions)
    rows = [{"name": n, "topic": t, "template": k} for n, t, k in zip(name, topic, templates)]
    return judge_rows(rows, completion_texts(completions))


def topic_reward(prompts: list, completions: list, topic: list[str], **kwargs) -> list[float]:
    """1.0 where a completion mentions its request's topic (or the topic's plural), else 0.0.

    A *verifiable* reward with GRPO's signature, for :func:`prompt_dataset` rows: the gold judge's
    topic check as a rule, for RL beside a learned reward model that cannot see it (chapter 7).
    Production pipelines mix such rules with reward models where a property can be checked
    mechanically (rule-based rewards; RL with verifiable rewards).
    """
    if len(completions) != len(topic):
        raise ValueError(f"topic_reward got {len(completions)} completions but {len(topic)} topics; pass the "
                         "prompt dataset's columns (tinyworld.prompt_dataset) unchanged")
    return [float(mentions(t, w)) for t, w in zip(completion_texts(completions), topic)]


def judge_rows(rows: list[dict], responses: list[str]) -> list[float]:
    """Gold-judge scores of responses to prompt-dataset rows (see :func:`prompt_dataset`)."""
    if len(rows) != len(responses):
        raise ValueError(f"got {len(rows)} rows but {len(responses)} responses; pass one response per row")
    return [gold_judge(spec_of(r), t).score for r, t in zip(rows, responses)]
