"""EDA operations on a list of words: synonym replacement, random insertion, random swap, random deletion.

As in Wei & Zou (2019), "EDA: Easy Data Augmentation Techniques for Boosting
Performance on Text Classification Tasks": a rate `r` changes `max(1, round(r * n))`
of `n` words (deletion drops each word with probability `r`), synonyms come from
WordNet, and stop words are never replaced. Words are whitespace tokens; leading
and trailing punctuation stays where it was (`great,` -> `outstanding,`).

Some words never change, move or disappear: numbers, URLs, e-mail addresses,
@mentions and #hashtags, the user's `protected` words, and, with `tags`
(token classification), every word not tagged `O`.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from kerasft.data.augment.wordnet import synonyms

OPERATIONS = ("synonym", "insertion", "swap", "deletion")

# EDA's stop-word list (NLTK's English list, which the paper used).
STOP_WORDS = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she
    her hers herself it its itself they them their theirs themselves what which who whom this that these
    those am is are was were be been being have has had having do does did doing a an the and but if or
    because as until while of at by for with about against between into through during before after
    above below to from up down in out on off over under again further then once here there when where
    why how all any both each few more most other some such no nor not only own same so than too very s
    t can will just don should now""".split()
)
_SPLIT = re.compile(r"^(\W*)(.*?)(\W*)$")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_PROTECTED = re.compile(r"\d|^[@#]|://|^www\.|\S@\S")


@dataclasses.dataclass(frozen=True)
class Eda:
    """The four operations with their rates, the words to leave alone and the tag of ordinary words.

    Attributes:
        rates: operation name (one of `OPERATIONS`) -> rate; 0 turns it off.
        protected: lower-cased words never changed, moved or deleted.
        outside_tag: the tag id of words outside entities (token classification), else None.
    """

    rates: dict[str, float]
    protected: frozenset[str] = frozenset()
    outside_tag: int | None = None

    def apply(
        self,
        operation: str,
        words: list[str],
        rng: np.random.Generator,
        tags: list[int] | None = None,
    ) -> tuple[list[str], list[int] | None]:
        """`words` (and their `tags`) after one operation; the inputs are not modified."""
        words, tags = list(words), None if tags is None else list(tags)
        rate = self.rates[operation]
        count = max(1, round(rate * len(words)))
        if operation == "synonym":
            return self._replace(words, tags, count, rng), tags
        if operation == "insertion":
            return self._insert(words, tags, count, rng)
        if operation == "swap":
            return self._swap(words, tags, count, rng), tags
        return self._delete(words, tags, rate, rng)

    def movable(self, words: list[str], tags: list[int] | None) -> list[int]:
        """Positions of the words an operation may touch."""
        return [
            i
            for i, word in enumerate(words)
            if not _PROTECTED.search(word)
            and _core(word)[1].lower() not in self.protected
            and (tags is None or tags[i] == self.outside_tag)
        ]

    def replaceable(self, words: list[str], tags: list[int] | None) -> list[int]:
        """Movable positions holding a real word that is not a stop word (candidates for a synonym)."""
        return [
            i
            for i in self.movable(words, tags)
            if _WORD.fullmatch(_core(words[i])[1]) and _core(words[i])[1].lower() not in STOP_WORDS
        ]

    def _synonyms(self, word: str, tags: list[int] | None) -> tuple[str, ...]:
        return synonyms(_core(word)[1], single_word=tags is not None)

    def _replace(self, words, tags, count, rng) -> list[str]:
        candidates = [i for i in self.replaceable(words, tags) if self._synonyms(words[i], tags)]
        for i in rng.permutation(candidates)[:count]:
            pre, core, post = _core(words[i])
            options = self._synonyms(words[i], tags)
            words[i] = pre + match_case(options[rng.integers(len(options))], core) + post
        return words

    def _insert(self, words, tags, count, rng):
        candidates = [i for i in self.replaceable(words, tags) if self._synonyms(words[i], tags)]
        if not candidates:
            return words, tags
        for _ in range(count):
            options = self._synonyms(words[candidates[rng.integers(len(candidates))]], tags)
            new = options[rng.integers(len(options))].lower()
            slots = self._slots(len(words), tags)
            at = int(slots[rng.integers(len(slots))])
            words.insert(at, new)
            if tags is not None:
                tags.insert(at, self.outside_tag)
            candidates = [i + (i >= at) for i in candidates]
        return words, tags

    def _slots(self, n: int, tags: list[int] | None) -> list[int]:
        """Where a word may go among `n`: anywhere, or with tags only between two words outside entities."""
        if tags is None:
            return list(range(n + 1))
        outside = [True, *(t == self.outside_tag for t in tags), True]
        return [i for i in range(len(tags) + 1) if outside[i] and outside[i + 1]] or [len(tags)]

    def _swap(self, words, tags, count, rng) -> list[str]:
        movable = self.movable(words, tags)
        if len(movable) < 2:
            return words
        for _ in range(count):
            a, b = rng.choice(movable, size=2, replace=False)
            words[a], words[b] = words[b], words[a]
        return words

    def _delete(self, words, tags, rate, rng):
        movable = set(self.movable(words, tags))
        keep = [i for i in range(len(words)) if i not in movable or rng.random() >= rate]
        if not keep:  # never an empty text
            keep = [int(rng.integers(len(words)))]
        return [words[i] for i in keep], None if tags is None else [tags[i] for i in keep]


def _core(word: str) -> tuple[str, str, str]:
    """(leading punctuation, the word, trailing punctuation)."""
    return _SPLIT.match(word).groups()  # type: ignore[union-attr]


def match_case(new: str, old: str) -> str:
    """`new` capitalised like `old` (`Great` -> `Outstanding`, `GREAT` -> `OUTSTANDING`)."""
    if old.isupper() and len(old) > 1:
        return new.upper()
    return new[0].upper() + new[1:] if old[:1].isupper() else new
