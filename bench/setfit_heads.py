"""Other heads for `training.method: contrastive` at 8 labels per class, scored on held-out phrases.

    .venv/bin/python bench/setfit_heads.py [--seeds 10,11,12,13,14] [--size 8]

For choosing settings, not for reporting: each seed draws its labelled and
validation phrases as `bench/few_shot.py --heldout` does (1,000 SST-2 training
phrases set aside first and used as the test set, so GLUE dev is not looked at),
trains the contrastive body once at its defaults, then scores on the held-out
phrases:

- the run's own head (logistic regression, C = 1, as kerasft fits it);
- logistic regressions with C = 0.01, 0.1, 10, 100 on the same frozen vectors;
- nearest centroid (the cosine to each class's mean training vector);
- SetFit v1's second phase with a differentiable head trained end to end: the
  contrastive body saved, then fine-tuned with a fresh head for 16 epochs at
  batch 2, body learning rate 1e-5, head 1e-2 (SetFit v1's defaults), the best
  epoch on the validation phrases kept.

Prints a line per seed and the means; the last line is
logistic_c1=… logistic_c0.01=… logistic_c0.1=… logistic_c10=… logistic_c100=… centroid=… end_to_end=…
Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from few_shot import sample  # noqa: E402
from sst2 import require_sst2  # noqa: E402
from workdir import add_keep, work_dir  # noqa: E402

from kerasft._compat import keras  # noqa: E402
from kerasft.config import config_from_dict  # noqa: E402
from kerasft.data.pipeline import eval_dataset  # noqa: E402
from kerasft.data.splits import Split  # noqa: E402
from kerasft.data.tokenize import encode  # noqa: E402
from kerasft.models.backbones import load_tokenizer, resolve_backbone  # noqa: E402
from kerasft.training.contrastive import sentence_embedder  # noqa: E402
from kerasft.training.runner import run as train  # noqa: E402

CS = (0.01, 0.1, 10.0, 100.0)
END_TO_END = {"epochs": 16, "batch_size": 2, "learning_rate": 1e-5, "head": 1e-2}


def vectors(model: keras.Model, tokenizer, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The frozen sentence vectors the contrastive head reads, and the labels, of `frame`'s
    phrases: tokenized and batched as the run's own head fit and evaluation are."""
    encoded = encode(tokenizer, Split(list(frame.sentence), frame.label.to_numpy(), "bench"), 64)
    embedder = sentence_embedder(model)
    xs, ys = [], []
    for x, y in eval_dataset(encoded, 64, int(tokenizer.pad_token_id or 0)):
        xs.append(embedder(x, training=False).numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def heads(model: keras.Model, tokenizer, train_file: Path, test_file: Path) -> dict[str, float]:
    """Held-out accuracy of the other frozen-vector heads."""
    from sklearn.linear_model import LogisticRegression

    read = {"sep": "\t", "quoting": 3, "keep_default_na": False}
    train_frame, test_frame = pd.read_csv(train_file, **read), pd.read_csv(test_file, **read)
    (x, y), (xt, yt) = vectors(model, tokenizer, train_frame), vectors(model, tokenizer, test_frame)
    scores = {}
    for c in CS:
        fitted = LogisticRegression(C=c, max_iter=1000).fit(x, y)
        scores[f"logistic_c{c:g}"] = float((fitted.predict(xt) == yt).mean())
    labels = np.unique(y)
    centroids = np.stack([x[y == label].mean(0) for label in labels])
    scores["centroid"] = float((labels[(xt @ centroids.T).argmax(1)] == yt).mean())
    return scores


def end_to_end(body: keras.layers.Layer, tokenizer, directory: Path, run: dict) -> float:
    """Held-out accuracy of SetFit v1's end-to-end phase from the contrastive body."""
    body.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    training = dict(run["training"], method="standard", patience=END_TO_END["epochs"])
    training |= {k: END_TO_END[k] for k in ("epochs", "batch_size", "learning_rate")}
    training["group_learning_rates"] = {"head": END_TO_END["head"]}
    raw = dict(run, name=run["name"] + "-e2e", training=training)
    raw["model"] = {"backbone": str(directory), "normalize": True}
    result = train(config_from_dict(raw, "bench/setfit_heads.py"), verbose=0)
    return float(result.metrics["test"]["accuracy"])


def one_seed(work: Path, size: int, seed: int) -> dict[str, float]:
    train_file, validation_file = sample(size, seed, work, heldout=True)
    raw = {
        "name": f"contrastive-{size}-{seed}",
        "data": {
            "train": str(train_file),
            "validation": str(validation_file),
            "test": str(work / "heldout.tsv"),
            "text_column": "sentence",
            "quoting": "none",
            "max_length": 64,
        },
        "model": {"backbone": "minilm-l6"},
        "training": {
            "seed": seed,
            "monitor": "val_accuracy",
            "output_dir": str(work / "runs"),
            "method": "contrastive",
        },
        "export": {"enabled": False},
        "evaluation": {"report": False},
    }
    result = train(config_from_dict(raw, "bench/setfit_heads.py"), verbose=0)
    tokenizer = load_tokenizer(resolve_backbone("minilm-l6"))
    scores = {"logistic_c1": float(result.metrics["test"]["accuracy"])}
    scores |= heads(result.model, tokenizer, train_file, work / "heldout.tsv")
    body = next(layer for layer in result.model.layers if hasattr(layer, "save_pretrained"))
    scores["end_to_end"] = end_to_end(body, tokenizer, work / f"body-{seed}", raw)
    return scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="10,11,12,13,14", help="seeds, comma-separated")
    p.add_argument("--size", type=int, default=8, help="labelled phrases per class")
    add_keep(p)
    args = p.parse_args()
    require_sst2()
    work = work_dir("kerasft-setfit-heads-", args.keep)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows.append(one_seed(work, args.size, seed))
        print(
            f"RESULT seed={seed} " + " ".join(f"{k}={v:.4f}" for k, v in rows[-1].items()),
            flush=True,
        )
    means = pd.DataFrame(rows).mean()
    print(" ".join(f"{k}={v:.4f}" for k, v in means.items()))


if __name__ == "__main__":
    main()
