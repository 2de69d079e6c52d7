"""`kerasft.pretrain`: masked-LM pretraining lowers the masked-token loss, resumes after a kill, and
writes a directory that is a backbone for training and a masked LM for contextual augmentation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from kerasft.config import PretrainRun, config_from_dict
from kerasft.errors import ConfigError
from kerasft.models.masked_lm import IGNORE, Masking, mask_tokens
from tests.conftest import REPO, pretrain_config, tiny_run_config, write_yaml

# Trains with `precision: auto`: `make test-bf16` reruns this module in mixed_bfloat16.
pytestmark = pytest.mark.precision


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tiny_bert_dir):
    from kerasft.pretrain import run

    root = tmp_path_factory.mktemp("pretrain")
    cfg = config_from_dict(pretrain_config(root, tiny_bert_dir), root=PretrainRun)
    return root, run(cfg)


@pytest.mark.slow
def test_masked_token_loss_falls_and_the_head_starts_fresh(pretrained, capfd):
    root, result = pretrained
    before, after = result.validation_loss
    assert after < before - 0.5, (before, after)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    summary = json.loads((result.output_dir / "pretrain.json").read_text())
    assert summary["held_out_loss_after"] == pytest.approx(after)
    assert not (root / "dapt.partial").exists()  # backups are gone once the directory is written


@pytest.mark.slow
def test_the_written_directory_is_a_backbone_and_a_masked_lm(pretrained, tmp_path):
    from kerasft.config import load_config
    from kerasft.data.augment import Job
    from kerasft.data.augment.contextual import MaskedLmReplacer
    from kerasft.data.augment.eda import OPERATIONS, Eda
    from kerasft.training.runner import run

    _, result = pretrained
    raw = tiny_run_config(
        tmp_path, result.output_dir, training={"epochs": 1}, export={"enabled": False}
    )
    trained = run(load_config(write_yaml(tmp_path / "c.yaml", raw)), verbose=0)
    assert trained.metrics["test"]["accuracy"] >= 0.0 and trained.metrics["train"]["epochs"] == 1
    replacer = MaskedLmReplacer(result.output_dir)  # has a trained head now: no refusal
    out = replacer.replace(
        [Job(0, "contextual", "the movie was good".split())],
        Eda({op: 0.0 for op in OPERATIONS}),
        0.5,
        np.random.default_rng(0),
    )
    assert len(out[0].words) == 4


def test_whole_word_masking_masks_every_piece_of_a_chosen_word():
    """Pieces of one word share their word index: chosen together, labelled together."""
    from kerasft._compat import tf

    masking = Masking(0.3, True, mask_id=4, vocab_size=30, special_ids=(0, 2, 3, 4))
    # [CLS] w0 w0 w1 w2 w2 w2 w3 [SEP] [PAD]: word 2 has three pieces
    ids = tf.constant([[2, 10, 11, 12, 13, 14, 15, 16, 3, 0]] * 64)
    attention = tf.constant([[1] * 9 + [0]] * 64)
    words = tf.constant([[-1, 0, 0, 1, 2, 2, 2, 3, -1, 0]] * 64)
    chosen_any, masked_share = 0, []
    for s in range(20):
        masked, labels = mask_tokens(ids, attention, words, tf.constant([7, s]), masking)
        chosen = labels.numpy() != IGNORE
        assert chosen.any(axis=1).all()  # at least one word per text
        assert not chosen[:, [0, 8, 9]].any()  # never [CLS], [SEP] or padding
        for group in ([1, 2], [4, 5, 6]):
            assert (chosen[:, group].all(axis=1) == chosen[:, group].any(axis=1)).all()
        np.testing.assert_array_equal(labels.numpy()[chosen], ids.numpy()[chosen])
        masked_share.append((masked.numpy()[chosen] == 4).mean())
        chosen_any += chosen.sum()
        again, _ = mask_tokens(ids, attention, words, tf.constant([7, s]), masking)
        np.testing.assert_array_equal(again.numpy(), masked.numpy())  # the seed decides
    assert 0.7 < np.mean(masked_share) < 0.9  # 80% become [MASK]


def test_bad_pretrain_configs_fail_with_one_line(tmp_path, tiny_bert_dir, capsys):
    from kerasft.pretrain import main

    raw = pretrain_config(tmp_path, tiny_bert_dir)
    raw["pretrain"]["mlm_probabilty"] = 0.2
    with pytest.raises(
        ConfigError, match=r"Unknown key `pretrain.mlm_probabilty`.*Did you mean `mlm_probability`"
    ):
        config_from_dict(raw, "p.yaml", root=PretrainRun)
    raw = pretrain_config(tmp_path, tiny_bert_dir, files=[str(tmp_path / "missing.txt")])
    assert main(["--config", str(write_yaml(tmp_path / "p.yaml", raw))]) == 2
    out, err = capsys.readouterr()
    assert "error: `pretrain.files`: data file not found" in err.strip().splitlines()[-1]
    assert "Traceback" not in err and not (tmp_path / "dapt").exists()
    assert "masked-LM head" not in out + err  # said before the model loads


def _pretrain(path, *extra, kill_at=None):
    cmd = [sys.executable, "-m", "kerasft.pretrain", "--config", str(path), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if kill_at and line.startswith(kill_at):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=300)
    return proc.returncode, "".join(lines)


@pytest.mark.slow
def test_a_killed_pretraining_resumes_from_its_backup_and_ends_the_same(tmp_path, tiny_bert_dir):
    raw = pretrain_config(tmp_path, tiny_bert_dir, epochs=2, backup_every_steps=5, seed=3)
    # Dropout draws are not part of a backup (as in training's resume test).
    raw["model"].update(hidden_dropout=0.0, attention_dropout=0.0)
    path = write_yaml(tmp_path / "p.yaml", raw)
    code, out = _pretrain(path, kill_at="step 15/")  # mid-epoch: 2 epochs of 24 steps
    assert code == -signal.SIGKILL, out[-2000:]
    assert (tmp_path / "dapt.partial" / "backup").is_dir() and not (tmp_path / "dapt").exists()
    code, out = _pretrain(path)
    assert code == 0, out[-3000:]
    assert "resumed from the backup at epoch 1 step 15/24" in out and "step 10/" not in out, out
    resumed = json.loads((tmp_path / "dapt" / "pretrain.json").read_text())

    raw["pretrain"]["output_dir"] = str(tmp_path / "straight")
    code, out = _pretrain(write_yaml(tmp_path / "s.yaml", raw))
    assert code == 0 and "resumed" not in out
    straight = json.loads((tmp_path / "straight" / "pretrain.json").read_text())
    assert len(resumed["loss_per_step"]) == len(straight["loss_per_step"]) - 15
    np.testing.assert_allclose(resumed["loss_per_step"], straight["loss_per_step"][15:], atol=1e-5)
    assert resumed["held_out_loss_after"] == pytest.approx(
        straight["held_out_loss_after"], abs=1e-5
    )
    import h5py

    def weights(directory):
        with h5py.File(directory / "tf_model.h5") as f:
            found = {}
            f.visititems(
                lambda name, d: found.update({name: d[()]}) if hasattr(d, "shape") else None
            )
            return found

    resumed_weights, straight_weights = weights(tmp_path / "dapt"), weights(tmp_path / "straight")
    assert resumed_weights.keys() == straight_weights.keys() and len(resumed_weights) > 10
    for name, value in straight_weights.items():
        np.testing.assert_allclose(resumed_weights[name], value, atol=1e-6, err_msg=name)


def test_a_damaged_pretraining_backup_is_one_line_saying_what_to_delete(tmp_path, tiny_bert_dir):
    raw = pretrain_config(tmp_path, tiny_bert_dir, epochs=2, backup_every_steps=5, seed=3)
    path = write_yaml(tmp_path / "p.yaml", raw)
    code, out = _pretrain(path, kill_at="step 15/")
    assert code == -signal.SIGKILL, out[-2000:]
    partial = tmp_path / "dapt.partial"
    for data in (partial / "backup").rglob("*.data-*"):
        data.write_bytes(data.read_bytes()[:200])
    code, out = _pretrain(path)
    last = out.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in out, out[-3000:]
    assert last.startswith(f"error: {partial / 'backup'}: the backup of this interrupted run")
    assert last.endswith(f"Delete {partial} to start over.") and partial.is_dir()


def test_the_loss_on_masked_positions_only_equals_the_full_masked_lm_loss(tiny_bert_dir):
    from kerasft._compat import tf
    from kerasft.models.masked_lm import MaskedLanguageModel, load_masked_lm

    tokenizer, mlm, _ = load_masked_lm(tiny_bert_dir)
    masking = Masking(0.15, True, tokenizer.mask_token_id, len(tokenizer), (0,))
    model = MaskedLanguageModel(mlm, masking, seed=0)
    assert model.head is not None  # BERT: encoder + head, the gathered path
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 20, size=(3, 9)).astype(np.int32)
    attention = np.ones_like(ids)
    attention[2, 6:] = 0
    labels = np.where(rng.random(ids.shape) < 0.3, ids, IGNORE).astype(np.int32)
    labels[0, 0] = ids[0, 0]  # at least one masked token
    loss_sum, n = model.masked_loss(ids, attention, labels, False)
    logits = mlm(input_ids=ids, attention_mask=attention, training=False).logits
    full = tf.nn.sparse_softmax_cross_entropy_with_logits(np.where(labels < 0, 0, labels), logits)
    expected = float(tf.reduce_sum(full * (labels >= 0)))
    assert float(n) == (labels >= 0).sum()
    assert float(loss_sum) == pytest.approx(expected, rel=1e-5)


def test_shipped_few_label_configs_are_valid():
    from kerasft.config import load_config, load_raw

    path = REPO / "configs" / "pretrain_tweets.yaml"
    cfg = config_from_dict(load_raw(path), str(path), root=PretrainRun)
    assert cfg.pretrain.output_dir == "pretrained/tweets" and cfg.pretrain.whole_word_masking
    augment = load_config(REPO / "configs" / "augment_tweets.yaml").data.augment
    assert augment.operations() == ("synonym", "insertion", "swap", "deletion")
