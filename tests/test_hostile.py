"""Hostile input ends in one line naming the file, key or line, exit status 2, nothing half-written.

Each case here once ended otherwise: a traceback, a C++ abort, 312 MB of stderr, silently
wrong labels or a directory left behind. In-process through each command's `main()`; the
cases that need a process of their own (Ctrl-C, a second live run) are in test_resume.py.
"""

from __future__ import annotations

import errno
import json
import os
import re

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.config import config_from_dict
from tests.conftest import tiny_run_config, write_yaml


def one_error_line(capsys, code: int, *fragments: str) -> str:
    """Asserts exit status 2 and one `error:` line, the last on stderr (progress bars may come
    before it), holding every fragment; no traceback."""
    err = capsys.readouterr().err.strip()
    assert code == 2, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in re.split(r"[\r\n]+", err) if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def train_main(*args: str) -> int:
    from kerasft.train import main

    return main(list(args))


@pytest.fixture
def config_file(tmp_path, tiny_bert_dir):
    raw = tiny_run_config(tmp_path, tiny_bert_dir, training={"epochs": 1})
    return write_yaml(tmp_path / "c.yaml", raw)


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("training.batch_size=1000000000", "less than or equal to 65536"),
        ("training.seed=-5", "`training.seed`"),
        ("name=A B!", "pattern '^[A-Za-z0-9][A-Za-z0-9_.-]*$'"),  # the pattern keeps its case
        # A union fails once per member; once read as `data.text_column.str` and "1 more problem"
        (
            "data.text_column=null",
            "`data.text_column` in --set data.text_column=null. Received: None. Expected: input "
            "should be a valid string, or input should be a valid integer.",
        ),
        (
            "data.label_delimiter=|",
            "`data.label_delimiter` splits the labels of `task: multi_label`",
        ),
    ],
)
def test_bad_values_are_one_line_naming_the_key(config_file, capsys, override, fragment):
    one_error_line(capsys, train_main("--config", str(config_file), "--set", override), fragment)
    assert not (config_file.parent / "runs").exists()


def test_a_duplicated_key_is_refused_naming_its_line(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\ntraining:\n  epochs: 1\n  epochs: 2\n")
    one_error_line(
        capsys, train_main("--config", str(path)), f"{path}:4: duplicate key `epochs`", "line 3"
    )


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path, capsys):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    err = one_error_line(capsys, train_main("--config", str(path)), "through YAML aliases")
    assert len(err) < 400


def test_deep_nesting_is_refused(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    one_error_line(capsys, train_main("--config", str(path)), "nested more than 50 levels")


def test_a_long_bad_value_is_not_echoed_in_full(config_file, capsys):
    err = one_error_line(
        capsys,
        train_main("--config", str(config_file), "--set", "training.epochs=" + "9x" * 100_000),
        "`training.epochs`",
    )
    assert len(err) < 1000


def test_config_that_is_a_directory_says_so(tmp_path, capsys):
    one_error_line(capsys, train_main("--config", str(tmp_path)), "is a directory")


def test_auto_precision_can_be_forced_and_a_bad_value_is_named(monkeypatch):
    from kerasft.errors import ConfigError
    from kerasft.training.hardware import resolve_precision

    monkeypatch.setenv("KERASFT_AUTO_PRECISION", "mixed_bfloat16")
    assert resolve_precision("auto")[0] == "mixed_bfloat16"
    assert resolve_precision("float32")[0] == "float32"  # an explicit setting wins
    monkeypatch.setenv("KERASFT_AUTO_PRECISION", "bf16")
    with pytest.raises(ConfigError, match="KERASFT_AUTO_PRECISION='bf16'"):
        resolve_precision("auto")


# --- model --------------------------------------------------------------------------------


def _copy_model(source, target):
    target.mkdir()
    for f in source.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def test_truncated_weights_are_one_line(config_file, tiny_bert_dir, tmp_path, capsys):
    broken = _copy_model(tiny_bert_dir, tmp_path / "broken")
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    code = train_main("--config", str(config_file), "--set", f"model.backbone={broken}")
    one_error_line(capsys, code, f"{broken / 'model.safetensors'}: cannot read the weights")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        # once a line ending in "Unrecognized configuration class <class '...MambaConfig'>"
        ({"model_type": "mamba"}, "model_type `mamba` has no TensorFlow model for TFAutoModel"),
        (
            {"hidden_size": 64, "intermediate_size": 64},
            "config.json does not describe these weights: use the one saved with them",
        ),
    ],
)
def test_a_config_json_the_weights_do_not_fit_is_one_line(
    config_file, tiny_bert_dir, tmp_path, capsys, change, fragment
):
    changed = _copy_model(tiny_bert_dir, tmp_path / "changed")
    config = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**config, **change}))
    code = train_main("--config", str(config_file), "--set", f"model.backbone={changed}")
    one_error_line(capsys, code, str(changed), fragment)
    assert not (tmp_path / "runs").exists()


