"""Where each variable sits in a backbone (embeddings, encoder layer i, head), and the rates of each group.

Layers are found by Hugging Face's TF naming (`.../layer_._<i>/...`); layer-wise
decay, per-group rates and optimizers, gradual unfreezing's rate log and the run
report all group variables this way.
"""

from __future__ import annotations

import re

from kerasft._compat import keras
from kerasft.errors import ConfigError

_LAYER = re.compile(r"/layer_\._(\d+)/")
# Encoder-decoder models: T5's `encoder/block_._<i>/`, BART's and Marian's `encoder/layers.<i>/`.
_STACK = re.compile(r"/(encoder|decoder)/(?:block_\._|layers\.)(\d+)/")
_EMBEDDINGS = ("embeddings", "/shared/", "embed_tokens", "embed_positions")


def layer_depths(model: keras.Model, variables: list | None = None) -> dict[str, int]:
    """Depth of every trainable variable: 0 for embeddings, i+1 for encoder layer i, top for the rest.

    Layers are found by Hugging Face's TF naming (`.../layer_._<i>/...`), which BERT, RoBERTa,
    DistilBERT, ELECTRA, XLM-R and MiniLM share; everything that is neither embedding nor
    encoder layer (pooler, task head) sits on top. Encoder-decoder models (T5, BART,
    Marian) stack the decoder's layers above the encoder's: encoder layer i at i+1,
    decoder layer j at (encoder layers) + j + 1; the LM head and final norms on top.

    Args:
        variables: the variables to place. Defaults to the model's trainable ones.
    """
    names = [v.name for v in (model.trainable_variables if variables is None else variables)]
    stacks = {n: (m.group(1), int(m.group(2))) for n in names if (m := _STACK.search(n))}
    if stacks:
        encoder = 1 + max((i for side, i in stacks.values() if side == "encoder"), default=-1)
        place = {
            n: i + 1 + (encoder if side == "decoder" else 0) for n, (side, i) in stacks.items()
        }
    else:
        place = {n: int(m.group(1)) + 1 for n in names if (m := _LAYER.search(n))}
    top = max(place.values(), default=0) + 1
    depths = {}
    for name in names:
        if name in place:
            depths[name] = place[name]
        elif any(marker in name for marker in _EMBEDDINGS):
            depths[name] = 0
        else:
            depths[name] = top
    return depths


def depth_groups(model: keras.Model, variables: list | None = None) -> dict[str, str]:
    """Every variable (the trainable ones by default) → its group: `embeddings`, `layer_<i>`
    (`encoder_<i>` and `decoder_<j>` in encoder-decoder models) or `head`."""
    names = [v.name for v in (model.trainable_variables if variables is None else variables)]
    depths = layer_depths(model, variables)
    top = max(depths.values(), default=0)
    stacks = {n: m for n in names if (m := _STACK.search(n))}
    groups = {}
    for name, depth in depths.items():
        if name in stacks and depth not in (0, top):
            groups[name] = f"{stacks[name].group(1)}_{int(stacks[name].group(2))}"
        else:
            groups[name] = group_of(depth, top)
    return groups


def layerwise_multipliers(model: keras.Model, decay: float) -> dict[str, float]:
    """Learning-rate multipliers `decay ** (top - depth)`: the head at the full rate, lower layers less."""
    depths = layer_depths(model)
    top = max(depths.values(), default=0)
    return {name: float(decay ** (top - depth)) for name, depth in depths.items()}


def group_of(depth: int, top: int) -> str:
    """The name of a depth group: `embeddings`, `layer_<i>` or `head`."""
    return "embeddings" if depth == 0 else "head" if depth == top else f"layer_{depth - 1}"


def variable_groups(model: keras.Model) -> dict[str, str]:
    """Every weight of the model (frozen ones too) → its group: `embeddings`, `layer_<i>` or `head`."""
    return depth_groups(model, model.weights)


def current_rates(optimizer, groups: dict[str, str], trainable: set[str]) -> dict[str, float]:
    """The learning rate each group's last update used; 0 for a group with nothing trainable.

    A group's rate is the schedule's current value times the mean multiplier of its
    trainable variables (layer-wise decay, per-group rates), or its own optimizer's
    rate under `group_optimizers`.

    Args:
        groups: variable name → group, from `variable_groups`.
        trainable: names of the variables that train now (frozen and not yet unfrozen ones
            are left out).
    """
    subs = getattr(optimizer, "optimizers", None)
    base = _value(optimizer.learning_rate) if subs is None else None
    multipliers = getattr(optimizer, "lr_multipliers", {})
    members: dict[str, list[str]] = {}
    for name, group in groups.items():
        members.setdefault(group, []).append(name)
    rates = {}
    for group, names in members.items():
        live = [n for n in names if n in trainable]
        if not live:
            rates[group] = 0.0
        elif subs is not None:
            rates[group] = _value(subs.get(group, subs["default"]).learning_rate)
        else:
            rates[group] = base * sum(multipliers.get(n, 1.0) for n in live) / len(live)
    return rates


def _value(rate) -> float:
    """A learning rate (a float, tensor, or a variable that may be mirrored across replicas) as a float."""
    return float(keras.backend.get_value(rate))


def group_multipliers(model: keras.Model, rates: dict[str, float], base: float) -> dict[str, float]:
    """Multipliers that give each named group its own learning rate (others keep `base`).

    Raises:
        ConfigError: a group name the model does not have.
    """
    groups = depth_groups(model)
    names = sorted(set(groups.values()), key=lambda g: (g != "embeddings", g == "head", g))
    unknown = sorted(set(rates) - set(names))
    if unknown:
        raise ConfigError(
            f"`training.group_learning_rates`: no group `{unknown[0]}` in this model; groups: {', '.join(names)}."
        )
    return {name: rates.get(group, base) / base for name, group in groups.items()}
