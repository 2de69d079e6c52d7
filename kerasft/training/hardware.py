"""What the machine offers, for choices made with `auto`."""

from __future__ import annotations

import os
from pathlib import Path

from kerasft._compat import keras, tf


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
# Under this many training examples (or contrastive pairs) a run's epoch is short, and `auto`
# keeps float32 on a CPU with native bfloat16: on SST-2, mixed_bfloat16 scored 1.9 points lower
# at 200 labels and 0.5 at 1,000, and saved no time there (bench/README.md, "Hundreds of labels").
FLOAT32_BELOW = 2000


def resolve_precision(
    setting: str, train_rows: int | None = None, pairs: bool = False
) -> tuple[str, str]:
    """The Keras policy for `training.precision`, and why it was chosen.

    Args:
        setting: `auto` or a policy's name.
        train_rows: what an epoch trains on, when known: with fewer than `FLOAT32_BELOW`,
            `auto` trains in float32 on a CPU with native bfloat16. Defaults to unknown (the
            hardware alone decides).
        pairs: the rows are sentence pairs (`training.method: contrastive`), not examples.

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
        cpu = f"CPU with native bfloat16 ({', '.join(sorted(native))})"
        if train_rows is not None and train_rows < FLOAT32_BELOW:
            return "float32", (
                f"{cpu}, but {train_rows:,} training {'pairs' if pairs else 'examples'}: under "
                f"{FLOAT32_BELOW:,} mixed_bfloat16 saves little time"
            )
        return "mixed_bfloat16", cpu
    return "float32", "no GPU, TPU or CPU with native 16-bit floats"


def settle_precision(setting: str, train_rows: int, pairs: bool = False) -> None:
    """Sets the policy a run's model is built and trained under (`resolve_precision` with what
    an epoch trains on) and, for `auto`, prints which and why."""
    policy, why = resolve_precision(setting, train_rows, pairs)
    keras.mixed_precision.set_global_policy(policy)
    if setting == "auto":
        print(f"precision: {policy} ({why})")


def resolve_jit(setting: bool | str) -> bool:
    """Whether to compile with XLA for `training.jit_compile`."""
    if setting != "auto":
        return bool(setting)
    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_logical_devices("TPU"))
