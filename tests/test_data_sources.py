"""Every source format, every task's labels, bad input, tag alignment, the token cache, the shared data sets."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from kerasft.config import DataConfig
from kerasft.data import IGNORE_INDEX, Split, encode, eval_dataset, load_splits, read_source
from kerasft.errors import DataError
from kerasft.models import load_tokenizer
from kerasft.tasks import TASKS
from tests.conftest import SHARED_DATA


def write(tmp_path, text, name="d.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def read(path, task="classification", **kw):
    return read_source(str(path), DataConfig(train=str(path), **kw), TASKS[task])[0]


def test_headerless_tsv_by_position_with_quotes_as_text(tmp_path):
    path = write(
        tmp_path,
        '1\tid\tHe said "hi\tthere"\n0\tid\tno\tquote"s\n'.replace("\tthere", " there").replace(
            "\tquote", " quote"
        ),
        "d.tsv",
    )
    frame = read(path, header=False, quoting="none", text_column=2, label_column=0)
    assert frame["text"].tolist() == ['He said "hi there"', 'no quote"s']
    assert frame["label"].tolist() == ["1", "0"]
    assert frame["line"].tolist() == [1, 2]


def test_auto_header_detects_a_bom_header_row_like_mrpc_test(tmp_path):
    body = "\ufeffQuality\t#1 ID\t#1 String\n1\t7\tA\n0\t8\tB\n1\t9\tC\n"
    path = write(tmp_path, body, "d.tsv")
    frame = read(path, text_column=2, label_column=0, quoting="none")
    assert frame["label"].tolist() == ["1", "0", "1"] and frame["line"].tolist() == [2, 3, 4]
    no_header = write(tmp_path, "1\t7\tA\n0\t8\tB\n", "e.tsv")
    assert read(no_header, text_column=2, label_column=0)["text"].tolist() == ["A", "B"]


def test_bom_is_stripped_from_named_header(tmp_path):
    path = write(tmp_path, "\ufefftext,label\nx,a\n")
    assert read(path)["text"].tolist() == ["x"]


def test_custom_delimiter_and_pair_column(tmp_path):
    path = write(tmp_path, "a;b;y\nhello;world;1\n", "d.csv")
    frame = read(path, delimiter=";", text_column="a", text_pair_column="b", label_column="y")
    assert frame[["text", "text_pair", "label"]].values.tolist() == [["hello", "world", "1"]]


def test_ragged_rows_name_the_line_of_the_file(tmp_path):
    """pandas counts records, so a quoted text over three lines shifted its "line 4" by two."""
    path = write(tmp_path, 'text,label\n"x\nover\nlines",a\n\ny,b,extra\n')
    with pytest.raises(
        DataError, match=r"d.csv:6: 3 fields where the first line has 2\. .*`data.delimiter`"
    ):
        read(path)
    tsv = write(tmp_path, "text\tlabel\nx\ta\ny\tb\textra\n", "d.tsv")
    with pytest.raises(DataError, match=r"d.tsv:3: 3 fields .* holds a tab must be quoted"):
        read(tsv)


def test_an_unclosed_quote_names_the_line_it_opens_on(tmp_path):
    path = write(tmp_path, 'text,label\nx,a\n"never closed,b\ny,a\nz,b\n')
    with pytest.raises(
        DataError,
        match=r"d.csv:3: a quote opened on this line is never closed\. .*`data.quoting: none`",
    ):
        read(path)


def test_a_header_that_names_a_column_twice_is_refused(tmp_path):
    path = write(tmp_path, "text,text,label\nx,y,a\n")
    with pytest.raises(DataError, match=r"d.csv:1: the header names column `text` 2 times"):
        read(path)


@pytest.mark.parametrize(
    ("row", "column", "kind"),
    [
        ('{"text": {"title": "x"}, "label": "a"}', "text", "an object"),
        ('{"text": ["x", "y"], "label": "a"}', "text", "a list"),
        ('{"text": "x", "label": ["a"]}', "label", "a list"),
    ],
)
def test_a_list_or_object_where_a_value_belongs_names_its_line(tmp_path, row, column, kind):
    """They used to train on their printed form ("{'title': 'x'}")."""
    path = write(tmp_path, '{"text": "fine", "label": "a"}\n' + row + "\n", "d.jsonl")
    with pytest.raises(
        DataError,
        match=rf"d.jsonl:2: column `{column}` .* holds {kind}, not a single value \(1 row in all\)",
    ):
        read(path)
    numbers = write(tmp_path, '{"text": 12345, "label": 1}\n', "n.jsonl")
    assert read(numbers)[["text", "label"]].values.tolist() == [["12345", "1"]]


def test_a_parquet_list_column_as_text_is_refused(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": [["a", "b"], ["c"]], "label": ["x", "y"]}).to_parquet(path)
    with pytest.raises(
        DataError, match=r"d.parquet:1: column `text` .* holds a list, .*\(2 rows in all\)"
    ):
        read(path)


def test_a_parquet_binary_column_reads_as_utf8_text(tmp_path):
    """Binary text columns were trained on as their printed form, "b'caf\\xc3\\xa9'"."""
    from kerasft.data.rows import read_text_column

    path = tmp_path / "d.parquet"
    texts = ["café".encode(), b"plain"]
    pd.DataFrame({"text": texts, "label": [b"x", b"y"]}).to_parquet(path)
    frame = read(path)
    assert frame["text"].tolist() == ["café", "plain"] and frame["label"].tolist() == ["x", "y"]
    assert read_text_column(path, "text", key="distill.unlabeled") == ["café", "plain"]
    pd.DataFrame({"text": [b"ok", b"caf\xe9"], "label": ["x", "y"]}).to_parquet(path)
    with pytest.raises(
        DataError, match=r"d.parquet:2: column `text` .* holds bytes that are not UTF-8"
    ):
        read(path)


def test_column_position_out_of_range(tmp_path):
    path = write(tmp_path, "x\t1\n", "d.tsv")
    with pytest.raises(
        DataError, match=r"`data.label_column: 5` is past the last column; the data has 2 columns"
    ):
        read(path, header=False, text_column=0, label_column=5)


def test_named_columns_need_a_header(tmp_path):
    path = write(tmp_path, "x,1\n")
    with pytest.raises(DataError, match=r"columns must be given by position"):
        read(path, header=False)


def test_parquet_and_dataframe(tmp_path):
    frame = pd.DataFrame({"text": ["a b", "c"], "label": ["x", "y"]})
    frame.to_parquet(tmp_path / "d.parquet")
    assert read(tmp_path / "d.parquet")["text"].tolist() == ["a b", "c"]
    rows = pd.DataFrame({"text": [f"t{i}" for i in range(30)], "label": ["p", "n", "m"] * 10})
    splits = load_splits(DataConfig(train="<frames>"), seed=0, frames={"train": rows})
    assert len(splits.train) == 24 and splits.vocab.names == ("m", "n", "p")


def test_datasets_folder_with_split_names_and_class_labels(tmp_path):
    import datasets

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )

    def make(n):
        return datasets.Dataset.from_dict(
            {"sentence": [f"s{i}" for i in range(n)], "label": [i % 2 for i in range(n)]},
            features=features,
        )  # noqa: E731

    datasets.DatasetDict({"train": make(20), "validation": make(6)}).save_to_disk(
        str(tmp_path / "ds")
    )
    cfg = DataConfig(
        train=str(tmp_path / "ds"),
        validation=f"{tmp_path / 'ds'}@validation",
        text_column="sentence",
        test_split=0.0,
    )
    splits = load_splits(cfg, seed=0)
    assert (len(splits.train), len(splits.validation)) == (20, 6)
    assert splits.vocab.names == ("neg", "pos")
    with pytest.raises(DataError, match=r"has no split `test`; it has train, validation"):
        load_splits(
            DataConfig(
                train=str(tmp_path / "ds"), test=f"{tmp_path / 'ds'}@test", text_column="sentence"
            ),
            seed=0,
        )


@pytest.mark.parametrize("damage", ["data-00000-of-00001.arrow", "dataset_info.json"])
def test_a_damaged_datasets_folder_is_one_line(tmp_path, damage):
    """pyarrow's ArrowInvalid and a JSONDecodeError were tracebacks."""
    import datasets

    datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["x", "y"]}).save_to_disk(
        str(tmp_path / "ds")
    )
    path = tmp_path / "ds" / damage
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(
        DataError, match=r"ds: this `datasets` folder cannot be read .*save_to_disk"
    ):
        load_splits(DataConfig(train=str(tmp_path / "ds")), seed=0)


