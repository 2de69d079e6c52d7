"""What the machine offers, for choices made with `auto`."""

from __future__ import annotations

import os
from pathlib import Path

from kerasft._compat import tf


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


# What `precision: auto` resolves to when set, instead of asking the hardware: lets one
# machine take another's path (mixed_bfloat16 is emulated, slowly but exactly, on AVX2 CPUs).
AUTO_PRECISION_ENV = "KERASFT_AUTO_PRECISION"
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
NATIVE_BF16 = frozenset({"avx512_bf16", "amx_bf16"})  # CPU flags of native bfloat16 arithmetic


def resolve_precision(setting: str) -> tuple[str, str]:
    """The Keras policy for `training.precision`, and why it was chosen.

    Raises:
        ConfigError: `KERASFT_AUTO_PRECISION` names no policy.
    """
    if setting != "auto":
        return setting, "set in the config"
    forced = os.environ.get(AUTO_PRECISION_ENV, "").strip()
    if forced:
        if forced not in POLICIES:
            from kerasft.errors import ConfigError

            raise ConfigError(
                f"Invalid environment variable {AUTO_PRECISION_ENV}={forced!r}. "
                f"Expected one of {', '.join(POLICIES)}, or unset it to let the hardware choose."
            )
        return forced, f"{AUTO_PRECISION_ENV}={forced}"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        if capability and tuple(capability) >= (7, 0):
            return (
                "mixed_float16",
                f"NVIDIA GPU of compute capability {capability[0]}.{capability[1]}",
            )
        return "float32", "GPU without fast float16 (compute capability below 7.0)"
    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16", "TPU"
    native = cpu_flags() & NATIVE_BF16
    if native:
        return "mixed_bfloat16", f"CPU with native bfloat16 ({', '.join(sorted(native))})"
    return "float32", "no GPU, TPU or CPU with native 16-bit floats"


def resolve_jit(setting: bool | str) -> bool:
    """Whether to compile with XLA for `training.jit_compile`."""
    if setting != "auto":
        return bool(setting)
    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_logical_devices("TPU"))
