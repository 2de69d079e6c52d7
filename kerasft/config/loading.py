"""Reading a config: strict YAML, `--set` overrides, validation errors that name the file and key."""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kerasft.config.base import MAX_ECHO, MAX_YAML_DEPTH, MAX_YAML_VALUES, section_of
from kerasft.config.training import TuningConfig
from kerasft.config.validation import Config
from kerasft.errors import ConfigError


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Reads a YAML config, applies `--set key=value` overrides and validates it.

    Args:
        path: the YAML file.
        overrides: strings `dotted.key=value`; the value is parsed as YAML, so
            `training.epochs=2` gives an integer. Defaults to none.

    Raises:
        ConfigError: the file is missing or invalid, or an override is malformed.
    """
    return config_from_dict(load_raw(path), source=str(path), overrides=overrides)


def load_raw(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The config file as a plain dict with the overrides applied, before validation.

    Raises:
        ConfigError: the file is missing, not YAML, or an override is malformed.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--config {path} is a directory. Pass a YAML file, e.g. {path}/x.yaml.")
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}. Pass an existing YAML file to --config.")
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text. Save the config as UTF-8.") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror}).") from None
    if raw is None:
        raise ConfigError(
            f"{path} is empty. A config needs at least `name:` and `data: {{train: ...}}`; "
            "configs/quickstart.yaml is a commented example."
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}."
        )
    for item in overrides:
        _apply_override(raw, item)
    return raw


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys and bounds aliases and nesting."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise ConfigError(
                    f"{self.source}:{line}: nested more than {MAX_YAML_DEPTH} levels deep; "
                    "a config has a few levels of sections."
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key; SafeLoader says so below
                continue
            if first != line:
                raise ConfigError(
                    f"{self.source}:{line}: duplicate key `{_echo(key)}` (first set on line {first}); "
                    "keep one of them."
                )
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text as Python values, with `_StrictLoader`'s limits.

    Raises:
        ConfigError: invalid YAML, a duplicate key, too many aliases or too deep nesting,
            naming `source` and the line.
    """
    loader = _StrictLoader(text, source)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_VALUES:
            raise ConfigError(
                f"{source}: expands to {size:,} values through YAML aliases (`*name`), more than "
                f"{MAX_YAML_VALUES:,}; write the values out instead of nesting aliases."
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        hint = " YAML indents with spaces; replace the tabs." if "'\\t'" in problem else ""
        raise ConfigError(f"{where}: invalid YAML ({_echo(problem)}).{hint}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to read.") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values `node` stands for once every alias is written out (shared nodes count
    once per use), computed without expanding anything."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a cycle counts once, not forever
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = total
    return total


def _echo(value: Any, limit: int = MAX_ECHO, quote: bool = False) -> str:
    """`value` as an error message shows it: its repr for non-strings (and strings with `quote`),
    cut to `limit` characters."""
    if quote or not isinstance(value, str):
        import reprlib

        short = reprlib.Repr()  # never builds the full repr of a huge value
        short.maxlevel, short.maxlist, short.maxdict, short.maxstring = 3, 6, 6, limit
        value = short.repr(value)
    return value if len(value) <= limit else value[: limit - 3] + "..."


def add_override_argument(
    parser: Any, example: str = "training.epochs=2", what: str = "override a config key"
) -> None:
    """The `--set KEY=VALUE` option every command that reads a config shares."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{what}, e.g. --set {example} (repeatable; the value is read as YAML)",
    )


def config_from_dict(
    raw: dict[str, Any],
    source: str = "<dict>",
    overrides: list[str] | tuple[str, ...] = (),
    root: type[BaseModel] = Config,
) -> Any:
    """Validates a plain dict, with `dotted.key=value` overrides applied, as a `Config`.

    Args:
        root: the config class to validate as, e.g. `PretrainRun`. Defaults to `Config`.

    Raises:
        ConfigError: naming `source`, or the `--set` override that gave the bad key.
    """
    for item in overrides:
        _apply_override(raw, item)
    try:
        return root.model_validate(raw)
    except ValidationError as exc:
        errors = _merge_union_branches(exc.errors())
        message = _describe(errors[0], raw, _origin(errors[0], source, overrides), root)
        if len(errors) > 1:
            message += (
                f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} in {source})"
            )
        raise ConfigError(message) from None


def dump_config(config: Config) -> str:
    """The fully resolved config as YAML, every default written out."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"Invalid override `{_echo(item)}`. Expected `dotted.key=value`, e.g. `training.epochs=2`."
        )
    try:
        value = parse_yaml(text, f"--set {key}") if text.strip() else None
    except ConfigError:
        value = text
    set_dotted(raw, key, value, f"Invalid override `{_echo(item)}`")


