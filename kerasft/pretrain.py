"""`python -m kerasft.pretrain --config x.yaml`: domain-adaptive masked-LM pretraining of a backbone.

Continues masked-language-model training of `model.backbone` on the unlabelled
texts of `pretrain.files` and writes a Hugging Face model directory (config,
tokenizer, TF weights with the masked-LM head) that `model.backbone:` accepts and
`data.augment.contextual_model` can use. A backbone shipped without a masked-LM
head (the embedded MiniLM) gets a fresh one whose decoder is tied to the input
embeddings; the output says so.

The order of the texts and every mask follow from `pretrain.seed`, so a run
killed with SIGKILL resumes from its last backup (`<output_dir>.partial/backup`)
and ends where an uninterrupted run ends. The output directory appears only when
the run has finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kerasft import config as config_lib
from kerasft._compat import keras, tf
from kerasft.config import PretrainConfig, PretrainRun
from kerasft.data.readers import resolve_path
from kerasft.data.rows import read_text_column
from kerasft.errors import DataError, Interrupted, cli_main
from kerasft.hardware import resolve_precision
from kerasft.masked_lm import load_masked_lm
from kerasft.models import resolve_backbone
from kerasft.optim import make_optimizer
from kerasft.rundir import check_writable

IGNORE = -100  # label of tokens the loss skips
_WINDOW = 50  # batches sorted by length together


@dataclasses.dataclass(frozen=True)
class Texts:
    """Token ids of the texts as lists, with the word index of every token (for whole-word masking)."""

    ids: list[np.ndarray]
    words: list[np.ndarray]


@dataclasses.dataclass(frozen=True)
class PretrainResult:
    output_dir: Path
    steps: int
    validation_loss: tuple[float, float]  # before, after
    losses: list[float]


def run(cfg: PretrainRun) -> PretrainResult:
    """Pretrains, resuming from a backup of the same config, and writes `output_dir`."""
    p = cfg.pretrain
    output = Path(p.output_dir or Path("pretrained") / cfg.name)
    partial = output.with_name(output.name + ".partial")
    before = keras.mixed_precision.global_policy()
    try:
        check_writable(output.parent, "pretrain.output_dir")
        policy, why = resolve_precision(p.precision)
        keras.mixed_precision.set_global_policy(policy)
        print(f"precision: {policy} ({why})")
        keras.utils.set_random_seed(p.seed)  # the fresh head's initial weights
        directory = resolve_backbone(cfg.model.backbone)
        dropout = {"hidden": cfg.model.hidden_dropout, "attention": cfg.model.attention_dropout}
        tokenizer, model, fresh = load_masked_lm(
            directory, dropout={k: v for k, v in dropout.items() if v is not None}
        )
        if fresh:
            print(
                f"{directory} has no masked-LM head: a fresh one is initialised (its decoder is the "
                "input embedding matrix, tied as in pretraining)"
            )
        train, held_out = read_texts(p, tokenizer)
        steps_per_epoch = len(train.ids) // p.batch_size
        if steps_per_epoch == 0:
            raise DataError(
                f"`pretrain.files`: {len(train.ids)} texts make no batch of {p.batch_size}; lower "
                "`pretrain.batch_size`."
            )
        total = min(p.max_steps or steps_per_epoch * p.epochs, steps_per_epoch * p.epochs)
        optimizer = make_optimizer(
            p.learning_rate, p.weight_decay, total, p.warmup_ratio, lazy_sparse=False
        )
        if policy == "mixed_float16":
            optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
        step_fn, loss_fn = _steps(model, optimizer)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
        manager = _backups(checkpoint, partial, cfg)
        pad = tokenizer.pad_token_id or 0
        first = evaluate(loss_fn, held_out, tokenizer, p, pad)
        if int(step.numpy()) == 0 and first is not None:
            print(f"held-out masked-token loss before: {first:.4f} ({len(held_out.ids)} texts)")
        try:
            losses = _train(
                p, train, tokenizer, step_fn, step, manager, total, steps_per_epoch, pad
            )
        except KeyboardInterrupt:
            raise Interrupted(
                f"pretraining stopped at step {int(step.numpy())} of {total}; run the same "
                f"command again to resume from the last backup in {partial}."
            ) from None
        last = evaluate(loss_fn, held_out, tokenizer, p, pad)
        if last is not None:
            print(f"held-out masked-token loss after: {last:.4f}")
        _write(output, partial, model, tokenizer, cfg, total, first, last, losses)
        return PretrainResult(output, total, (first or 0.0, last or 0.0), losses)
    finally:
        keras.mixed_precision.set_global_policy(before)


def read_texts(p: PretrainConfig, tokenizer: Any) -> tuple[Texts, Texts]:
    """The tokenized texts of `pretrain.files`, split into training and held-out texts.

    Raises:
        DataError: a file is missing or unreadable, lacks `text_column`, or holds no text.
    """
    texts: list[str] = []
    for spec in p.files:
        texts += _read_file(resolve_path(spec, "pretrain.files"), p)
    texts = [t.strip() for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise DataError(f"`pretrain.files`: no text in {', '.join(p.files)}.")
    rng = np.random.default_rng(p.seed)
    order = rng.permutation(len(texts))
    if p.max_examples:
        order = order[: p.max_examples]
    held = min(1000, int(len(order) * p.validation_share))
    encoded = tokenizer([texts[i] for i in order], truncation=True, max_length=p.max_length)
    ids = [np.asarray(x, dtype=np.int32) for x in encoded["input_ids"]]
    words = [_word_index(encoded, i, tokenizer) for i in range(len(ids))]
    print(f"pretraining texts: {len(ids) - held} for training, {held} held out")
    return Texts(ids[held:], words[held:]), Texts(ids[:held], words[:held])


def _read_file(path: Path, p: PretrainConfig) -> list[str]:
    """The texts of one `pretrain.files` entry: its lines (.txt), or its `text_column`."""
    return read_text_column(
        path,
        p.text_column,
        key="pretrain.text_column",
        encoding=p.encoding,
        quoting=p.quoting,
        encoding_key="`pretrain.encoding`",
    )


def _word_index(encoded: Any, row: int, tokenizer: Any) -> np.ndarray:
    """Per token, the index of its word (-1 for special tokens)."""
    word_ids = encoded.word_ids(row) if getattr(tokenizer, "is_fast", False) else None
    if word_ids is None:  # slow tokenizer: every token is its own word
        return np.arange(len(encoded["input_ids"][row]), dtype=np.int32)
    return np.asarray([-1 if w is None else w for w in word_ids], dtype=np.int32)


def mask_batch(
    texts: Texts,
    rows: np.ndarray,
    tokenizer: Any,
    p: PretrainConfig,
    rng: np.random.Generator,
    pad: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masked input ids, attention mask, labels) of a padded batch.

    Chosen tokens (whole words with `whole_word_masking`) are replaced by the mask token 80%
    of the time, by a random token 10% and kept 10%, as in BERT; the labels are the original
    ids at chosen tokens and -100 elsewhere. At least one token per text is chosen.
    """
    width = max(len(texts.ids[r]) for r in rows)
    ids = np.full((len(rows), width), pad, dtype=np.int32)
    labels = np.full((len(rows), width), IGNORE, dtype=np.int32)
    attention = np.zeros((len(rows), width), dtype=np.int32)
    special = set(tokenizer.all_special_ids)
    for k, r in enumerate(rows):
        tokens, words = texts.ids[r], texts.words[r]
        n = len(tokens)
        ids[k, :n], attention[k, :n] = tokens, 1
        ordinary = np.array([t not in special for t in tokens])
        unit = words if p.whole_word_masking else np.arange(n)
        units = np.unique(unit[ordinary & (words >= 0)])
        if len(units) == 0:
            continue
        chosen_units = units[rng.random(len(units)) < p.mlm_probability]
        if len(chosen_units) == 0:
            chosen_units = units[[rng.integers(len(units))]]
        chosen = np.flatnonzero(np.isin(unit, chosen_units) & ordinary)
        labels[k, chosen] = tokens[chosen]
        draw = rng.random(len(chosen))
        ids[k, chosen[draw < 0.8]] = tokenizer.mask_token_id
        swap = chosen[(draw >= 0.8) & (draw < 0.9)]
        ids[k, swap] = rng.integers(len(tokenizer), size=len(swap))
    return ids, attention, labels


