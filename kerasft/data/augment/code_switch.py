"""Code-switching (CoSDA-ML, Qin et al. 2020): words replaced by translations from bilingual dictionaries.

Each replaced word draws one of the target languages whose dictionary has it, then
one of its translations there, so one sentence mixes several languages.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from pathlib import Path

import numpy as np

from kerasft.config import CodeSwitchConfig
from kerasft.data.rows import first_undecodable_line
from kerasft.errors import DataError


def read_dictionary(path: str | Path) -> dict[str, list[str]]:
    """A MUSE-style dictionary: `word<TAB>translation` lines (or one space between them).

    Raises:
        DataError: the file is missing or empty, or a line is not two columns (named by number).
    """
    from kerasft.data.readers import resolve_path

    path = resolve_path(str(path), "data.augment.code_switch.dictionaries")
    if path.is_dir():
        raise DataError(
            f"`data.augment.code_switch.dictionaries`: {path} is a folder; name the file."
        )
    stat = path.stat()
    try:
        return _entries(path.resolve(), stat.st_mtime_ns, stat.st_size)
    except UnicodeDecodeError as exc:
        line = first_undecodable_line(path, "utf-8")
        raise DataError(
            f"{path}:{line}: bytes that are not valid UTF-8 ({exc.reason}); dictionaries are read "
            "as UTF-8: convert it (e.g. `iconv -f latin1 -t utf-8`)."
        ) from None


@functools.lru_cache(maxsize=16)
def _entries(path: Path, mtime_ns: int, size: int) -> dict[str, list[str]]:
    """The file's entries, read once per version of the file (the augmentation cache's key
    and the code-switcher both ask); callers only read the dict."""
    del mtime_ns, size  # part of the cache key only
    entries: dict[str, list[str]] = defaultdict(list)
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            columns = line.split("\t") if "\t" in line else line.split()
            if len(columns) != 2 or not all(c.strip() for c in columns):
                raise DataError(
                    f"{path}, line {number}: {len(columns)} column(s) in {line[:60]!r}; a dictionary line "
                    "is `word<TAB>translation`."
                )
            source, target = (c.strip() for c in columns)
            if target not in entries[source]:
                entries[source].append(target)
    if not entries:
        raise DataError(f"{path}: no `word<TAB>translation` lines in it.")
    return dict(entries)


class CodeSwitcher:
    """Replaces a share of the words that have translations (never protected ones)."""

    def __init__(self, cfg: CodeSwitchConfig, protected: frozenset[str] = frozenset()):
        self.dictionaries = [read_dictionary(p) for p in cfg.dictionaries]
        self.rate, self.lowercase, self.protected = cfg.rate, cfg.lowercase, protected

    def _key(self, word: str) -> str:
        return word.lower() if self.lowercase else word

    def apply(self, words: list[str], rng: np.random.Generator) -> list[str]:
        """`words` with about `rate` of the translatable ones translated (at least one if any)."""
        options = [
            [d[self._key(w)] for d in self.dictionaries if self._key(w) in d]
            if w.lower() not in self.protected
            else []
            for w in words
        ]
        candidates = [i for i, found in enumerate(options) if found]
        if not candidates:
            return list(words)
        k = max(1, round(self.rate * len(candidates)))
        out = list(words)
        for i in rng.choice(candidates, k, replace=False):
            translations = options[i][rng.integers(len(options[i]))]
            out[i] = translations[rng.integers(len(translations))]
        return out