def test_nan_weights_are_refused_before_training(config_file, tiny_bert_dir, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    broken = _copy_model(tiny_bert_dir, tmp_path / "nan")
    state = load_file(str(broken / "model.safetensors"))
    name = sorted(state)[0]
    state[name] = np.full_like(state[name], np.nan)
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    code = train_main("--config", str(config_file), "--set", f"model.backbone={broken}")
    one_error_line(capsys, code, "NaN or infinite values", name)


@pytest.mark.slow
def test_a_nan_loss_stops_at_its_step_and_leaves_no_run(tiny_config, tiny_bert_dir, tmp_path):
    """TF-format weights are not scanned on load: the loss check catches what they do."""
    from transformers import TFBertModel

    from kerasft.errors import TrainingError
    from kerasft.training.runner import run
    from tests.conftest import tiny_bert_config, write_tokenizer

    broken = tmp_path / "nan-h5"
    model = TFBertModel(tiny_bert_config())
    model(model.dummy_inputs)
    weights = model.get_weights()
    weights[0] = np.full_like(weights[0], np.nan)  # the word embeddings
    model.set_weights(weights)
    broken.mkdir()
    model.save_pretrained(str(broken), safe_serialization=False)  # tf_model.h5
    write_tokenizer(broken)
    tiny_config["model"]["backbone"] = str(broken)
    with pytest.raises(TrainingError, match=r"epoch 1, step 1: the loss is nan"):
        run(config_from_dict(tiny_config), verbose=0)
    assert list((tmp_path / "runs" / "tiny").iterdir()) == []


def test_missing_tokenizer_files_are_one_line(config_file, tiny_bert_dir, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((tiny_bert_dir / name).read_bytes())
    code = train_main("--config", str(config_file), "--set", f"model.backbone={bare}")
    one_error_line(capsys, code, f"{bare}: ", "tokenizer")


def test_a_backbone_that_is_a_file_is_not_sent_to_the_hub(config_file, tiny_bert_dir, capsys):
    weights = tiny_bert_dir / "model.safetensors"
    code = train_main("--config", str(config_file), "--set", f"model.backbone={weights}")
    one_error_line(capsys, code, "is a file; point it at the model's directory")


# --- data ---------------------------------------------------------------------------------


def test_every_text_empty_says_so(config_file, tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("text,label\n" + ",pos\n,neg\n" * 10)
    code = train_main("--config", str(config_file), "--set", f"data.train={tmp_path}/empty.csv")
    one_error_line(capsys, code, "every text is empty", "`data.text_column`")


def test_a_max_length_past_the_position_table_is_cut_to_it(tiny_config, tmp_path, capsys):
    """Once a traceback from deep in the embeddings: `indices[0,64] = 64 is not in [0, 64)`
    (the tiny BERT has 64 positions; its tokenizer states no `model_max_length`)."""
    from kerasft.predict import predict_file
    from kerasft.training.runner import run

    words = "good fun film " * 40
    rows = [f"{words}{i},{'pos' if i % 2 else 'neg'}\n" for i in range(20)]
    (tmp_path / "long.csv").write_text("text,label\n" + "".join(rows))
    tiny_config["data"].update(train=str(tmp_path / "long.csv"), max_length=128)
    result = run(config_from_dict(tiny_config), verbose=0)
    out = capsys.readouterr().out
    assert "data.max_length 128 is cut to 64: the backbone's position embeddings take 64" in out
    assert "reach max_length 64 and are truncated" in out
    (tmp_path / "in.csv").write_text(f"text\n{words * 3}\n")
    assert predict_file(result.export_dir, tmp_path / "in.csv", tmp_path / "out.csv") == 1


def test_a_label_with_a_line_break_is_refused(tiny_config, tmp_path):
    from kerasft.errors import DataError
    from kerasft.training.runner import run

    rows = [{"text": f"text {i}", "label": ["a", "b", "c\nd"][i % 3]} for i in range(30)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tiny_config["data"]["train"] = str(tmp_path / "d.jsonl")
    with pytest.raises(DataError, match=r"Label 'c\\nd' contains a line break"):
        run(config_from_dict(tiny_config), verbose=0)


def test_pkg_paths_cannot_leave_their_package():
    from kerasft.data.readers import resolve_path
    from kerasft.errors import DataError

    with pytest.raises(DataError, match="leaves the package `kerasft`"):
        resolve_path("pkg:kerasft/../setup.cfg")
    assert resolve_path("pkg:kerasft/__init__.py").name == "__init__.py"


# --- outputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["training.output_dir", "export.dir"])
def test_an_output_path_that_is_a_file_is_refused_before_training(
    config_file, tmp_path, capsys, key
):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    code = train_main("--config", str(config_file), "--set", f"{key}={blocker}")
    one_error_line(capsys, code, f"`{key}: {blocker}` is a file")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("key", ["training.output_dir", "export.dir", "data.cache_dir"])
def test_a_broken_symbolic_link_or_a_file_on_an_output_path_is_refused(
    config_file, tmp_path, capsys, key
):
    """A link to itself was an ELOOP traceback, a dangling one `FileExistsError` from mkdir, and
    `data.cache_dir` under a file `NotADirectoryError`, each after the data was read."""
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "dangling").symlink_to("nowhere")
    (tmp_path / "blocker").write_text("")
    for path, fragment in [
        (tmp_path / "loop", "is a symbolic link to nothing"),
        (tmp_path / "dangling" / "x", "dangling is a symbolic link to nothing"),
        (tmp_path / "blocker" / "x", "has a file in the way"),
    ]:
        code = train_main("--config", str(config_file), "--set", f"{key}={path}")
        one_error_line(capsys, code, f"`{key}: {path}`", fragment)
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "nowhere").exists()


def test_an_unwritable_output_directory_is_refused(monkeypatch, tmp_path):
    """Root writes anywhere (CI runs as root), so the write itself is made to fail."""
    import tempfile

    from kerasft.errors import OutputError
    from kerasft.training.rundir import check_writable

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(
        OutputError, match=r"`training.output_dir: .*`: cannot write in .*Permission denied"
    ):
        check_writable(tmp_path / "runs", "training.output_dir", "tiny")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.ENAMETOOLONG, "is longer than the file system allows"),
    ],
)
def test_a_full_disk_removes_the_run_and_says_so(
    tiny_config, tmp_path, monkeypatch, code, fragment
):
    """So does a name too long for the file system, met after the run began."""
    from kerasft.errors import OutputError
    from kerasft.training import runner

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / ("x" * 300)))

    monkeypatch.setattr(runner, "write_run_files", refuse)
    with pytest.raises(OutputError, match=fragment):
        runner.run(config_from_dict(tiny_config), verbose=0)
    assert list((tmp_path / "runs" / "tiny").iterdir()) == []