def batches(texts: Texts, p: PretrainConfig, epoch: int) -> list[np.ndarray]:
    """The epoch's batches of row indices: a seeded permutation, sorted by length in windows, shuffled."""
    rng = np.random.default_rng([p.seed, epoch])
    order = rng.permutation(len(texts.ids))
    if p.bucketing:
        window = _WINDOW * p.batch_size
        lengths = np.array([len(t) for t in texts.ids])
        order = np.concatenate(
            [
                order[i : i + window][np.argsort(lengths[order[i : i + window]], kind="stable")]
                for i in range(0, len(order), window)
            ]
        )
    full = len(order) // p.batch_size
    out = [order[i * p.batch_size : (i + 1) * p.batch_size] for i in range(full)]
    return [out[i] for i in rng.permutation(full)]


def evaluate(loss_fn, texts: Texts, tokenizer: Any, p: PretrainConfig, pad: int) -> float | None:
    """The mean masked-token loss on the held-out texts with fixed masks (None without any)."""
    if not texts.ids:
        return None
    rng = np.random.default_rng([p.seed, 10**6])
    total = count = 0.0
    for begin in range(0, len(texts.ids), p.batch_size):
        rows = np.arange(begin, min(begin + p.batch_size, len(texts.ids)))
        ids, attention, labels = mask_batch(texts, rows, tokenizer, p, rng, pad)
        loss_sum, n = loss_fn(ids, attention, labels)
        total += float(loss_sum)
        count += float(n)
    return total / max(count, 1.0)


