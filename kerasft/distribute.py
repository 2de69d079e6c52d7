"""Distribution strategies: which one `training.distribution` means on this machine."""

from __future__ import annotations

import json
import os

from kerasft._compat import tf
from kerasft.errors import ConfigError


def resolve_strategy(setting: str) -> tuple[tf.distribute.Strategy, str]:
    """The strategy for `training.distribution`, and a description of it.

    `auto` uses MirroredStrategy when more than one GPU is visible and the default
    (single-device) strategy otherwise. `mirrored` mirrors over every GPU or, with
    none, over every logical CPU device (how tests and CPU-only machines exercise it).

    Raises:
        ConfigError: a strategy this machine cannot run.
    """
    gpus = tf.config.list_logical_devices("GPU")
    if setting == "auto":
        setting = "mirrored" if len(gpus) > 1 else "none"
        if (
            os.environ.get("TF_CONFIG")
            and len(json.loads(os.environ["TF_CONFIG"]).get("cluster", {})) > 0
        ):
            raise ConfigError(
                "TF_CONFIG names a cluster, but multi-worker training is not supported yet; unset TF_CONFIG "
                "or set `training.distribution: none`."
            )
    if setting == "none":
        return tf.distribute.get_strategy(), "one device"
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        raise ConfigError(
            "`training.distribution: mirrored` needs two or more devices; this machine shows one. "
            "Use `auto` or `none`."
        )
    return tf.distribute.MirroredStrategy(devices), f"MirroredStrategy over {len(devices)} devices"