@pytest.mark.parametrize(
    "key", ["data.train", "training.output_dir", "export.dir", "data.cache_dir"]
)
def test_a_name_too_long_for_the_file_system_is_one_line(config_file, tmp_path, capsys, key):
    """Each was an `OSError: [Errno 36] File name too long` traceback."""
    long = tmp_path / ("q" * 300)
    code = train_main("--config", str(config_file), "--set", f"{key}={long}")
    line = one_error_line(capsys, code, "is longer than the file system allows", "300 bytes")
    assert len(line) < 400
    assert not (tmp_path / "runs").exists()
    code = train_main("--config", str(config_file), "--set", f"name={'n' * 101}")
    one_error_line(capsys, code, "`name`", "at most 100 characters")
    from kerasft.errors import system_refusal

    deep = OSError(errno.ENAMETOOLONG, "File name too long", ("/" + "c" * 200) * 25)
    assert "the path /ccc" in system_refusal(deep) and "(5,025 bytes)" in system_refusal(deep)


def test_predict_passes_parquet_bytes_and_dates_through_as_text(tmp_path, trained_run):
    """A binary text column was predicted on as "b'...'", and a timestamp or binary column
    passed through ended in `TypeError: Object of type bytes is not JSON serializable`."""
    import datetime

    import pandas as pd

    source = tmp_path / "in.parquet"
    when = datetime.datetime(2026, 1, 2, 3, 4)
    frame = pd.DataFrame({"text": [b"good movie", b"bad"], "when": [when, when]})
    frame.to_parquet(source)
    for name in ("p.jsonl", "p.csv"):
        assert predict_main(trained_run.export_dir, source, tmp_path / name) == 0
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records] == ["good movie", "bad"]
    assert records[0]["when"] == "2026-01-02T03:04:00"
    assert "good movie,2026-01-02T03:04:00," in (tmp_path / "p.csv").read_text()
    (tmp_path / "in.csv").write_text("text\ngood movie\nbad\n")
    assert predict_main(trained_run.export_dir, tmp_path / "in.csv", tmp_path / "c.jsonl") == 0
    plain = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [r["probabilities"] for r in records] == [r["probabilities"] for r in plain]


