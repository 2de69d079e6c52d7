from __future__ import annotations

import numpy as np
import pytest

from kerasft.config import DataConfig
from kerasft.data import (
    LabelVocab,
    Split,
    encode,
    eval_dataset,
    load_splits,
    read_source,
    resolve_path,
    steps_per_epoch,
    train_dataset,
    xla_widths,
)
from kerasft.errors import DataError
from kerasft.models import load_tokenizer
from kerasft.tasks import TASKS


def cfg(path, **kw) -> DataConfig:
    return DataConfig(train=str(path), **kw)


def read_table(path, data_cfg, task="classification"):
    return read_source(str(path), data_cfg, TASKS[task])[0]


def write(tmp_path, text: str, name="d.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_latin1_file_reads_with_configured_encoding(tmp_path):
    path = write(tmp_path, "text,label\ncaf\xe9 ok,a\nna\xefve,b\n", encoding="latin-1")
    frame = read_table(path, cfg(path, encoding="latin-1"))
    assert frame["text"].tolist() == ["café ok", "naïve"]


def test_undecodable_bytes_name_the_line_and_suggest_an_encoding(tmp_path):
    path = write(tmp_path, "text,label\nfine,a\ncaf\xe9,b\n", encoding="latin-1")
    with pytest.raises(
        DataError, match=r"d.csv:3: bytes that are not valid utf-8.*`data.encoding`"
    ):
        read_table(path, cfg(path))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_byte_order_mark_names_the_encoding_to_set(tmp_path, encoding):
    path = tmp_path / "d.csv"
    text = "text,label\nfine,a\ngood,b\n"
    bom = {"utf-16-be": b"\xfe\xff"}.get(encoding, b"")  # Python writes LE marks itself
    path.write_bytes(bom + text.encode(encoding))
    named = encoding[:6]
    with pytest.raises(
        DataError,
        match=rf"d.csv: the file begins with a {named.upper()} byte-order mark, so "
        rf"it is not utf-8. Set `data.encoding: {named}`.",
    ):
        read_table(path, cfg(path))
    assert read_table(path, cfg(path, encoding=named))["text"].tolist() == ["fine", "good"]


def test_missing_column_lists_the_columns_present(tmp_path):
    path = write(tmp_path, "sentence,label\nx,a\n")
    with pytest.raises(
        DataError,
        match=r"no column `text` \(set by `data.text_column`\). Columns present: sentence, label",
    ):
        read_table(path, cfg(path))
    tabbed = write(tmp_path, "text\tlabel\nx\ta\n", "tabbed.csv")
    with pytest.raises(
        DataError, match=r'header looks "\\t"-separated: set `data.delimiter: "\\t"`'
    ):
        read_table(tabbed, cfg(tabbed))
    assert read_table(tabbed, cfg(tabbed, delimiter="\t"))["text"].tolist() == ["x"]


def test_empty_texts_are_dropped_with_a_count(tmp_path, capsys):
    path = write(tmp_path, "text,label\nx,a\n,b\n   ,a\ny,b\n")
    frame = read_table(path, cfg(path))
    assert frame["text"].tolist() == ["x", "y"]
    assert "dropped 2 rows with empty text" in capsys.readouterr().out


def test_empty_label_names_the_line(tmp_path):
    path = write(tmp_path, "text,label\nx,a\ny,\n")
    with pytest.raises(DataError, match=r"d.csv:3: empty label"):
        read_table(path, cfg(path))


@pytest.mark.parametrize(
    ("content", "message"), [("", "the file is empty"), ("text,label\n", "header but no rows")]
)
def test_empty_files(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(DataError, match=message):
        read_table(path, cfg(path))


def test_jsonl_and_tsv(tmp_path):
    jsonl = write(
        tmp_path, '{"text": "x", "label": 1}\n{"text": "y", "label": 0}\n', name="d.jsonl"
    )
    assert read_table(jsonl, cfg(jsonl))["label"].tolist() == ["1", "0"]
    tsv = write(tmp_path, 'text\tlabel\nsays "hi", ok\ta\n', name="d.tsv")
    assert read_table(tsv, cfg(tsv))["text"].tolist() == ['says "hi", ok']


def test_missing_file_and_missing_package():
    with pytest.raises(DataError, match=r"`data.train`: data file not found: nowhere.csv"):
        resolve_path("nowhere.csv")
    with pytest.raises(DataError, match=r"package `no_such_pkg`.*is not installed"):
        resolve_path("pkg:no_such_pkg/x.csv")


def test_label_vocab_orders_integers_numerically():
    import pandas as pd

    assert LabelVocab.from_labels(pd.Series(["10", "2", "1"])).names == ("1", "2", "10")
    assert LabelVocab.from_labels(pd.Series(["pos", "neg", "neu"])).names == ("neg", "neu", "pos")


def test_splits_are_stratified_and_seeded(tmp_path):
    rows = "\n".join(f"t{i},{'a' if i % 4 else 'b'}" for i in range(200))
    path = write(tmp_path, "text,label\n" + rows + "\n")
    splits = load_splits(cfg(path, validation_split=0.1, test_split=0.2), seed=1)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (140, 20, 40)
    assert np.bincount(splits.test.targets).tolist() == [30, 10]  # 3:1 like the file
    again = load_splits(cfg(path, validation_split=0.1, test_split=0.2), seed=1)
    assert again.test.texts == splits.test.texts
    all_texts = splits.train.texts + splits.validation.texts + splits.test.texts
    assert len(set(all_texts)) == 200


def test_held_out_splits_leave_every_label_in_training(tmp_path):
    """Once: 150 labels of 2 rows each, split at random (too many labels to stratify), left
    label L104 out of training, and the run stopped on "label 'L104' is not in the label
    vocabulary" for a split kerasft made itself."""
    rows = "".join(f"t{i},L{i % 150}\n" for i in range(300))
    path = write(tmp_path, "text,label\n" + rows)
    for seed in range(3):
        splits = load_splits(cfg(path, validation_split=0.1, test_split=0.1), seed=seed)
        assert (len(splits.train), len(splits.validation), len(splits.test)) == (240, 30, 30)
        assert len(splits.vocab.names) == 150 and len(set(splits.train.targets)) == 150
        again = load_splits(cfg(path, validation_split=0.1, test_split=0.1), seed=seed)
        assert again.validation.texts == splits.validation.texts  # still seeded
    small = write(tmp_path, "text,label\na,x\nb,y\nc,z\nd,x\n", "small.csv")
    with pytest.raises(DataError, match="small.csv: 4 rows; too few to hold out 1 for test") as err:
        load_splits(cfg(small, validation_split=0.25, test_split=0.25), seed=0)
    assert "keep a row of every label. Give a separate `data.test` file" in str(err.value)
    eight = write(tmp_path, "text,label\n" + "a,x\nb,y\n" * 4, "eight.csv")
    with pytest.raises(DataError, match="8 rows, 2 held out for test; too few to hold out 5 for "):
        load_splits(cfg(eight, validation_split=0.6, test_split=0.25), seed=0)
    capped = cfg(eight, validation_split=0.25, test_split=0, max_train_examples=1)
    with pytest.raises(DataError, match=r"eight.csv: `data.max_train_examples: 1` keeps too few"):
        load_splits(capped, seed=0)


def test_held_out_texts_that_training_has_too_are_counted_and_said(tmp_path, capsys):
    """Nothing said that a validation or test file was the training file (scores of examples
    trained on), or that duplicated rows put training texts into the carved splits."""
    from kerasft.data.splits import also_in_training

    rows = "".join(f"text {i},{i % 2}\n" for i in range(40))
    train = write(tmp_path, "text,label\n" + rows)
    held = write(tmp_path, "text,label\n  TEXT 1 ,1\nnew one,0\ntext 2,0\nother,1\n", "h.csv")
    splits = load_splits(cfg(train, validation=str(held), test=str(train)), seed=0)
    out = capsys.readouterr().out
    assert "validation: 2 of 4 examples (50.0%) have a text that is also in training" in out
    assert "warning: test: 40 of 40 examples (100.0%)" in out
    assert "Is `data.test` the training file, or a copy of it?" in out
    assert also_in_training(splits.validation, splits.train) == 2  # case and outer spaces aside

    twice = write(tmp_path, "text,label\n" + rows + rows, "twice.csv")
    load_splits(cfg(twice, validation_split=0.2, test_split=0.2), seed=0)
    out = capsys.readouterr().out
    assert "The training data repeats its texts" in out and "`data.validation`" not in out

    load_splits(cfg(train, validation_split=0.2, test_split=0.2), seed=0)
    assert "also in training" not in capsys.readouterr().out


def test_several_training_files_are_one_training_set_and_errors_name_the_file(tmp_path):
    first = write(
        tmp_path, "text\tlabel\n" + "".join(f"a{i}\t{i % 2}\n" for i in range(60)), "a.tsv"
    )
    second = write(
        tmp_path, "text,label\n" + "".join(f"b{i},{i % 2}\n" for i in range(40)), "b.csv"
    )
    data = DataConfig(train=[str(first), str(second)], validation_split=0.1, test_split=0.1)
    splits = load_splits(data, seed=0)
    texts = splits.train.texts + splits.validation.texts + splits.test.texts
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (80, 10, 10)
    assert sorted(texts) == sorted([f"a{i}" for i in range(60)] + [f"b{i}" for i in range(40)])
    assert splits.train.source == f"{first} + {second}"
    broken = write(tmp_path, "text,label\nfine,0\nno label,\n", "c.csv")
    with pytest.raises(DataError, match=r"c.csv:3: empty label"):
        load_splits(DataConfig(train=[str(first), str(broken)]), seed=0)
    with pytest.raises(DataError, match=r"`data.train\[1\]`: data file not found: gone.csv"):
        load_splits(DataConfig(train=[str(first), "gone.csv"]), seed=0)
    for bad in ([], [str(first), 3], {"a": "b"}):
        with pytest.raises(ValueError, match="or a non-empty list of them; got"):
            DataConfig(train=bad)


def test_max_train_examples_keeps_held_out_sets_fixed(tmp_path):
    rows = "\n".join(f"t{i},{i % 3}" for i in range(300))
    path = write(tmp_path, "text,label\n" + rows + "\n")
    full = load_splits(cfg(path), seed=0)
    capped = load_splits(cfg(path, max_train_examples=50), seed=0)
    assert len(capped.train) == 50
    assert capped.test.texts == full.test.texts
    assert capped.vocab.names == ("0", "1", "2")


def test_single_class_is_an_error(tmp_path):
    path = write(tmp_path, "text,label\n" + "\n".join(f"t{i},only" for i in range(20)) + "\n")
    with pytest.raises(DataError, match=r"single class \['only'\]"):
        load_splits(cfg(path), seed=0)


def test_label_unseen_in_training_is_named(tmp_path):
    train = write(tmp_path, "text,label\nx,a\ny,b\nz,a\n", name="train.csv")
    val = write(tmp_path, "text,label\nx,a\ny,c\n", name="val.csv")
    with pytest.raises(
        DataError, match=r"val.csv:3: label 'c' is not in the label vocabulary \['a', 'b'\]"
    ):
        load_splits(DataConfig(train=str(train), validation=str(val), test_split=0), seed=0)


@pytest.fixture
def encoded(tiny_bert_dir):
    texts = [
        "good",
        "the movie was very good",
        "bad film",
        "the plot was not very fun at all , very boring",
    ] * 5
    split = Split(texts, np.arange(20, dtype=np.int32) % 2, "mem")
    return encode(load_tokenizer(tiny_bert_dir), split, max_length=8)


def test_encode_truncates_and_keeps_model_inputs(encoded):
    assert set(encoded.features) == {"input_ids", "token_type_ids", "attention_mask"}
    assert encoded.lengths.max() == 8 and encoded.lengths.min() == 3
    assert encoded.features["input_ids"].size == encoded.lengths.sum()


@pytest.mark.parametrize("bucketing", [True, False])
def test_train_batches_pad_per_batch_and_cover_every_example(encoded, bucketing):
    ds = train_dataset(encoded, 3, pad_id=0, bucketing=bucketing, max_length=8, seed=0)
    batches = list(ds)
    assert len(batches) == steps_per_epoch(encoded, 3) == 7
    # Every batch is full but the epoch's last; every example comes once.
    assert [int(y.shape[0]) for _, y in batches] == [3] * 6 + [2]
    assert sorted(sum((y.numpy().tolist() for _, y in batches), [])) == [0] * 10 + [1] * 10
    for x, _ in batches:
        lengths = x["attention_mask"].numpy().sum(axis=1)
        assert (
            x["input_ids"].shape[1] == lengths.max()
        )  # padded to the longest in the batch, not to 8
        assert (x["input_ids"].numpy()[x["attention_mask"].numpy() == 0] == 0).all()


def test_bucketing_sorts_the_epoch_by_length_and_shuffles_the_batches(encoded):
    def batches(seed):
        ds = train_dataset(encoded, 2, pad_id=0, bucketing=True, max_length=64, seed=seed)
        return [x["attention_mask"].numpy().sum(axis=1) for x, _ in ds]

    first = batches(0)
    assert len(first) == 10
    # Sorted, then cut: two batches share at most their boundary length.
    ranges = sorted((b.min(), b.max()) for b in first)
    assert all(hi <= lo for (_, hi), (lo, _) in zip(ranges, ranges[1:], strict=False))
    # The batches come in random order, not from the shortest to the longest.
    widths = [b.max() for b in first]
    assert widths != sorted(widths)
    assert any((a != b).any() for a, b in zip(first, batches(1), strict=True))


@pytest.mark.parametrize("bucketing,window", [(False, 0), (True, 1)])
def test_bucketing_pads_less_than_random_batches(encoded, bucketing, window):
    def padded(bucketing, window=0):
        ds = train_dataset(
            encoded, 5, pad_id=0, bucketing=bucketing, max_length=64, seed=0, window=window
        )
        return sum(int(x["input_ids"].shape[0] * x["input_ids"].shape[1]) for x, _ in ds)

    # The fixture's lengths come in runs of five: sorted batches of five need no padding.
    assert padded(True) == int(encoded.lengths.sum())
    # Windows of one batch are plain random batches.
    assert padded(bucketing, window) > padded(True)


def test_eval_dataset_is_deterministic_and_sorted(encoded):
    first = [y.numpy().tolist() for _, y in eval_dataset(encoded, 6, pad_id=0)]
    second = [y.numpy().tolist() for _, y in eval_dataset(encoded, 6, pad_id=0)]
    assert first == second
    widths = [x["input_ids"].shape[1] for x, _ in eval_dataset(encoded, 6, pad_id=0)]
    assert widths == sorted(widths)


@pytest.mark.parametrize("seed", [0, 7])
def test_epoch_order_depends_on_seed_and_epoch_only_and_skips_on_resume(encoded, seed):
    import tensorflow as tf

    tf.random.set_seed(seed)  # as training does: seed 0 once crashed the shuffle here
    epoch = tf.Variable(0, dtype=tf.int64)
    skip = tf.Variable(0, dtype=tf.int64)

    def order(take=-1):
        ds = train_dataset(
            encoded,
            4,
            pad_id=0,
            bucketing=False,
            max_length=8,
            seed=seed,
            epoch=epoch,
            skip=skip,
        )
        return [y.numpy().tolist() for _, y in ds.take(take)]

    first = order()
    assert order() == first  # the same epoch number: the same batches
    epoch.assign(1)
    second = order()
    assert second != first and sorted(sum(second, [])) == sorted(sum(first, []))
    skip.assign(2)
    # A resumed epoch leaves out the batches already trained (Keras asks only for the rest).
    assert order(take=len(second) - 2) == second[2:]


@pytest.mark.parametrize("token_targets", [True, False])
def test_fixed_widths_pad_token_targets_with_the_ignore_index(token_targets):
    from kerasft.data.labels import IGNORE_INDEX
    from kerasft.data.tokenize import Encoded

    lengths = np.array([3, 5, 6, 9], np.int64)
    ids = np.arange(1, lengths.sum() + 1, dtype=np.int32)
    features = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    # Token classification: one tag per token; multi-label: one row of labels per example.
    targets = np.full(lengths.sum(), 1, np.int32) if token_targets else np.eye(4, dtype=np.float32)
    encoded = Encoded(features, lengths, targets, token_targets)
    ds = train_dataset(
        encoded, 1, pad_id=0, bucketing=True, max_length=16, seed=0, fixed_widths=True
    )
    for x, y in ds:
        n = int(x["attention_mask"].numpy().sum())
        width = x["input_ids"].shape[1]
        assert width == min(w for w in xla_widths(16) if w >= n)
        assert (x["input_ids"].numpy()[0, n:] == 0).all()
        if token_targets:
            assert y.shape == (1, width) and (y.numpy()[0, n:] == IGNORE_INDEX).all()
        else:
            assert y.shape == (1, 4)


def test_target_standardisation_returns_new_splits_and_leaves_the_input_alone():
    from kerasft.data import LabelVocab, Splits, standardise_targets

    def split(values):
        return Split(["t"] * len(values), np.array(values, np.float32), "x.csv")

    splits = Splits(split([1.0, 3.0]), split([5.0]), split([]), LabelVocab(()))
    scaled, (mean, std) = standardise_targets(splits)
    assert (mean, std) == (2.0, 1.0)
    assert scaled.train.targets.tolist() == [-1.0, 1.0] and scaled.validation.targets.tolist() == [
        3.0
    ]
    assert splits.train.targets.tolist() == [1.0, 3.0]  # the caller's splits are unchanged
