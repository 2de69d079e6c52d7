"""The config reference in docs/config.md, generated from the field descriptions."""

from __future__ import annotations

import typing
from pathlib import Path

from pydantic import BaseModel

from kerasft.config.base import section_of
from kerasft.config.sections import PretrainConfig
from kerasft.config.validation import Config


def reference() -> str:
    """A Markdown table of every config key, its default and its description."""
    rows = ["| key | default | what it does |", "| --- | --- | --- |"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            section = section_of(field.annotation)
            if section is not None:
                walk(section, f"{prefix}{name}.")
                continue
            if typing.get_origin(field.annotation) is dict:
                rows.append(f"| `{prefix}{name}` | required | {field.description} |")
                walk(typing.get_args(field.annotation)[1], f"{prefix}{name}.<key>.")
                continue
            default = (
                "required"
                if field.is_required()
                else f"`{field.default!r}`".replace("None", "null")
            )
            rows.append(f"| `{prefix}{name}` | {default} | {field.description or ''} |")

    walk(Config, "")
    rows.append(
        "| `pretrain` | | Used by `kerasft.pretrain` only, in a config of its own with `name` and "
        "`model.backbone` (and `model.hidden_dropout`/`attention_dropout`): |"
    )
    walk(PretrainConfig, "pretrain.")
    return "\n".join(rows)


def update_reference(path: str | Path = "docs/config.md") -> None:
    """Rewrites the config reference between the `config-reference` markers of `path`."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start = text.index("<!-- config-reference:start -->\n") + len(
        "<!-- config-reference:start -->\n"
    )
    end = text.index("\n<!-- config-reference:end -->")
    path.write_text(text[:start] + reference() + text[end:], encoding="utf-8")