def test_a_predict_output_name_too_long_is_one_line(tmp_path, capsys, trained_run):
    source = tmp_path / "in.csv"
    source.write_text("text\ngood movie\n")
    code = predict_main(trained_run.export_dir, source, tmp_path / ("p" * 300 + ".jsonl"))
    one_error_line(capsys, code, "is longer than the file system allows")
    assert [p.name for p in tmp_path.iterdir()] == ["in.csv"]


def test_export_dir_a_file_is_one_line(tmp_path, capsys, trained_run):
    from kerasft.export import main

    blocker = tmp_path / "blocker"
    blocker.write_text("")
    code = main(["--run", str(trained_run.run_dir), "--dir", str(blocker)])
    one_error_line(capsys, code, f"`--dir: {blocker}` is a file")


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("data", "cannot read the checkpoint `best-"),
        ("index", "whose files are gone (no best-"),
    ],
)
def test_a_damaged_checkpoint_is_one_line_and_exports_nothing(
    tmp_path, capsys, trained_run, damage, fragment
):
    """A truncated weights file was an IndexError traceback; a lost `.index` said the run had
    no `checkpoints/checkpoint`, which it had."""
    import shutil

    from kerasft.export import main

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    for path in (run_dir / "checkpoints").glob(f"best-*.{damage}*"):
        if damage == "data":
            path.write_bytes(path.read_bytes()[:1000])
        else:
            path.unlink()
    code = main(["--run", str(run_dir), "--dir", str(tmp_path / "exports")])
    one_error_line(capsys, code, f"{run_dir / 'checkpoints'}", fragment, "Train")
    assert not list((tmp_path / "exports").rglob("saved_model.pb"))


def test_stale_export_staging_is_removed_and_live_staging_kept(tmp_path):
    from kerasft.serving.savedmodel import remove_stale_staging

    dead = tmp_path / ".tmp-export-999999999-abc"
    live = tmp_path / f".tmp-export-{os.getpid()}-def"
    old_style = tmp_path / ".tmp-export-xyz"
    for folder in (dead, live, old_style):
        folder.mkdir()
    assert sorted(remove_stale_staging(tmp_path)) == sorted([dead, old_style])
    assert live.is_dir() and not dead.exists()


# --- runs as shared state -----------------------------------------------------------------


def test_a_locked_run_is_live_and_a_second_lock_is_refused(tmp_path):
    from kerasft.errors import ConfigError
    from kerasft.training.rundir import RunLock, is_live

    lock = RunLock(tmp_path)
    assert is_live(tmp_path)
    with pytest.raises(ConfigError, match="being written by another live kerasft process"):
        RunLock(tmp_path)
    lock.release()
    assert not is_live(tmp_path)


