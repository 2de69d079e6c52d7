"""SST-2 in ../shared/data, as the benchmarks read it."""

from __future__ import annotations

import sys
from pathlib import Path

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def require_sst2() -> None:
    """Exits with a one-line error when ../shared/data is absent."""
    if not SST2.is_dir():
        sys.exit(f"error: {SST2} is absent; this benchmark needs ../shared/data")


def sst2_data(max_train: int | None, cache_dir: Path, max_length: int = 128) -> dict:
    """A `data:` config section: SST-2 training phrases, GLUE SST-2 dev as the validation split, no test split."""
    return {
        "train": str(SST2 / "train.tsv"),
        "validation": str(SST2 / "glue_dev.tsv"),
        "test_split": 0.0,
        "text_column": "sentence",
        "quoting": "none",
        "max_train_examples": max_train,
        "max_length": max_length,
        "cache_dir": str(cache_dir),
    }