def test_hub_dataset_offline_fails_with_advice():
    with pytest.raises(
        DataError,
        match=r"cannot load `some/dataset` split `train` from the Hugging Face Hub.*save_to_disk",
    ):
        read_source("hf:some/dataset", DataConfig(train="hf:some/dataset"), "classification")


def test_hub_dataset_offline_says_only_the_advice(tmp_path):
    """In a fresh process (pytest's log capture hides it in this one): once, before the
    advice, huggingface_hub's own line per failed request and retry, "'(MaxRetryError(...'
    thrown while requesting HEAD https://huggingface.co/...", eleven lines over 25 s. Offline
    here; with network the name is not on the hub. Either way: where it looks, then the error."""
    import subprocess
    import sys

    code = (
        "from kerasft.config import DataConfig\n"
        "from kerasft.data import read_source\n"
        "from kerasft.errors import DataError\n"
        "try:\n"
        "    read_source('hf:kerasft_no_such_dataset', DataConfig(train='hf:x'), 'classification')\n"
        "except DataError as exc:\n"
        "    print('error:', exc)\n"
    )
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines[0].startswith("loading `kerasft_no_such_dataset` split `train`"), lines
    assert lines[-1].startswith("error: `data.train`: cannot load"), lines
    assert len(lines) == 2, lines  # offline, huggingface_hub retried five times, silently


