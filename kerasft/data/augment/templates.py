"""Synthetic labelled examples from templates with slots (`data.augment.templates`).

The file is YAML:

    slots:
      product: [phone, laptop, camera]
      good: [great, superb, reliable]
    templates:
      - {text: "the {product} was {good}", label: positive}
      - {text: "my {product} broke after a week", label: negative}

Each label gets up to `per_label` distinct texts (a seeded sample of all the ways
its templates can be filled), none equal to an existing training text.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import numpy as np

from kerasft.data.labels import is_integer
from kerasft.errors import DataError, first_line

SLOT = re.compile(r"\{([^{}]*)\}")


@dataclasses.dataclass(frozen=True)
class Template:
    number: int  # 1-based, as the file lists them
    text: str
    labels: tuple[str, ...]


def read_templates(path: str | Path) -> tuple[dict[str, list[str]], list[Template]]:
    """The slots and templates of a templates file.

    Raises:
        DataError: the file is missing or not YAML of that shape, a slot is not a list of
            strings, a template has no text or label, or uses a slot `slots:` lacks.
    """
    import yaml

    from kerasft.data.readers import resolve_path

    path = resolve_path(str(path), "data.augment.templates.file")
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"`data.augment.templates.file`: cannot read {path} ({first_line(exc)})."
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise DataError(
            f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})."
        ) from None
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("templates"), list)
        or not raw["templates"]
    ):
        raise DataError(
            f"{path}: expected a mapping with `templates:` (a list of {{text, label}}) and `slots:`."
        )
    slots = _slots(raw.get("slots") or {}, path)
    templates = []
    for number, entry in enumerate(raw["templates"], 1):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("text"), str)
            or "label" not in entry
        ):
            raise DataError(f"{path}: template {number} needs `text:` (a string) and `label:`.")
        labels = entry["label"] if isinstance(entry["label"], list) else [entry["label"]]
        outside_slots = SLOT.sub("", entry["text"])
        if "{" in outside_slots or "}" in outside_slots:
            raise DataError(
                f"{path}: template {number} ({entry['text']!r}) has a `{{` or `}}` that opens or "
                "closes no slot; a slot is written `{name}`."
            )
        for name in SLOT.findall(entry["text"]):
            if name not in slots:
                known = ", ".join(sorted(map(str, slots))) or "none"
                raise DataError(
                    f"{path}: template {number} ({entry['text']!r}) uses slot `{{{name}}}`, which "
                    f"`slots:` does not define (defined: {known}); add it or fix the name."
                )
        templates.append(Template(number, entry["text"], tuple(str(v) for v in labels)))
    return {str(k): [str(v) for v in vs] for k, vs in slots.items()}, templates


def _slots(slots: Any, path: Path) -> dict:
    """The `slots:` mapping, each a non-empty list of values; a DataError naming the first that is not."""
    if not isinstance(slots, dict):
        raise DataError(f"{path}: `slots:` must map slot names to lists of values.")
    for name, values in slots.items():
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str | int | float) for v in values)
        ):
            raise DataError(f"{path}: slot `{name}` must be a non-empty list of strings.")
    return slots


def generate(
    path: str | Path,
    per_label: int,
    label_names: tuple[str, ...],
    seed: int,
    existing: AbstractSet[str] = frozenset(),
) -> list[tuple[str, tuple[str, ...], int]]:
    """Up to `per_label` distinct `(text, labels, template number)` per label set, seeded.

    Raises:
        DataError: a bad file (`read_templates`), or a template label outside `label_names`.
    """
    slots, templates = read_templates(path)
    for t in templates:
        unknown = [label for label in t.labels if label not in label_names]
        if unknown:
            raise DataError(
                f"{path}: template {t.number}'s label {unknown[0]!r} is not in the label set "
                f"{list(label_names)}; use one of those."
            )
    rng = np.random.default_rng(seed)
    by_labels: dict[tuple[str, ...], list[Template]] = {}
    for t in templates:
        by_labels.setdefault(t.labels, []).append(t)
    out = []
    for labels, group in by_labels.items():
        texts = _fillings(group, slots, per_label, rng, existing)
        out += [(text, labels, number) for text, number in texts]
    return out


def _fillings(group, slots, per_label, rng, existing) -> list[tuple[str, int]]:
    """Distinct fillings of `group`'s templates: all of them when few, else seeded draws."""
    sizes = [math.prod(len(slots[n]) for n in SLOT.findall(t.text)) for t in group]
    if sum(sizes) <= 20 * per_label:  # few enough to list, then sample
        every = [
            (_fill(t, dict(zip(names, values, strict=True))), t.number)
            for t in group
            for names in [SLOT.findall(t.text)]
            for values in itertools.product(*(slots[n] for n in names))
        ]
        every = list(dict.fromkeys(f for f in every if f[0] not in existing))
        chosen = rng.permutation(len(every))[:per_label]
        return [every[i] for i in sorted(chosen)]
    seen: dict[str, int] = {}
    for _ in range(50 * per_label):
        t = group[rng.choice(len(group), p=np.asarray(sizes) / sum(sizes))]
        text = _fill(t, {n: slots[n][rng.integers(len(slots[n]))] for n in SLOT.findall(t.text)})
        if text not in existing:
            seen.setdefault(text, t.number)
        if len(seen) >= per_label:
            break
    return list(seen.items())


def _fill(template: Template, values: dict[str, Any]) -> str:
    return SLOT.sub(lambda m: str(values[m.group(1)]), template.text)


def label_texts(
    template: str,
    names: dict[str, str] | None,
    labels: tuple[str, ...],
    existing: AbstractSet[str] = frozenset(),
) -> list[tuple[str, tuple[str, ...], None]]:
    """One `(text, (label,), None)` per label (no template number): `template` with `{label}`
    read as the label's name (`names`, else the label itself), SetFit's templated examples;
    none equal to an `existing` text.

    Raises:
        DataError: `names` names a label outside `labels`, or a label left to read as itself is
            an integer code (the text would say nothing about the class).
    """
    names = names or {}
    unknown = [k for k in names if k not in labels]
    if unknown:
        raise DataError(
            f"`data.augment.label_names`: {unknown[0]!r} is not a label (labels: "
            f"{', '.join(labels)}); name only those."
        )
    codes = [label for label in labels if label not in names and is_integer(label)]
    if codes:
        example = ", ".join(f"{c}: ..." for c in codes[:3])
        raise DataError(
            f"`data.augment.label_template`: label {codes[0]!r} is a code, and "
            f"{template.replace('{label}', codes[0])!r} says nothing about its class; name the "
            f"labels in `data.augment.label_names`, e.g. {{{example}}}."
        )
    texts = [(template.replace("{label}", names.get(label, label)), label) for label in labels]
    return [(text, (label,), None) for text, label in texts if text not in existing]
