"""Progress bars: redrawn often on a terminal, rarely in a log file."""

from __future__ import annotations

import re
import sys
import time

import numpy as np
import pytest

from kerasft.progress import LOG_INTERVAL, bar


def _run(units: int = 200) -> None:
    with bar(units, "ex", "work") as progress:
        for _ in range(units):
            progress.update(1)
            time.sleep(0.003)  # 0.6 s in all


def test_a_log_file_gets_the_final_count_without_the_redraws(capsys):
    _run()
    err = capsys.readouterr().err
    assert "work: 100%" in err and "200/200" in err
    assert err.count("\r") <= 2  # the first draw and the last, not one per 0.1 s


def test_in_a_log_no_redraw_comes_sooner_than_the_interval():
    # tqdm's monitor thread would otherwise redraw every 10 s: seen as 12-18 s apart in a log
    with bar(10, "ex", "work") as progress:
        assert progress.mininterval == progress.maxinterval == LOG_INTERVAL


def test_a_terminal_gets_a_live_bar(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    _run()
    assert capsys.readouterr().err.count("\r") >= 4


@pytest.fixture
def datasets_bars_on(monkeypatch):
    """datasets' bars on for the test (reading a `datasets` source in another test of the
    process may have left them off), and as they were after it."""
    import datasets
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    if datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS:
        pytest.skip(
            "HF_DATASETS_DISABLE_PROGRESS_BARS=1 in this environment: datasets draws no bars"
        )
    monkeypatch.delenv("HF_DATASETS_DISABLE_PROGRESS_BARS", raising=False)
    was_disabled = are_progress_bars_disabled()
    enable_progress_bars()
    yield
    if was_disabled:
        disable_progress_bars()


def _tokenize(tiny_bert_dir, cache_dir=None) -> None:
    from kerasft.data import encode
    from kerasft.data.splits import Split
    from kerasft.models import load_tokenizer

    split = Split(["the movie was good", "bad film"] * 600, np.zeros(1200, np.int32), "train.tsv")
    encode(load_tokenizer(tiny_bert_dir), split, max_length=8, cache_dir=cache_dir)


def test_tokenizing_in_a_log_is_one_line_and_leaves_datasets_bars_on(
    tiny_bert_dir, capsys, datasets_bars_on
):
    from datasets.utils import are_progress_bars_disabled

    _tokenize(tiny_bert_dir)
    err = capsys.readouterr().err
    assert "\r" not in err and "Map" not in err
    assert re.search(r"^tokenizing train\.tsv: 1,200 examples in \d+\.\d s$", err, re.M)
    assert not are_progress_bars_disabled()


def test_tokenizing_on_a_terminal_draws_the_datasets_bar(
    tiny_bert_dir, capsys, monkeypatch, datasets_bars_on
):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    _tokenize(tiny_bert_dir)
    err = capsys.readouterr().err
    assert "tokenizing train.tsv" in err and "1200/1200" in err
    assert "examples in" not in err


def test_the_users_datasets_setting_stays_in_force(
    tiny_bert_dir, capsys, monkeypatch, datasets_bars_on
):
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "0")  # "I want them, in my log too"
    _tokenize(tiny_bert_dir)
    err = capsys.readouterr().err
    assert "1200/1200" in err and "examples in" not in err


def test_tokens_read_from_the_cache_say_so_in_a_log(
    tiny_bert_dir, capsys, tmp_path, datasets_bars_on
):
    _tokenize(tiny_bert_dir, tmp_path)
    _tokenize(tiny_bert_dir, tmp_path)
    first, second = capsys.readouterr().err.strip().splitlines()[-2:]
    assert first.startswith("tokenizing train.tsv: 1,200 examples in ")
    assert second.startswith("tokenizing train.tsv (from the cache): 1,200 examples in ")


def test_reading_a_datasets_folder_leaves_the_bars_as_they_were(tmp_path, datasets_bars_on):
    # It used to turn them off for the rest of the process, the tokenizing bar included.
    import datasets
    from datasets.utils import are_progress_bars_disabled

    from kerasft.config import DataConfig
    from kerasft.data import load_splits

    rows = {"text": [f"phrase {i}" for i in range(20)], "label": ["a", "b"] * 10}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    splits = load_splits(DataConfig(train=str(tmp_path / "ds"), test_split=0.0), seed=0)
    assert len(splits.train) + len(splits.validation) == 20
    assert not are_progress_bars_disabled()
