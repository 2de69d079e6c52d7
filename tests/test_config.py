from __future__ import annotations

import pytest

from kerasft import config as config_lib
from kerasft.config import load_config
from kerasft.errors import ConfigError
from tests.conftest import REPO, write_yaml

BASE = {"name": "t", "data": {"train": "x.csv"}}


def test_quickstart_config_loads_with_defaults_filled_in():
    cfg = load_config(REPO / "configs" / "quickstart.yaml")
    assert cfg.model.backbone == "minilm-l6"
    assert cfg.data.encoding == "latin-1"
    assert cfg.training.epochs == 1
    assert cfg.export.dir == "saved_models"


def test_unknown_key_names_file_and_suggests_close_match(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {**BASE, "training": {"learnig_rate": 0.1}})
    with pytest.raises(
        ConfigError,
        match=r"Unknown key `training.learnig_rate` in .*c.yaml\. Did you mean `learning_rate`\?",
    ):
        load_config(path)


def test_unknown_key_lists_allowed_keys(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {**BASE, "optimizer": {}})
    with pytest.raises(
        ConfigError, match=r"Allowed keys here: name, task, data, model, training, export"
    ):
        load_config(path)


def test_wrong_type_names_key_and_value(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {**BASE, "training": {"epochs": "many"}})
    with pytest.raises(ConfigError, match=r"`training.epochs` in .*c.yaml. Received: 'many'"):
        load_config(path)


def test_out_of_range_value_is_rejected(tmp_path):
    path = write_yaml(
        tmp_path / "c.yaml", {**BASE, "data": {"train": "x.csv", "validation_split": 1.5}}
    )
    with pytest.raises(ConfigError, match=r"`data.validation_split`.*Received: 1.5.*less than 1"):
        load_config(path)


def test_bad_choice_lists_the_allowed_values(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {**BASE, "model": {"pooling": "max"}})
    with pytest.raises(ConfigError, match=r"`model.pooling`.*'mean', 'cls' or 'pooler'"):
        load_config(path)


def test_cross_field_check(tmp_path):
    data = {"train": "x.csv", "validation_split": 0.5, "test_split": 0.45}
    path = write_yaml(tmp_path / "c.yaml", {**BASE, "data": data})
    with pytest.raises(ConfigError, match=r"leaves almost nothing to train on"):
        load_config(path)


def test_missing_required_key(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"data": {"train": "x.csv"}})
    with pytest.raises(ConfigError, match=r"Missing required key `name`"):
        load_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match=r"Config file not found: nope.yaml"):
        load_config("nope.yaml")


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: t\ndata:\n  train: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: invalid YAML"):
        load_config(path)
    path.write_text("name: t\ndata:\n\ttrain: d.csv\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"c.yaml:3: invalid YAML .*'\\t'.*indents with spaces; replace the tabs"
    ):
        load_config(path)
    path.write_text("# nothing yet\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c.yaml is empty. A config needs at least `name:`"):
        load_config(path)


def test_overrides_are_typed(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", BASE)
    cfg = load_config(
        path,
        [
            "training.epochs=2",
            "training.learning_rate=3e-5",
            "data.bucketing=false",
            "data.labels=[a, b]",
        ],
    )
    assert cfg.training.epochs == 2 and isinstance(cfg.training.epochs, int)
    assert cfg.training.learning_rate == pytest.approx(3e-5)
    assert cfg.data.bucketing is False
    assert cfg.data.labels == ["a", "b"]


def test_override_of_unknown_key_is_rejected(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", BASE)
    # The error names the override, not the file, which has no such key.
    with pytest.raises(
        ConfigError,
        match=r"Unknown key `training.epoch` in --set training.epoch=2\. Did you mean `epochs`",
    ):
        load_config(path, ["training.epoch=2"])
    with pytest.raises(ConfigError, match=r"`training.epochs` in --set training.epochs=zero\."):
        load_config(path, ["training.epochs=zero"])


@pytest.mark.parametrize("item", ["training.epochs", "=3", "name.sub=1"])
def test_malformed_override(tmp_path, item):
    path = write_yaml(tmp_path / "c.yaml", BASE)
    with pytest.raises(ConfigError, match=r"override"):
        load_config(path, [item])


def test_dumped_config_reloads_identically(tmp_path):
    cfg = load_config(REPO / "configs" / "quickstart.yaml", ["training.epochs=4"])
    path = tmp_path / "resolved.yaml"
    path.write_text(config_lib.dump_config(cfg), encoding="utf-8")
    assert load_config(path) == cfg


def test_reference_documents_every_key():
    from kerasft.config import Config

    rows = config_lib.reference().splitlines()[2:]
    documented = {row.split("`")[1]: row for row in rows}
    keys = config_lib.leaf_keys(Config)
    assert len(keys) > 60
    for key in keys:
        assert key in documented, f"`{key}` has no row in the config reference"
        description = documented[key].rsplit("|", 2)[-2].strip()
        assert description and description != "None", f"`{key}` has no description"


def test_docs_config_reference_is_current():
    readme = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    start = readme.index("<!-- config-reference:start -->\n") + len(
        "<!-- config-reference:start -->\n"
    )
    end = readme.index("\n<!-- config-reference:end -->")
    assert readme[start:end] == config_lib.reference(), (
        "regenerate with `python -m kerasft.config --update-docs`"
    )
