"""`data.augment`: extra training rows from EDA operations, masked-LM replacement and back-translation.

Only the training split is augmented. Each example gets `copies` new rows, each
made by one operation drawn at random from the enabled ones; copies identical
to their original (or to an earlier copy) are dropped. The result is seeded and
cached beside the token ids, keyed by the training rows and the `augment:`
section, so a second run reads it back instead of translating again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from kerasft.config import AugmentConfig, Config
from kerasft.data.augment.eda import OPERATIONS, Eda
from kerasft.data.cache import read_or_forget, write_whole
from kerasft.data.splits import Split, Splits
from kerasft.tasks import TaskSpec

_VERSION = 2  # bump when the operations change what they produce


@dataclasses.dataclass(frozen=True)
class Job:
    """One augmented copy to make: the example, the operation, the texts (words) it produced."""

    row: int
    operation: str
    words: list[str]
    pair: list[str] | None = None
    tags: list[int] | None = None


def augment_training(cfg: Config, spec: TaskSpec, splits: Splits) -> tuple[Splits, list[dict]]:
    """The splits with augmented rows appended to `train`, and those rows as readable records.

    Raises:
        ConfigError: WordNet, the masked LM or a translation model cannot be loaded.
        ModelError: a model directory cannot be read.
        DataError: a bad templates file, or label names that do not fit the labels.
    """
    augment = cfg.data.augment
    assert augment is not None
    train = splits.train
    seed = cfg.training.seed if augment.seed is None else augment.seed
    cache = _cache_file(cfg, train, seed)
    jobs: list[Job] | None = []  # templates only
    if augment.operations():
        jobs = read_or_forget(cache, _read_jobs)
        if jobs is not None:
            print(f"augmented rows read from the cache {cache}")
        else:
            jobs = make_copies(augment, spec, splits, seed, _masked_lm_directory(cfg))
            if cache is not None:
                lines = "".join(json.dumps(dataclasses.asdict(j)) + "\n" for j in jobs)
                write_whole(cache, lambda tmp: tmp.write_text(lines, encoding="utf-8"))
        counts = Counter(j.operation for j in jobs)
        print(
            f"augmentation: +{len(jobs)} training rows from {len(train)} "
            f"({', '.join(f'{op} {n}' for op, n in sorted(counts.items()))})"
        )
    augmented = _append(train, jobs, spec)
    records = _records(jobs, train, splits, spec)
    if augment.templates is not None:
        augmented, made = _templated(augment, spec, splits.vocab.names, augmented, seed)
        records += made
    if augment.label_template is not None:
        augmented, made = _label_rows(augment, spec, splits.vocab.names, augmented)
        records += made
    return dataclasses.replace(splits, train=augmented), records


def _templated(
    augment: AugmentConfig, spec: TaskSpec, names: tuple[str, ...], train: Split, seed: int
) -> tuple[Split, list[dict]]:
    """`train` with the examples `data.augment.templates` generates appended, and their records."""
    from kerasft.data.augment.templates import generate

    t = augment.templates
    made = generate(t.file, t.per_label, names, seed, set(map(_text, train.texts)))
    return _with_made(
        spec, names, train, made, f"templates: +{len(made)} training rows from {t.file}", "template"
    )


def _label_rows(
    augment: AugmentConfig, spec: TaskSpec, names: tuple[str, ...], train: Split
) -> tuple[Split, list[dict]]:
    """`train` with one `data.augment.label_template` row per label appended, and their records."""
    from kerasft.data.augment.templates import label_texts

    made = label_texts(
        augment.label_template, augment.label_names, names, set(map(_text, train.texts))
    )
    what = f"label_template: +{len(made)} training rows"
    return _with_made(spec, names, train, made, what, "label_template")


def _with_made(
    spec: TaskSpec,
    names: tuple[str, ...],
    train: Split,
    made: list[tuple[str, tuple[str, ...], int | None]],
    what: str,
    operation: str,
) -> tuple[Split, list[dict]]:
    """`train` with the generated `(text, labels, template number or None)` rows appended, and
    their records (`operation`, and the template's number where there is one)."""
    index = {name: i for i, name in enumerate(names)}
    if spec.multi_hot:
        targets = np.zeros((len(made), len(names)), np.float32)
        for row, (_, labels, _) in enumerate(made):
            targets[row, [index[label] for label in labels]] = 1.0
    else:
        targets = np.asarray([index[labels[0]] for _, labels, _ in made], np.int32)
    counts = Counter("|".join(labels) for _, labels, _ in made)
    print(f"{what} ({', '.join(f'{k} {n}' for k, n in sorted(counts.items()))})")
    records = [
        {
            "operation": operation,
            **({"template": number} if number is not None else {}),
            "text": text,
            "label": list(labels) if spec.multi_hot else labels[0],
        }
        for text, labels, number in made
    ]
    grown = dataclasses.replace(
        train,
        texts=list(train.texts) + [text for text, _, _ in made],
        targets=np.concatenate(
            [np.asarray(train.targets), targets.astype(np.asarray(train.targets).dtype)]
        ),
        columns={k: list(v) + [""] * len(made) for k, v in train.columns.items()},
    )
    return grown, records


def make_copies(
    augment: AugmentConfig,
    spec: TaskSpec,
    splits: Splits,
    seed: int,
    masked_lm: Path | None = None,
) -> list[Job]:
    """The augmented copies of every training example (the ones equal to what exists are dropped)."""
    train = splits.train
    tags_of = _tags(spec, train)
    outside = splits.vocab.index().get("O") if spec.per_token else None
    eda = Eda(
        {op: getattr(augment, op) for op in OPERATIONS},
        frozenset(w.lower() for w in augment.protected),
        outside,
    )
    switcher = None
    if augment.code_switch is not None:
        from kerasft.data.augment.code_switch import CodeSwitcher

        switcher = CodeSwitcher(augment.code_switch, eda.protected)
    rng = np.random.default_rng(seed)
    operations = augment.operations()
    jobs, deferred = [], []
    for row in range(len(train)):
        words = _words(train.texts[row])
        pair = train.pairs[row].split() if train.pairs is not None else None
        for _ in range(augment.copies):
            op = operations[rng.integers(len(operations))]
            if op in OPERATIONS:
                new, tags = eda.apply(op, words, rng, tags_of(row))
                new_pair = eda.apply(op, pair, rng)[0] if pair is not None else None
                jobs.append(Job(row, op, new, new_pair, tags))
            elif op == "code_switch":  # word for word: tags stay aligned
                new_pair = switcher.apply(pair, rng) if pair is not None else None
                jobs.append(Job(row, op, switcher.apply(words, rng), new_pair, tags_of(row)))
            else:
                deferred.append(Job(row, op, words, pair, tags_of(row)))
    jobs += _contextual(
        augment, eda, masked_lm, [j for j in deferred if j.operation == "contextual"], rng
    )
    jobs += _back_translated(augment, [j for j in deferred if j.operation == "back_translation"])
    return _distinct(sorted(jobs, key=lambda j: j.row), train)


def _contextual(augment, eda, masked_lm, jobs, rng) -> list[Job]:
    if not jobs:
        return []
    from kerasft.data.augment.contextual import MaskedLmReplacer

    replacer = MaskedLmReplacer(masked_lm)
    return replacer.replace(jobs, eda, augment.contextual, rng)


def _back_translated(augment: AugmentConfig, jobs: list[Job]) -> list[Job]:
    if not jobs:
        return []
    from kerasft.data.augment.translate import BackTranslator

    translator = BackTranslator(augment.back_translation)
    texts = [" ".join(j.words) for j in jobs]
    pairs = [" ".join(j.pair) for j in jobs if j.pair is not None]
    done = translator.round_trip(texts + pairs)
    out, paired = [], iter(done[len(texts) :])
    for job, text in zip(jobs, done[: len(texts)], strict=True):
        pair = next(paired).split() if job.pair is not None else None
        out.append(dataclasses.replace(job, words=text.split(), pair=pair))
    return out


def _distinct(jobs: list[Job], train: Split) -> list[Job]:
    """The jobs whose texts differ from their original and from the example's earlier copies."""
    seen, kept = set(), []
    for job in jobs:
        original = (
            tuple(_words(train.texts[job.row])),
            train.pairs[job.row] if train.pairs else None,
        )
        key = (job.row, tuple(job.words), " ".join(job.pair) if job.pair is not None else None)
        if job.words and (tuple(job.words), key[2]) != original and key not in seen:
            seen.add(key)
            kept.append(job)
    return kept


def _append(train: Split, jobs: list[Job], spec: TaskSpec) -> Split:
    rows = np.array([j.row for j in jobs], dtype=np.int64)
    texts = [j.words if spec.per_token else " ".join(j.words) for j in jobs]
    if spec.per_token:
        targets = list(train.targets) + [np.asarray(j.tags, dtype=np.int32) for j in jobs]
    else:
        targets = np.concatenate([train.targets, np.asarray(train.targets)[rows]])
    pairs = None
    if train.pairs is not None:
        pairs = list(train.pairs) + [" ".join(j.pair or []) for j in jobs]
    columns = {k: list(v) + [v[r] for r in rows] for k, v in train.columns.items()}
    return dataclasses.replace(
        train, texts=list(train.texts) + texts, targets=targets, pairs=pairs, columns=columns
    )


def _records(jobs: list[Job], train: Split, splits: Splits, spec: TaskSpec) -> list[dict]:
    """What `augmented.jsonl` shows per row: the original, the operation, the new text and the label."""
    names = splits.vocab.names
    records = []
    for job in jobs:
        record: dict[str, Any] = {
            "row": job.row,
            "operation": job.operation,
            "original": _text(train.texts[job.row]),
            "text": " ".join(job.words),
        }
        if job.pair is not None:
            record["original_pair"] = train.pairs[job.row]
            record["pair"] = " ".join(job.pair)
        record["label"] = _label(
            train.targets[job.row] if job.tags is None else job.tags, names, spec
        )
        records.append(record)
    return records


def _label(target: Any, names: tuple[str, ...], spec: TaskSpec) -> Any:
    if spec.numeric:
        return float(target)
    if spec.per_token:
        return [names[t] for t in target]
    if spec.multi_hot:
        return [names[i] for i in np.flatnonzero(target)]
    return names[int(target)]


def _tags(spec: TaskSpec, train: Split):
    if not spec.per_token:
        return lambda row: None
    return lambda row: [int(t) for t in train.targets[row]]


def _words(text: Any) -> list[str]:
    return list(text) if isinstance(text, list | tuple) else str(text).split()


def _text(text: Any) -> str:
    return " ".join(text) if isinstance(text, list | tuple) else str(text)


def _masked_lm_directory(cfg: Config) -> Path | None:
    augment = cfg.data.augment
    if augment is None or augment.contextual == 0:
        return None
    from kerasft.models import resolve_backbone

    return resolve_backbone(augment.contextual_model or cfg.model.backbone)


def _read_jobs(path: Path) -> list[Job]:
    return [Job(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()]


def _cache_file(cfg: Config, train: Split, seed: int) -> Path | None:
    if cfg.data.cache_dir is None:
        return None
    digest = hashlib.sha256()
    augment = cfg.data.augment
    digest.update(json.dumps([_VERSION, seed, augment.model_dump(), cfg.model.backbone]).encode())
    if augment.code_switch is not None:  # the dictionaries' contents, not only their names
        from kerasft.data.augment.code_switch import read_dictionary

        for path in augment.code_switch.dictionaries:  # checked even when the cache answers
            digest.update(json.dumps(read_dictionary(path), sort_keys=True).encode())
    for text in train.texts:
        digest.update(_text(text).encode("utf-8", "surrogatepass") + b"\0")
    for pair in train.pairs or []:
        digest.update(pair.encode("utf-8", "surrogatepass") + b"\0")
    for target in train.targets:
        digest.update(np.asarray(target).tobytes())
    return Path(cfg.data.cache_dir) / f"augment-{digest.hexdigest()[:24]}.jsonl"