def _steps(model: Any, optimizer: Any):
    spec = [tf.TensorSpec([None, None], tf.int32)] * 3

    encoder, head = _encoder_and_head(model)

    def losses(ids, attention, labels, training):
        mask = tf.not_equal(labels, IGNORE)
        if head is None:
            logits = model(input_ids=ids, attention_mask=attention, training=training).logits
            targets = tf.where(mask, labels, 0)
            weights = tf.cast(mask, tf.float32)
        else:  # the vocabulary projection only where a token is masked (~15%), not everywhere
            hidden = encoder(input_ids=ids, attention_mask=attention, training=training)[0]
            at = tf.where(mask)
            logits = head(tf.gather_nd(hidden, at)[tf.newaxis], training=training)[0]
            targets = tf.gather_nd(labels, at)
            weights = tf.ones_like(targets, tf.float32)
        per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=targets, logits=tf.cast(logits, tf.float32)
        )
        return tf.reduce_sum(per_token * weights), tf.reduce_sum(weights)

    @tf.function(input_signature=spec, reduce_retracing=True)
    def train_step(ids, attention, labels):
        with tf.GradientTape() as tape:
            loss_sum, n = losses(ids, attention, labels, True)
            loss = loss_sum / tf.maximum(n, 1.0)
            scaled = (
                optimizer.get_scaled_loss(loss) if hasattr(optimizer, "get_scaled_loss") else loss
            )
        variables = model.trainable_variables
        grads = tape.gradient(scaled, variables)
        if hasattr(optimizer, "get_unscaled_gradients"):
            grads = optimizer.get_unscaled_gradients(grads)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    @tf.function(input_signature=spec, reduce_retracing=True)
    def loss_fn(ids, attention, labels):
        return losses(ids, attention, labels, False)

    return train_step, loss_fn


