"""Data: sources → cleaned splits and label vocabulary → token ids → tf.data.

`load_data` and `build_datasets` are the builders training calls.
`load_splits` reads the configured sources (files, `datasets` folders, hub
names, or DataFrames) into `Splits`; `encode` tokenizes a split (cached);
`train_dataset` / `eval_dataset` batch the ids for Keras.
"""

from kerasft.data.labels import IGNORE_INDEX, LabelVocab
from kerasft.data.pipeline import (
    calibration_examples,
    eval_dataset,
    eval_order,
    steps_per_epoch,
    train_dataset,
    xla_widths,
)
from kerasft.data.prepared import Data, Datasets, build_datasets, load_data, standardise_targets
from kerasft.data.readers import read_source, resolve_path
from kerasft.data.splits import Split, Splits, load_splits
from kerasft.data.tokenize import Encoded, encode, model_input_names

__all__ = [
    "IGNORE_INDEX",
    "Data",
    "Datasets",
    "build_datasets",
    "calibration_examples",
    "load_data",
    "model_input_names",
    "standardise_targets",
    "Encoded",
    "LabelVocab",
    "Split",
    "Splits",
    "encode",
    "eval_dataset",
    "eval_order",
    "load_splits",
    "read_source",
    "resolve_path",
    "steps_per_epoch",
    "train_dataset",
    "xla_widths",
]