def set_dotted(raw: dict[str, Any], key: str, value: Any, context: str = "Invalid key") -> None:
    """Sets `raw[a][b][c] = value` for the key `a.b.c`, creating sections on the way.

    Raises:
        ConfigError: a part of the key names a value, not a section (`context` starts the message).
    """
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"{context}: `{where}` is a value, not a section.")
        node = child
    node[parts[-1]] = value


def _origin(error: dict[str, Any], source: str, overrides: list[str] | tuple[str, ...]) -> str:
    """Where the key an error is about came from: the last `--set` that wrote it; else
    `source`, with the `--set`s inside it when the error is about a whole section (one of
    its checks across keys)."""
    dotted = ".".join(str(p) for p in error["loc"])
    for item in reversed(overrides):
        key = item.partition("=")[0].strip()
        if dotted == key or dotted.startswith(key + "."):
            return f"--set {_echo(item)}"
    inside = [
        _echo(item)
        for item in overrides
        if not dotted or item.partition("=")[0].strip().startswith(dotted + ".")
    ]
    return f"{source} with --set {', '.join(inside)}" if inside else source


# How pydantic tags the member of a union a value failed, after the key: `str`, `int`,
# `list[str]`, `literal['a','b']`, `function-after[...]`, a section's class name.
_UNION_TAG = re.compile(r"^(str|int|float|bool|none|[a-z-]+\[.*\]|[A-Z]\w*Config)$")


def _merge_union_branches(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One error per key: a value that fits no member of a union (`str | int`) fails once per
    member, under the key plus the member's tag; those become one error at the key, its
    expectations joined by "or", so `data.text_column: null` is one problem, not two."""
    merged: dict[tuple, dict[str, Any]] = {}
    for error in errors:
        loc = tuple(error["loc"])
        while loc and isinstance(loc[-1], str) and _UNION_TAG.match(loc[-1]):
            loc = loc[:-1]
        if loc in merged and loc != tuple(error["loc"]):
            first = merged[loc]
            msg = error["msg"][:1].lower() + error["msg"][1:]
            if msg not in first["msg"]:
                first["msg"] += f", or {msg}"
            continue
        merged.setdefault(loc, {**error, "loc": loc})
    return list(merged.values())


def _describe(
    error: dict[str, Any], raw: dict[str, Any], source: str, root: type[BaseModel] = Config
) -> str:
    loc = [str(p) for p in error["loc"]]
    dotted = ".".join(loc)
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], root)
        close = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.6)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        return f"Unknown key `{_echo(dotted)}` in {source}.{hint} Allowed keys here: {', '.join(allowed)}."
    if error["type"] == "missing":
        return f"Missing required key `{dotted}` in {source}."
    if error["type"] == "value_error":
        msg = _echo(str(error.get("ctx", {}).get("error", error["msg"])), 600)
        where = f"`{dotted}` in {source}" if dotted else source
        return f"Invalid {where}: {msg}" + ("" if msg.endswith((".", "?", "!")) else ".")
    received = _echo(error.get("input"), quote=True)
    msg = error["msg"]
    expected = msg[:1].lower() + msg[1:]  # the allowed pattern or choices keep their case
    return f"Invalid value for `{dotted}` in {source}. Received: {received}. Expected: {_echo(expected, 400)}."


def _allowed_keys(loc: list[str], root: type[BaseModel] = Config) -> list[str]:
    model: type[BaseModel] = root
    for part in loc:
        if part not in model.model_fields:  # a free-form key, e.g. under tuning.space
            if model is TuningConfig or model is root:
                return []
            continue
        annotation = model.model_fields[part].annotation
        section = section_of(annotation) or section_of(
            typing.get_args(annotation)[-1] if typing.get_args(annotation) else None
        )
        if section is None:
            return []
        model = section
    return list(model.model_fields)
