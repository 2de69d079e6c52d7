"""`task: seq2seq` in a run: the model builder, validation on generated text, the final scores.

Validation and test are scored on text the model generates (XLA-compiled
`generate`, the `generation:` settings, length-sorted batches), with sacreBLEU and
rouge-score (`tasks.generation`); `val_loss` is the teacher-forced loss. Each
split's sources, references and generated texts go to `predictions/<split>.jsonl`
with a sentence chrF each, which the report's worst examples are ranked by.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kerasft._compat import keras
from kerasft.config import Config
from kerasft.data.tokenize import Encoded
from kerasft.models.seq2seq import Generator, build_seq2seq, decode, generator_for
from kerasft.tasks.generation import text_scores, write_predictions


def seq2seq_model(cfg: Config, spec: Any, backbone: Any, data: Any) -> tuple[keras.Model, dict]:
    """The model builder of `task: seq2seq`: the encoder-decoder model as a `Seq2SeqLM`, and no facts."""
    return build_seq2seq(backbone, cfg.model.lora), {}


def generated_texts(
    generator: Generator, tokenizer: Any, encoded: Encoded, pad_id: int, label: str = ""
) -> list[str]:
    """The texts the model generates for a split's sources, in input order."""
    if len(encoded) == 0:
        return []
    ids = generator(encoded.features, encoded.lengths, pad_id, label)
    return decode(tokenizer, ids)


class GenerationMetrics(keras.callbacks.Callback):
    """Scores the validation split on generated text once per epoch: `val_loss` (teacher-forced)
    and `val_bleu`, `val_chrf`, `val_exact_match`, `val_rouge1/2/Lsum` into the logs.

    Args:
        dataset: the validation split's (x, y) batches, for the loss.
        encoded: its token ids, for generation.
        references: its target texts, in input order.
        generator: the model's compiled `generate`.
        tokenizer: decodes the generated ids.
        pad_id: the tokenizer's pad id.
    """

    def __init__(self, dataset, encoded: Encoded, references, generator, tokenizer, pad_id: int):
        super().__init__()
        self.dataset, self.encoded, self.references = dataset, encoded, list(references)
        self.generator, self.tokenizer, self.pad_id = generator, tokenizer, pad_id

    def measure(self) -> tuple[dict, int]:
        """The validation scores now (also mid-epoch, for a tuning pruner) and the example count."""
        loss = self.model.evaluate(self.dataset, verbose=0, return_dict=True)["loss"]
        texts = generated_texts(self.generator, self.tokenizer, self.encoded, self.pad_id)
        scores = {"loss": float(loss), **text_scores(texts, self.references)}
        return {k: v for k, v in scores.items() if isinstance(v, float)}, scores["examples"]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        start = time.perf_counter()
        shown, examples = self.measure()
        for key, value in shown.items():
            logs[f"val_{key}"] = value
        summary = "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
        print(
            f"epoch {epoch + 1} validation: {summary}  ({examples} examples, "
            f"{time.perf_counter() - start:.1f}s)",
            flush=True,
        )


def generation_callback(cfg: Config, data: Any, datasets: Any, backbone: Any):
    """The validation callback of a seq2seq run."""
    generator = generator_for(backbone.model, cfg.generation)
    references = data.splits.validation.targets
    return GenerationMetrics(
        datasets.validation,
        data.encoded["validation"],
        references,
        generator,
        backbone.tokenizer,
        backbone.pad_id,
    )


def evaluate_generation(
    model: keras.Model, cfg: Config, run_dir: Path, data: Any, datasets: Any, backbone: Any
) -> dict:
    """Validation and test scores of the best epoch (already loaded into `model`), and their
    predictions in `predictions/<split>.jsonl`."""
    generator = generator_for(backbone.model, cfg.generation)
    metrics = {}
    for name in ("validation", "test"):
        split, encoded = getattr(data.splits, name), data.encoded[name]
        if not len(split):
            metrics[name] = {"examples": 0}
            continue
        loss = model.evaluate(getattr(datasets, name), verbose=0, return_dict=True)["loss"]
        texts = generated_texts(generator, backbone.tokenizer, encoded, backbone.pad_id, name)
        references = [str(t) for t in split.targets]
        m = {"loss": float(loss), **text_scores(texts, references)}
        metrics[name] = m
        shown = "  ".join(
            f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float) and k != "loss"
        )
        print(f"{name}: {shown}  ({m['examples']} examples)")
        write_predictions(run_dir / "predictions" / f"{name}.jsonl", split.texts, references, texts)
    return metrics