def _encoder_and_head(model: Any) -> tuple[Any, Any]:
    """The encoder and the masked-LM head of a two-part transformers model (BERT, RoBERTa, XLM-R,
    ALBERT: `[main layer, head]`), or `(model, None)` where the head is several layers."""
    layers = model.layers
    if len(layers) == 2 and hasattr(layers[0], "embeddings"):
        return layers[0], layers[1]
    return model, None


def _backups(checkpoint: tf.train.Checkpoint, partial: Path, cfg: PretrainRun):
    """The backup manager; restores the last backup of this exact config, or starts `partial` afresh."""
    resolved = config_lib.yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    stamp = partial / "config.yaml"
    if partial.is_dir() and not (stamp.is_file() and stamp.read_text() == resolved):
        shutil.rmtree(partial)  # another config's leftovers
    partial.mkdir(parents=True, exist_ok=True)
    stamp.write_text(resolved, encoding="utf-8")
    manager = tf.train.CheckpointManager(checkpoint, str(partial / "backup"), max_to_keep=1)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        print(f"resumed from the backup at step {int(checkpoint.step.numpy())} in {partial}")
    return manager


def _train(p, texts, tokenizer, step_fn, step, manager, total, per_epoch, pad) -> list[float]:
    done = int(step.numpy())
    losses: list[float] = []
    start, seen, window = time.monotonic(), 0, []
    for epoch in range(done // per_epoch, p.epochs):
        for index, rows in enumerate(batches(texts, p, epoch)):
            global_step = epoch * per_epoch + index
            if global_step < done:
                continue  # done before the backup this run resumed from
            if global_step >= total:
                return losses
            rng = np.random.default_rng([p.seed, epoch, index])
            ids, attention, labels = mask_batch(texts, rows, tokenizer, p, rng, pad)
            loss = float(step_fn(ids, attention, labels))
            losses.append(loss)
            window.append(loss)
            seen += len(rows)
            step.assign(global_step + 1)
            if (
                global_step + 1
            ) % p.backup_every_steps == 0:  # before the line that reports the step
                manager.save(checkpoint_number=global_step + 1)
            if (global_step + 1) % p.log_every_steps == 0 or global_step + 1 == total:
                rate = seen / max(time.monotonic() - start, 1e-9)
                print(
                    f"step {global_step + 1}/{total}  loss {np.mean(window):.4f}  {rate:.1f} texts/s",
                    flush=True,
                )
                window = []
    return losses


def _write(output, partial, model, tokenizer, cfg, total, first, last, losses) -> None:
    """The model directory, written beside the backups and moved into place when complete."""
    staging = partial / "model"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    summary = {
        "name": cfg.name,
        "backbone": cfg.model.backbone,
        "steps": total,
        "held_out_loss_before": first,
        "held_out_loss_after": last,
        "loss_per_step": losses,
        "config": cfg.model_dump(mode="json"),
    }
    (staging / "pretrain.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if output.exists():
        shutil.rmtree(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(output)
    shutil.rmtree(partial, ignore_errors=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kerasft.pretrain",
        description="Continue masked-LM pretraining of a backbone on unlabelled in-domain text and write "
        "a Hugging Face model directory for `model.backbone:`.",
        epilog="The last output line is output_dir=<path>. A killed run resumes from its last backup "
        "when started again with the same config. Exit status 2 means a problem with the config, "
        "files or backbone.",
    )
    p.add_argument(
        "--config", required=True, help="YAML with `name`, `model.backbone` and `pretrain:`"
    )
    config_lib.add_override_argument(p, "pretrain.max_steps=100")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    raw = config_lib.load_raw(args.config)
    cfg = config_lib.config_from_dict(raw, args.config, args.overrides, PretrainRun)
    result = run(cfg)
    print(f"output_dir={result.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