def test_leftovers_of_runs_killed_before_their_first_backup_are_removed(tmp_path):
    from kerasft.training.rundir import LOCK, RunLock, remove_leftovers

    parent = tmp_path / "runs" / "tiny"
    leftover, live, resumable, old = (parent / n for n in ("a", "b", "c", "d"))
    for d in (leftover, live, resumable, old):
        (d / "checkpoints").mkdir(parents=True)
    for d in (leftover, resumable):
        (d / LOCK).write_text("1\n")
    (resumable / "backup" / "chief").mkdir(parents=True)
    (resumable / "backup" / "chief" / "checkpoint").write_text("")
    lock = RunLock(live)
    try:
        assert remove_leftovers(parent) == [leftover]
    finally:
        lock.release()
    assert live.is_dir() and resumable.is_dir() and old.is_dir()  # old: no lock file, kept


# --- predict ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_bert_dir):
    from kerasft.training.runner import run

    root = tmp_path_factory.mktemp("hostile")
    raw = tiny_run_config(root, tiny_bert_dir, copies=2, training={"epochs": 1})
    return run(config_from_dict(raw), verbose=0)


def predict_main(model, source, output) -> int:
    from kerasft.predict import main

    return main(["--model", str(model), "--input", str(source), "--output", str(output)])


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("header.csv", b"text\n", "no rows to predict"),
        ("broken.jsonl", b'{"text": "good"}\n{"text": bad\n', "broken.jsonl:2: invalid JSON"),
        ("later.jsonl", b'{"text": "good"}\n\n{"txt": "bad"}\n', "later.jsonl:3: no `text` field"),
        (
            "bytes.csv",
            b"text\ngood\nbad \xff\xfe film\n",
            "bytes.csv:3: bytes that are not valid utf-8",
        ),
        (
            "twice.csv",
            b"text,text\ngood,bad\n",
            "twice.csv:1: the header names column `text` 2 times",
        ),
        (
            "quote.csv",
            b'text\n"over\ntwo lines"\ngood\n"never closed\nbad\n',
            "quote.csv:5: a quote opened on this line is never closed. Close it.",
        ),
        (
            "ragged.csv",
            b"text\ngood\nbad,film\n",
            "ragged.csv:3: 2 fields where the first line has 1",
        ),
        (
            "object.jsonl",
            b'{"text": "good"}\n{"text": {"a": 1}}\n',
            "object.jsonl:2: `text` holds an object",
        ),
    ],
)
def test_bad_predict_inputs_are_one_line_and_write_nothing(
    trained_run, tmp_path, capsys, name, content, fragment
):
    source = tmp_path / name
    source.write_bytes(content)
    out = tmp_path / "out.jsonl"
    one_error_line(capsys, predict_main(trained_run.export_dir, source, out), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_predict_never_overwrites_its_input(trained_run, tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text("text\ngood movie\n")
    one_error_line(
        capsys, predict_main(trained_run.export_dir, source, source), "is the input file"
    )
    assert source.read_text() == "text\ngood movie\n"


def test_predict_into_a_format_it_does_not_write_is_one_line(trained_run, tmp_path, capsys):
    """Once a CSV written under the name out.xlsx."""
    source = tmp_path / "in.csv"
    source.write_text("text\ngood movie\n")
    code = predict_main(trained_run.export_dir, source, tmp_path / "out.xlsx")
    one_error_line(capsys, code, "out.xlsx: predictions are written as .csv, .tsv or .jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_predict_with_a_second_text_for_a_single_text_model_is_one_line(
    trained_run, tmp_path, capsys
):
    """Once a traceback: `signature_wrapper(text) got unexpected keyword arguments: text_pair`."""
    from kerasft.predict import main

    source = tmp_path / "in.csv"
    source.write_text("text,other\ngood movie,fine\n")
    out = tmp_path / "out.csv"
    args = ["--model", str(trained_run.export_dir), "--input", str(source), "--output", str(out)]
    code = main([*args, "--text-pair-column", "other"])
    one_error_line(capsys, code, "the model takes single texts; leave out --text-pair-column")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_predict_into_a_missing_directory_is_one_line(trained_run, tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text("text\ngood movie\n")
    code = predict_main(trained_run.export_dir, source, tmp_path / "nowhere" / "out.csv")
    one_error_line(capsys, code, "does not exist")


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("saved_model.pb", "1: cannot load this SavedModel"),
        ("variables", "1: cannot load this SavedModel"),
        ("assets.extra/kerasft.json", "kerasft.json: cannot read it (Expecting"),
        ("assets/vocab.txt", "assets: cannot load the tokenizer saved there"),
    ],
)
def test_a_damaged_export_is_one_line(trained_run, tmp_path, capsys, damage, fragment):
    """The last two were a JSONDecodeError and a TypeError traceback."""
    import shutil

    version = tmp_path / "model" / "1"
    shutil.copytree(trained_run.export_dir, version)
    if damage == "saved_model.pb":
        (version / damage).write_bytes((version / damage).read_bytes()[:1000])
    elif damage == "variables":
        shutil.rmtree(version / damage)
    elif damage.endswith(".json"):
        (version / damage).write_text("{half")
    else:
        for name in ("vocab.txt", "tokenizer.json"):
            (version / "assets" / name).unlink(missing_ok=True)
    source = tmp_path / "in.csv"
    source.write_text("text\ngood movie\n")
    code = predict_main(version, source, tmp_path / "out.csv")
    one_error_line(capsys, code, fragment, "Re-export it with")
    assert not (tmp_path / "out.csv").exists()


def test_a_saved_model_not_written_by_kerasft_is_one_line(tmp_path, capsys):
    """Once a KeyError traceback ('predict_ids')."""

    class Lengths(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, text):
            return {"length": tf.strings.length(text)}

    module = Lengths()
    tf.saved_model.save(module, str(tmp_path / "foreign" / "1"), signatures=module.__call__)
    source = tmp_path / "in.csv"
    source.write_text("text\ngood movie\n")
    code = predict_main(tmp_path / "foreign", source, tmp_path / "out.csv")
    one_error_line(
        capsys,
        code,
        "1: not a kerasft export (no `predict_ids` signature; it has: serving_default)",
    )
    assert not (tmp_path / "out.csv").exists()


def test_labels_survive_any_character_but_a_line_break(tmp_path):
    from kerasft.serving.versions import read_labels

    names = ["a\x85b", "c\u2028d", "e\x0cf", "plain"]
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    assert read_labels(path) == names


def test_the_model_card_escapes_labels_and_paths():
    from kerasft.serving.model_card import code, fenced

    assert code("a`b") == "``a`b``"
    assert code("`x") == "`` `x ``"
    assert code("p|q<script>") == "`p\\|q<script>`"
    assert fenced("x ``` y", "yaml") == ["````yaml", "x ``` y", "````"]


# --- the one reader of non-split files (predict, distill.unlabeled, pretrain.files) ---------


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_streams_its_text_column_with_lines(tmp_path, suffix):
    import pandas as pd

    from kerasft.data.rows import read_text_column, stream_rows

    texts = ["first text", 'a "quoted" word', "third, with a comma"]
    path = tmp_path / f"t{suffix}"
    frame = pd.DataFrame({"id": ["1", "2", "3"], "text": texts})
    if suffix == ".txt":
        path.write_text("\n".join(texts) + "\n")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    assert read_text_column(path, "text", key="k") == texts
    assert read_text_column(path, 1, key="k") == texts  # by position (a .txt is its lines)
    (rows, lines), *rest = list(stream_rows(path, chunk=2))
    assert len(rows) == 2 and not rest[0][0][1:]
    assert lines == {".txt": [1, 2], ".jsonl": [1, 2], ".parquet": [1, 2]}.get(suffix, [2, 3])


def test_unlabelled_text_with_bad_bytes_names_the_line(tmp_path):
    from kerasft.data.rows import read_text_column
    from kerasft.errors import DataError

    path = tmp_path / "u.csv"
    path.write_bytes(b"text\nfine\nbad \xff here\n")
    with pytest.raises(
        DataError, match=r"u.csv:3: bytes that are not valid utf-8.*`data.encoding`"
    ):
        read_text_column(path, "text", key="distill.unlabeled_text_column")
    path.write_bytes(b"words\nfine\n")
    with pytest.raises(DataError, match=r"u.csv:2: no column `text` \(set by `distill"):
        read_text_column(path, "text", key="distill.unlabeled_text_column")
    with pytest.raises(DataError, match="unknown extension `.xlsx`"):
        read_text_column(tmp_path / "u.xlsx", "text", key="k")
