"""Tokenization with the backbone's fast tokenizer, through `datasets.map`, cached on disk.

The cache key covers the texts, the tokenizer (its full serialised form) and the
max length, so a second run on the same data skips tokenization and a change to
any of them tokenizes afresh.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from kerasft import progress
from kerasft.data.cache import forget
from kerasft.data.labels import IGNORE_INDEX
from kerasft.data.splits import Split
from kerasft.errors import ModelError
from kerasft.models.backbones import model_input_names
from kerasft.tasks import TASKS, TaskSpec


@dataclasses.dataclass
class Encoded:
    """Token ids of one split as flat arrays plus row lengths (cheap to hold, fast to slice).

    `targets` is per example (`[N]` or `[N, C]`), except for token classification,
    where it is flat and per token like the features (`token_targets` is then True).
    """

    features: dict[str, np.ndarray]
    lengths: np.ndarray
    targets: np.ndarray
    token_targets: bool = False
    # seq2seq: `targets` holds the target token ids, flat, `target_lengths[i]` per example.
    target_lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.lengths)


def encode(
    tokenizer: Any,
    split: Split,
    max_length: int,
    task: TaskSpec = TASKS["classification"],
    cache_dir: str | Path | None = None,
) -> Encoded:
    """Tokenizes a split, truncating to `max_length`; tags are aligned to the first sub-token of each word.

    Args:
        tokenizer: the backbone's Hugging Face tokenizer.
        split: texts (word lists for token classification), optional pairs and targets.
        max_length: longest sequence kept, special tokens included.
        task: the config's task spec. Defaults to classification.
        cache_dir: folder of the token-id cache; None turns caching off. Defaults to None.
    """
    names = model_input_names(tokenizer)
    token_targets = task.per_token
    if token_targets and not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            "token_classification needs a fast (Rust) tokenizer to align tags to sub-tokens."
        )
    if len(split) == 0:
        empty = np.zeros(0, np.int32)
        return Encoded(
            dict.fromkeys(names, empty),
            np.zeros(0, np.int64),
            np.asarray(split.targets),
            token_targets,
        )

    columns: dict[str, list] = {"text": split.texts}
    if split.pairs is not None:
        columns["text_pair"] = split.pairs
    if token_targets:
        columns["tags"] = [t.tolist() for t in split.targets]

    done = _tokenized_table(tokenizer, columns, names, max_length, token_targets, cache_dir, split)
    arrow = done.data.table
    features, lengths = {}, None
    for name in (*names, *(["labels"] if token_targets else [])):
        column = arrow.column(name).combine_chunks()
        features[name] = column.flatten().to_numpy(zero_copy_only=False).astype(np.int32)
        lengths = column.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    targets = features.pop("labels") if token_targets else np.asarray(split.targets)
    truncated = int((lengths >= max_length).sum())
    if truncated:
        print(
            f"{Path(split.source).name}: {truncated} of {len(split)} examples "
            f"({100 * truncated / len(split):.1f}%) reach max_length {max_length} and are truncated"
        )
    return Encoded(features, lengths, targets, token_targets)


def _tokenized_table(tokenizer, columns, names, max_length, token_targets, cache_dir, split):
    """The columns tokenized by `datasets.map`, from the content-keyed cache file when it exists."""
    import datasets

    outputs = (*names, *(["labels"] if token_targets else []))

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        if token_targets:
            out = tokenizer(
                batch["text"], is_split_into_words=True, truncation=True, max_length=max_length
            )
            out["labels"] = [_align(out.word_ids(i), tags) for i, tags in enumerate(batch["tags"])]
        else:
            out = tokenizer(
                batch["text"], batch.get("text_pair"), truncation=True, max_length=max_length
            )
        return {k: out[k] for k in outputs}

    datasets.disable_caching()  # only our explicit, content-keyed cache file
    table = datasets.Dataset.from_dict(columns)
    cache_file = None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache_file = str(
            Path(cache_dir) / f"tokens-{_cache_key(tokenizer, columns, max_length)}.arrow"
        )
    # datasets writes the cache file under a name of its own and renames it when complete.
    run = functools.partial(
        table.map,
        tokenize,
        batched=True,
        batch_size=1000,
        remove_columns=list(columns),
        cache_file_name=cache_file,
    )
    desc = f"tokenizing {Path(split.source).name}"
    if cache_file is not None and Path(cache_file).is_file():
        try:
            with progress.datasets_work(len(table), "examples", f"{desc} (from the cache)"):
                return run(load_from_cache_file=True, desc=f"{desc} (from the cache)")
        except Exception as exc:  # noqa: BLE001 - nothing is tokenized when the cache answers
            forget(Path(cache_file), exc)
    with progress.datasets_work(len(table), "examples", desc):
        return run(load_from_cache_file=False, desc=desc)


def _align(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """The first sub-token of each word carries its tag; other sub-tokens and special tokens are ignored."""
    out, previous = [], None
    for word in word_ids:
        out.append(IGNORE_INDEX if word is None or word == previous else tags[word])
        previous = word
    return out


def _cache_key(tokenizer: Any, columns: dict[str, list], max_length: int) -> str:
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Truncation and padding settings change as the tokenizer is used; they are not its identity.
        state = json.loads(backend.to_str())
        state["truncation"] = state["padding"] = None
        identity = json.dumps(state, sort_keys=True)
    else:
        identity = json.dumps(sorted(tokenizer.get_vocab().items()))
    digest.update(f"{type(tokenizer).__name__}|{max_length}|".encode())
    digest.update(identity.encode())
    for name in sorted(columns):
        digest.update(name.encode())
        digest.update(json.dumps(columns[name], ensure_ascii=False).encode())
    return digest.hexdigest()[:24]


def encode_seq2seq(
    tokenizer: Any,
    split: Split,
    max_length: int,
    max_target_length: int,
    prefix: str = "",
) -> Encoded:
    """Source token ids (`prefix` + text, truncated to `max_length`) and target token ids
    (the tokenizer's target side, truncated to `max_target_length`, end token included).
    """
    names = ("input_ids", "attention_mask")
    if len(split) == 0:
        empty = np.zeros(0, np.int32)
        return Encoded(
            dict.fromkeys(names, empty), np.zeros(0, np.int64), empty, False, np.zeros(0, np.int64)
        )
    sources = tokenizer([prefix + t for t in split.texts])["input_ids"]
    targets = tokenizer(text_target=[str(t) for t in split.targets])["input_ids"]
    name = Path(split.source).name
    for what, rows, n in (("source", sources, max_length), ("target", targets, max_target_length)):
        truncated = sum(len(ids) > n for ids in rows)
        if truncated:
            key = "data.max_length" if what == "source" else "data.max_target_length"
            print(
                f"{name}: {truncated} of {len(split)} {what} texts ({100 * truncated / len(split):.1f}%) "
                f"are longer than {n} tokens and are truncated (`{key}`)"
            )
    # As the tokenizer truncates: the first n - 1 tokens, then the closing special token.
    sources = [
        ids if len(ids) <= max_length else [*ids[: max_length - 1], ids[-1]] for ids in sources
    ]
    targets = [
        ids if len(ids) <= max_target_length else [*ids[: max_target_length - 1], ids[-1]]
        for ids in targets
    ]
    lengths = np.array([len(ids) for ids in sources], np.int64)
    target_lengths = np.array([len(ids) for ids in targets], np.int64)
    flat = np.concatenate([np.asarray(ids, np.int32) for ids in sources])
    return Encoded(
        {"input_ids": flat, "attention_mask": np.ones_like(flat)},
        lengths,
        np.concatenate([np.asarray(ids, np.int32) for ids in targets]),
        False,
        target_lengths,
    )