def test_multi_label_from_lists_and_delimited_strings(tmp_path, capsys):
    jsonl = write(
        tmp_path,
        '{"text": "a", "label": ["x", "y"]}\n{"text": "b", "label": []}\n{"text": "c", "label": ["y"]}\n',
        "d.jsonl",
    )
    splits = load_splits(
        DataConfig(train=str(jsonl), validation=str(jsonl), test_split=0),
        seed=0,
        task=TASKS["multi_label"],
    )
    assert splits.vocab.names == ("x", "y")
    assert splits.validation.targets.tolist() == [[1, 1], [0, 0], [0, 1]]
    assert "Is `data.validation` the training file" in capsys.readouterr().out  # it is, here
    csv = write(tmp_path, "text,label\na,x|y\nb,\nc,y\n")
    frame = read(csv, task="multi_label", label_delimiter="|")
    assert frame["label"].tolist() == [["x", "y"], [], ["y"]]
    assert "warning" not in capsys.readouterr().out
    # Without the delimiter, `x|y` is one label: said, with the key to set.
    assert read(csv, task="multi_label")["label"].tolist() == [["x|y"], [], ["y"]]
    assert "labels such as 'x|y' hold `|`. If they are lists, set `data.label_delimiter: '|'`" in (
        capsys.readouterr().out
    )
    slash = write(tmp_path, "text,label\na,sci/tech\nb,sport\n", "s.csv")
    read(slash, task="multi_label")
    assert "warning" not in capsys.readouterr().out


