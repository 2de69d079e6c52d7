"""The export contract (`export.json`) and the task table."""

from __future__ import annotations

import json
import typing

import pytest

from kerasft.config import Config
from kerasft.errors import ConfigError
from kerasft.serving import ExportInfo, RunCard, list_versions, next_version, resolve_version
from kerasft.tasks import TASKS

INFO = ExportInfo(
    task="multi_label",
    labels=("a", "b"),
    max_length=32,
    pair=True,
    thresholds=(0.35, 0.6),
    scaling=None,
    warmup_texts=("one", "two"),
    warmup_pairs=("uno", "dos"),
    card=RunCard(
        backbone="minilm-l6 (bert, /x)",
        data={"train": "t.csv", "train_examples": 10},
        run_dir="runs/x/1",
        config="name: x\n",
        metrics={"test": {"micro_f1": 0.5, "examples": 4}},
        metric_names=("micro_f1",),
    ),
)


def test_export_info_round_trips_through_json(tmp_path):
    assert ExportInfo.from_json(INFO.to_json()) == INFO
    INFO.write(tmp_path)
    assert ExportInfo.read(tmp_path) == INFO


def test_export_json_of_older_runs_takes_task_and_labels_from_the_run(tmp_path):
    old = json.loads(INFO.to_json())
    del old["task"], old["labels"]
    (tmp_path / "export.json").write_text(json.dumps(old))
    (tmp_path / "config.yaml").write_text("name: x\ntask: multi_label\n")
    (tmp_path / "labels.json").write_text(json.dumps({"labels": ["a", "b"]}))
    assert ExportInfo.read(tmp_path) == INFO


def test_a_broken_export_json_is_a_one_line_config_error(tmp_path):
    (tmp_path / "export.json").write_text('{"task": "classification"}')
    with pytest.raises(ConfigError, match=r"export.json: not a kerasft export contract"):
        ExportInfo.read(tmp_path)


def test_versions_count_up_and_the_newest_complete_one_is_served(tmp_path):
    model = tmp_path / "m"
    assert (list_versions(model), next_version(model)) == ([], 1)
    for version in ("1", "2", "10"):
        (model / version).mkdir(parents=True)
    (model / "1" / "saved_model.pb").write_bytes(b"")
    (model / "2" / "saved_model.pb").write_bytes(b"")
    (model / "tflite").mkdir()
    assert (list_versions(model), next_version(model)) == ([1, 2, 10], 11)
    assert resolve_version(model) == model / "2"  # 10 is not complete
    assert resolve_version(model / "1") == model / "1"


def test_every_task_name_has_a_spec_whose_monitor_the_config_accepts():
    names = typing.get_args(Config.model_fields["task"].annotation)
    assert set(TASKS) == set(names)
    for name, spec in TASKS.items():
        assert spec.name == name and spec.default_monitor in spec.monitors
    flags = {
        n: (s.per_token, s.multi_hot, s.numeric, s.generative, s.single_label)
        for n, s in TASKS.items()
    }
    assert flags == {
        "classification": (False, False, False, False, True),
        "multi_label": (False, True, False, False, False),
        "regression": (False, False, True, False, False),
        "token_classification": (True, False, False, False, False),
        "seq2seq": (False, False, False, True, False),
    }
