"""Few labels: template data, code-switching, general-domain mixing, and the few-label defaults."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasft.config import config_from_dict
from kerasft.data.augment.code_switch import CodeSwitcher, read_dictionary
from kerasft.data.augment.templates import generate, label_texts
from kerasft.data.prepared import load_data
from kerasft.errors import DataError
from kerasft.tasks import TASKS
from tests.conftest import tiny_run_config, write_yaml
from tests.test_hostile import one_error_line, train_main

TEMPLATES = """
slots:
  thing: [film, plot, cast, score]
  good: [great, superb, moving]
  bad: [dull, awful]
templates:
  - {text: "the {thing} was {good}", label: pos}
  - {text: "a {good} {thing}", label: pos}
  - {text: "the {thing} was {bad}", label: neg}
"""


def load(cfg):
    from kerasft.models import load_tokenizer, model_directory

    return load_data(cfg, TASKS[cfg.task], load_tokenizer(model_directory(cfg.model)))


def test_templates_fill_slots_per_label_seeded_distinct_and_capped(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(TEMPLATES)
    made = generate(path, 10, ("neg", "pos"), seed=1, existing={"the film was dull"})
    by_label = {}
    for text, labels, number in made:
        by_label.setdefault(labels, []).append(text)
        assert "{" not in text and number in (1, 2, 3)
    assert len(by_label[("pos",)]) == 10  # 24 fillings, capped at 10
    assert len(by_label[("neg",)]) == 7  # 8 fillings, minus one already in the training data
    assert "the film was dull" not in by_label[("neg",)]
    assert all(len(set(v)) == len(v) for v in by_label.values())
    assert made == generate(path, 10, ("neg", "pos"), seed=1, existing={"the film was dull"})
    assert made != generate(path, 10, ("neg", "pos"), seed=2, existing={"the film was dull"})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            TEMPLATES + '  - {text: "a {colour} {thing}", label: pos}\n',
            "template 4 ('a {colour} {thing}') uses slot `{colour}`",
        ),
        (
            TEMPLATES + '  - {text: "so so", label: meh}\n',
            "template 4's label 'meh' is not in the label set",
        ),
        ("templates: 3\n", "expected a mapping with `templates:`"),
        (
            "slots: {a: [x]}\ntemplates: [{text: 'it was {a', label: pos}]\n",
            "template 1 ('it was {a') has a `{` or `}` that opens or closes no slot",
        ),
        (
            "slots: {a: []}\ntemplates: [{text: x, label: pos}]\n",
            "slot `a` must be a non-empty list",
        ),
    ],
)
def test_bad_templates_are_named(tmp_path, text, fragment):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        generate(path, 10, ("neg", "pos"), seed=1)
    assert str(path) in str(caught.value) and fragment in str(caught.value)


def test_a_run_adds_template_rows_to_training_and_records_them(tmp_path, tiny_bert_dir):
    (tmp_path / "t.yaml").write_text(TEMPLATES)
    raw = tiny_run_config(
        tmp_path,
        tiny_bert_dir,
        copies=2,
        data={"augment": {"templates": {"file": str(tmp_path / "t.yaml"), "per_label": 5}}},
        training={"epochs": 1},
        export={"enabled": False},
    )
    from kerasft.training.runner import run

    result = run(config_from_dict(raw), verbose=0)
    records = [json.loads(line) for line in (result.run_dir / "augmented.jsonl").open()]
    assert len(records) == 10 and {r["operation"] for r in records} == {"template"}
    assert sorted(r["label"] for r in records) == ["neg"] * 5 + ["pos"] * 5
    assert result.metrics["train"]["examples"] == 24 + 10


def test_an_unknown_slot_is_a_one_line_error_and_no_run_is_left(tmp_path, tiny_bert_dir, capsys):
    (tmp_path / "t.yaml").write_text('templates: [{text: "the {thing}", label: pos}]\n')
    raw = tiny_run_config(
        tmp_path, tiny_bert_dir, data={"augment": {"templates": {"file": str(tmp_path / "t.yaml")}}}
    )
    code = train_main("--config", str(write_yaml(tmp_path / "c.yaml", raw)))
    one_error_line(capsys, code, "t.yaml: template 1", "slot `{thing}`")
    assert not any((tmp_path / "runs").rglob("config.yaml"))


def test_label_template_makes_one_row_per_label_named_or_as_itself():
    assert label_texts("this is {label}", None, ("neg", "pos")) == [
        ("this is neg", ("neg",), None),
        ("this is pos", ("pos",), None),
    ]
    assert label_texts("this is {label}", None, ("neg", "pos"), {"this is neg"}) == [
        ("this is pos", ("pos",), None)
    ]
    named = label_texts("it was {label}!", {"0": "bad"}, ("0", "good"))
    assert [t for t, _, _ in named] == ["it was bad!", "it was good!"]


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        (None, "label '0' is a code, and 'this is 0' says nothing about its class"),
        ({"0": "bad"}, "label '1' is a code"),
        ({"0": "bad", "1": "good", "2": "meh"}, "`data.augment.label_names`: '2' is not a label"),
    ],
)
def test_label_template_refuses_codes_and_unknown_names(names, fragment):
    with pytest.raises(DataError, match=fragment):
        label_texts("this is {label}", names, ("0", "1"))


def test_a_run_adds_one_row_per_label_and_records_them(tmp_path, tiny_bert_dir):
    raw = tiny_run_config(
        tmp_path,
        tiny_bert_dir,
        copies=2,
        data={"augment": {"label_template": "a {label} one", "label_names": {"neg": "bad"}}},
        training={"epochs": 1},
        export={"enabled": False},
    )
    from kerasft.training.runner import run

    result = run(config_from_dict(raw), verbose=0)
    records = [json.loads(line) for line in (result.run_dir / "augmented.jsonl").open()]
    assert records == [
        {"operation": "label_template", "text": "a bad one", "label": "neg"},
        {"operation": "label_template", "text": "a pos one", "label": "pos"},
    ]
    assert result.metrics["train"]["examples"] == 24 + 2


def test_label_names_read_yaml_integer_keys_as_labels(tmp_path):
    raw = {
        "name": "t",
        "data": {"train": str(tmp_path / "d.csv"), "augment": {"label_template": "{label}"}},
        "model": {"backbone": "minilm-l6"},
    }
    raw["data"]["augment"]["label_names"] = {0: "negative", 1: "positive"}
    names = config_from_dict(raw).data.augment.label_names
    assert names == {"0": "negative", "1": "positive"}


@pytest.mark.parametrize(
    ("augment", "fragment"),
    [
        ({"label_template": "this is it"}, "has no `{label}`"),
        ({"label_template": "{label} {x}"}, "the only slot is `{label}`"),
        ({"label_names": {"neg": "bad"}}, "`label_names` names the labels for `label_template`"),
    ],
)
def test_bad_label_template_settings_are_one_line_errors(
    tmp_path, tiny_bert_dir, capsys, augment, fragment
):
    raw = tiny_run_config(tmp_path, tiny_bert_dir, data={"augment": augment})
    code = train_main("--config", str(write_yaml(tmp_path / "c.yaml", raw)))
    one_error_line(capsys, code, "data.augment", fragment)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))


def test_label_codes_without_names_stop_the_run_with_one_line(tmp_path, tiny_bert_dir, capsys):
    raw = tiny_run_config(
        tmp_path, tiny_bert_dir, data={"augment": {"label_template": "is {label}"}}
    )
    (tmp_path / "d.csv").write_text(
        "text,label\n" + "".join(f"sentence {i},{i % 2}\n" for i in range(20))
    )
    code = train_main("--config", str(write_yaml(tmp_path / "c.yaml", raw)))
    one_error_line(capsys, code, "label '0' is a code", "data.augment.label_names")
    assert not any((tmp_path / "runs").rglob("config.yaml"))


def test_code_switching_replaces_a_share_of_words_choosing_a_language_per_word(tmp_path):
    (tmp_path / "de.txt").write_text("good\tgut\nfilm\tfilm\nfilm\tkino\nplot\thandlung\n")
    (tmp_path / "fr.txt").write_text("good bon\nplot intrigue\n")  # one space, as MUSE files
    assert read_dictionary(tmp_path / "de.txt")["film"] == ["film", "kino"]
    from kerasft.config import CodeSwitchConfig

    cfg = CodeSwitchConfig(
        dictionaries=[str(tmp_path / "de.txt"), str(tmp_path / "fr.txt")], rate=1.0
    )
    switcher = CodeSwitcher(cfg, frozenset({"plot"}))
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        out = switcher.apply(["A", "Good", "film", "with", "a", "plot"], rng)
        assert out[0] == "A" and out[3:] == ["with", "a", "plot"]  # no entry, or protected
        seen.add(out[1])
        assert out[2] in ("film", "kino")
    assert seen == {"gut", "bon"}  # both languages are drawn
    half = CodeSwitcher(cfg.model_copy(update={"rate": 0.5}))
    out = half.apply(["good", "film", "plot", "good"], np.random.default_rng(0))
    assert sum(a != b for a, b in zip(out, ["good", "film", "plot", "good"], strict=True)) <= 2


def test_a_run_code_switches_its_training_copies(tmp_path, tiny_bert_dir):
    (tmp_path / "de.txt").write_text(
        "plot\thandlung\nfilm\tfilm\nmovie\tfilm\ngreat\ttoll\nbad\tschlecht\n"
    )
    raw = tiny_run_config(
        tmp_path,
        tiny_bert_dir,
        data={
            "augment": {"code_switch": {"dictionaries": [str(tmp_path / "de.txt")], "rate": 1.0}}
        },
    )
    data = load(config_from_dict(raw))
    assert data.augmented and {r["operation"] for r in data.augmented} == {"code_switch"}
    german = {"handlung", "film", "toll", "schlecht"}
    for r in data.augmented:
        assert set(r["text"].split()) & german and r["text"] != r["original"]


def test_a_dictionary_that_is_not_two_columns_is_a_one_line_error(tmp_path, tiny_bert_dir, capsys):
    (tmp_path / "de.txt").write_text("good\tgut\nfilm kino extra\n")
    raw = tiny_run_config(
        tmp_path,
        tiny_bert_dir,
        data={"augment": {"code_switch": {"dictionaries": [str(tmp_path / "de.txt")]}}},
    )
    code = train_main("--config", str(write_yaml(tmp_path / "c.yaml", raw)))
    one_error_line(capsys, code, "de.txt, line 2: 3 column(s)", "word<TAB>translation")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"good\tgut\nfilm\tkin\xe9\n", "de.txt:2: bytes that are not valid UTF-8"),
        (None, "de.txt is a folder; name the file"),
    ],
)
def test_a_dictionary_that_is_not_utf8_or_is_a_folder_is_one_line(
    tmp_path, tiny_bert_dir, capsys, content, fragment
):
    """Bad bytes were read as U+FFFD without a word; a folder was an IsADirectoryError."""
    path = tmp_path / "de.txt"
    path.mkdir() if content is None else path.write_bytes(content)
    raw = tiny_run_config(
        tmp_path,
        tiny_bert_dir,
        data={"augment": {"code_switch": {"dictionaries": [str(path)]}}},
    )
    code = train_main("--config", str(write_yaml(tmp_path / "c.yaml", raw)))
    one_error_line(capsys, code, fragment)


def test_mix_adds_the_general_file_at_its_share_seeded(tmp_path, tiny_bert_dir):
    (tmp_path / "general.csv").write_text(
        "sentence,polarity\n"
        + "".join(f"general text {i},{'pos' if i % 2 else 'neg'}\n" for i in range(100))
    )
    raw = tiny_run_config(
        tmp_path,
        tiny_bert_dir,
        copies=2,
        data={
            "mix": {
                "file": str(tmp_path / "general.csv"),
                "share": 0.25,
                "text_column": "sentence",
                "label_column": "polarity",
            }
        },
    )
    cfg = config_from_dict(raw)
    data = load(cfg)
    texts = data.splits.train.texts
    mixed = [t for t in texts if t.startswith("general text")]
    assert len(texts) == 32 and len(mixed) == 8  # 24 task rows + 8: a quarter of the epoch
    assert mixed == [t for t in load(cfg).splits.train.texts if t.startswith("general text")]
    other = config_from_dict({**raw, "training": {**raw["training"], "seed": 7}})
    assert mixed != [t for t in load(other).splits.train.texts if t.startswith("general text")]
    assert not any(t.startswith("general") for t in data.splits.validation.texts)


def test_mix_labels_outside_the_label_set_are_a_one_line_error(tmp_path, tiny_bert_dir, capsys):
    (tmp_path / "general.csv").write_text("text,label\nfine,pos\nso so,neutral\n")
    raw = tiny_run_config(
        tmp_path, tiny_bert_dir, data={"mix": {"file": str(tmp_path / "general.csv"), "share": 0.5}}
    )
    code = train_main("--config", str(write_yaml(tmp_path / "c.yaml", raw)))
    one_error_line(capsys, code, "general.csv", "'neutral' is not in the label vocabulary")


def test_few_labels_warn_and_a_tiny_validation_split_keeps_the_last_epoch(
    tmp_path, tiny_bert_dir, capsys
):
    from kerasft.training.runner import run

    raw = tiny_run_config(
        tmp_path,
        tiny_bert_dir,
        training={"epochs": 3, "patience": 0, "monitor": "val_loss", "learning_rate": 1e-2},
        export={"enabled": False},
    )
    result = run(config_from_dict(raw), verbose=0)
    out = capsys.readouterr().out
    assert "warning: 36 labelled training examples" in out and "method: contrastive" in out
    assert "validation has fewer than 8 examples of 2 label(s) (neg 6, pos 6)" in out
    history = result.metrics["train"]["history"]
    assert len(history["loss"]) == 3  # patience 0 would have stopped at the first worse epoch
    assert result.metrics["validation"]["loss"] == pytest.approx(history["val_loss"][-1], abs=1e-5)