def test_whole_number_float_labels_are_the_integers_a_csv_holds(tmp_path):
    """Once: a CSV's `1` and a JSONL validation file's `1.0` were two labels, and the run
    stopped on "label '0.0' is not in the label vocabulary ['0', '1']"."""
    train = write(tmp_path, "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(8)))
    rows = [f'{{"text": "v{i}", "label": {i % 2}.0}}\n' for i in range(4)]
    validation = write(tmp_path, "".join(rows), "v.jsonl")
    splits = load_splits(
        DataConfig(train=str(train), validation=str(validation), test_split=0),
        seed=0,
        task=TASKS["classification"],
    )
    assert splits.vocab.names == ("0", "1")
    assert splits.validation.targets.tolist() == [0, 1, 0, 1]
    floats = tmp_path / "f.parquet"  # a float column, as pandas writes one with gaps
    pd.DataFrame({"text": ["a", "b", "c"], "label": [1.0, 2.5, np.float32(3)]}).to_parquet(floats)
    assert read(floats)["label"].tolist() == ["1", "2.5", "3"]
    ml = write(tmp_path, '{"text": "a", "label": [1.0, "x"]}\n', "m.jsonl")
    assert read(ml, task="multi_label")["label"].tolist() == [["1", "x"]]


def test_regression_targets_and_nan_is_rejected(tmp_path):
    path = write(tmp_path, "text,label\na,1.5\nb,4\n")
    assert read(path, task="regression")["label"].tolist() == [1.5, 4.0]
    bad = write(tmp_path, "text,label\na,1.5\nb,nan\nc,high\n", "bad.csv")
    with pytest.raises(
        DataError, match=r"bad.csv:3: target that is not a finite number.*got 'nan'; 2 rows in all"
    ):
        read(bad, task="regression")


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def test_conll_sentences_and_docstart(tmp_path):
    frame = read(write(tmp_path, CONLL, "d.conll"), task="token_classification")
    assert frame["text"].tolist() == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert frame["label"].tolist() == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    assert frame["line"].tolist() == [3, 7]


def test_conll_line_without_tag_is_named(tmp_path):
    path = write(tmp_path, "EU B-ORG\nrejects\n", "d.conll")
    with pytest.raises(DataError, match=r"d.conll:2: expected `token TAG`, got 1 field"):
        read(path, task="token_classification")


def test_jsonl_tokens_and_tags_must_match(tmp_path):
    path = write(
        tmp_path,
        '{"tokens": ["a", "b"], "tags": ["O", "O"]}\n{"tokens": ["a"], "tags": ["O", "B-X"]}\n',
        "d.jsonl",
    )
    with pytest.raises(DataError, match=r"d.jsonl:2: 1 words but 2 tags"):
        read(path, task="token_classification", text_column="tokens", label_column="tags")


def test_invalid_json_line_is_named(tmp_path):
    path = write(tmp_path, '{"text": "a", "label": 1}\n{"text": \n', "d.jsonl")
    with pytest.raises(DataError, match=r"d.jsonl:2: invalid JSON"):
        read(path)


def test_empty_text_can_be_an_error(tmp_path):
    path = write(tmp_path, "text,label\nx,a\n,b\n")
    with pytest.raises(
        DataError, match=r"d.csv:3: empty text \(1 rows in all\).*`data.empty_text: drop`"
    ):
        read(path, empty_text="error")


def test_balanced_class_weights(tmp_path, capsys):
    path = write(
        tmp_path,
        "text,label\n" + "\n".join(f"t{i},{'a' if i < 30 else 'b'}" for i in range(40)) + "\n",
    )
    splits = load_splits(
        DataConfig(train=str(path), validation_split=0.1, test_split=0.1, class_weights="balanced"),
        seed=0,
    )
    assert splits.class_weights == pytest.approx({0: 32 / (2 * 24), 1: 32 / (2 * 8)})
    assert "class weights: a 0.667, b 2.000" in capsys.readouterr().out


def test_tags_align_to_first_subtoken(tiny_bert_dir):
    tokenizer = load_tokenizer(tiny_bert_dir)

    words = ["good", "fun,", "movie"]  # "fun," → "fun" "," (two sub-tokens)
    split = Split([words], [np.array([1, 2, 3], np.int32)], "mem")
    encoded = encode(tokenizer, split, max_length=16, task=TASKS["token_classification"])
    ids = encoded.features["input_ids"].tolist()
    assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "good", "fun", ",", "movie", "[SEP]"]
    assert encoded.targets.tolist() == [IGNORE_INDEX, 1, 2, IGNORE_INDEX, 3, IGNORE_INDEX]
    x, y = next(iter(eval_dataset(encoded, 4, pad_id=0)))
    assert y.numpy().tolist() == [encoded.targets.tolist()]


def test_pairs_get_token_type_ids(tiny_bert_dir):
    tokenizer = load_tokenizer(tiny_bert_dir)
    encoded = encode(
        tokenizer, Split(["good movie"], np.array([1], np.int32), "mem", pairs=["bad film"]), 16
    )
    assert encoded.features["token_type_ids"].tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_token_cache_is_reused_and_keyed_by_max_length(tiny_bert_dir, tmp_path, monkeypatch):
    tokenizer = load_tokenizer(tiny_bert_dir)
    split = Split(["good movie", "the plot was boring"] * 50, np.zeros(100, np.int32), "mem")
    first = encode(tokenizer, split, 16, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("tokens-*.arrow"))) == 1
    calls = []
    original = type(tokenizer).__call__
    monkeypatch.setattr(
        type(tokenizer),
        "__call__",
        lambda self, *a, **k: calls.append(1) or original(self, *a, **k),
    )
    second = encode(tokenizer, split, 16, cache_dir=tmp_path)
    assert calls == []  # served from the cache
    np.testing.assert_array_equal(first.features["input_ids"], second.features["input_ids"])
    encode(tokenizer, split, 4, cache_dir=tmp_path)
    assert calls and len(list(tmp_path.glob("tokens-*.arrow"))) == 2


def test_a_damaged_cache_file_is_computed_again(tiny_bert_dir, tmp_path, capsys):
    """A token cache file cut short was a pyarrow `ArrowInvalid` traceback on every later run
    of the same data; the augmented-row and teacher-output caches share the reader."""
    from kerasft.data.cache import read_or_forget, write_whole

    tokenizer = load_tokenizer(tiny_bert_dir)
    split = Split(["good movie", "the plot was boring"] * 50, np.zeros(100, np.int32), "mem")
    first = encode(tokenizer, split, 16, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("tokens-*.arrow")
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size * 9 // 10])
    again = encode(tokenizer, split, 16, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.features["input_ids"], again.features["input_ids"])
    assert f"cache: {cached} cannot be read" in capsys.readouterr().out
    encode(tokenizer, split, 16, cache_dir=tmp_path)  # the file written again is whole
    shown = capsys.readouterr()
    assert "cannot be read" not in shown.out and "(from the cache)" in shown.out + shown.err

    def save(path):
        with path.open("wb") as handle:
            np.save(handle, np.arange(1000))

    array = tmp_path / "a.npy"
    write_whole(array, save)
    assert sorted(p.name for p in tmp_path.glob("a.npy*")) == ["a.npy"]
    np.testing.assert_array_equal(read_or_forget(array, np.load), np.arange(1000))
    array.write_bytes(array.read_bytes()[:500])
    assert read_or_forget(array, np.load) is None and not array.exists()
    assert f"cache: {array} cannot be read (" in capsys.readouterr().out


needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent")


@needs_shared
def test_shared_sst2_loads():
    cfg = DataConfig(
        train=str(SHARED_DATA / "sst2/train.tsv"),
        validation=str(SHARED_DATA / "sst2/glue_dev.tsv"),
        text_column="sentence",
        quoting="none",
        test_split=0.0,
    )
    splits = load_splits(cfg, seed=0)
    assert len(splits.validation) == 872 and splits.vocab.names == ("0", "1")
    assert len(splits.train) > 60_000


@needs_shared
def test_shared_mrpc_loads_with_positions_and_test_header():
    cfg = DataConfig(
        train=str(SHARED_DATA / "mrpc/train.tsv"),
        validation=str(SHARED_DATA / "mrpc/dev.tsv"),
        test=str(SHARED_DATA / "mrpc/test.tsv"),
        quoting="none",
        text_column=3,
        text_pair_column=4,
        label_column=0,
    )
    splits = load_splits(cfg, seed=0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (2576, 1500, 1725)
    assert splits.test.pairs is not None and splits.vocab.names == ("0", "1")


@needs_shared
def test_shared_stsb_loads_as_regression():
    cfg = DataConfig(
        train=str(SHARED_DATA / "stsb/train.tsv"),
        validation=str(SHARED_DATA / "stsb/dev.tsv"),
        quoting="none",
        text_column=7,
        text_pair_column=8,
        label_column=9,
        test_split=0.0,
    )
    splits = load_splits(cfg, seed=0, task=TASKS["regression"])
    assert (len(splits.train), len(splits.validation)) == (4249, 1500)
    assert splits.validation.targets.min() >= 0 and splits.validation.targets.max() <= 5


@needs_shared
def test_shared_conll_loads():
    cfg = DataConfig(
        train=str(SHARED_DATA / "conll2003/train.txt"),
        validation=str(SHARED_DATA / "conll2003/dev.txt"),
        test=str(SHARED_DATA / "conll2003/test.txt"),
    )
    splits = load_splits(cfg, seed=0, task=TASKS["token_classification"])
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (14041, 3250, 3453)
    assert set(splits.vocab.names) == {
        "O",
        "B-PER",
        "I-PER",
        "B-LOC",
        "I-LOC",
        "B-ORG",
        "I-ORG",
        "B-MISC",
        "I-MISC",
    }
