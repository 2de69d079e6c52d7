"""Text to text on this CPU: a tiny T5 learns written-out dates → ISO dates from scratch.

    .venv/bin/python bench/seq2seq.py [--train 20000] [--epochs 4] [--generate 500]

Writes the seeded date task and its tiny T5 (bench/dates.py) to a temporary
folder, trains `configs/dates.yaml` on it with `python -m kerasft.train`'s code path
(`training.runner.run`, precision as the config says: `auto`), and measures:

- training examples/s (training steps only) and wall-clock seconds;
- exact match and sacreBLEU on the 500 held-out test dates (greedy, the export's settings);
- `generate` on the test sources, eager against XLA-compiled (`tf.function(jit_compile=True)`),
  in the same length-sorted batches of 64, as examples/s (XLA's first-call compilation
  is timed separately and left out);
- export parity: the SavedModel's `serving_default` (strings in, strings out) against the
  in-memory model's generated text, both in float32 (the export computes in float32; the
  training model's own bf16 texts are compared too).

Last line: exact_match=… bleu=… xla_generate_speedup=… export_parity=…
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from dates import write_dates  # noqa: E402
from workdir import add_keep, work_dir  # noqa: E402

from kerasft._compat import tf  # noqa: E402
from kerasft.config import load_config  # noqa: E402
from kerasft.models.seq2seq import Generator, decode  # noqa: E402
from kerasft.training.exports import rebuild  # noqa: E402
from kerasft.training.runner import run  # noqa: E402


def train(work: Path, n_train: int, epochs: int):
    files = write_dates(work / "dates", n_train, seed=0)
    overrides = [
        f"data.train={files['train']}",
        f"data.validation={files['validation']}",
        f"data.test={files['test']}",
        f"model.backbone={files['backbone']}",
        f"training.epochs={epochs}",
        f"training.output_dir={work / 'runs'}",
        f"export.dir={work / 'exports'}",
    ]
    cfg = load_config(REPO / "configs" / "dates.yaml", overrides)
    start = time.perf_counter()
    result = run(cfg, verbose=2)
    return cfg, result, time.perf_counter() - start


def generate_speed(model, cfg, encoded, pad_id: int, jit: bool, n: int) -> tuple[float, float]:
    """(examples/s after the first call, seconds of the first call) of `generate` on `n` sources."""
    from kerasft.data.tokenize import Encoded

    ends = np.cumsum(encoded.lengths)[:n]
    sub = Encoded(
        {k: v[: ends[-1]] for k, v in encoded.features.items()},
        encoded.lengths[:n],
        encoded.targets,
    )
    generator = Generator(model, cfg.generation, jit=jit)
    start = time.perf_counter()
    generator(sub.features, sub.lengths, pad_id)
    first = time.perf_counter() - start
    start = time.perf_counter()
    generator(sub.features, sub.lengths, pad_id)
    return n / (time.perf_counter() - start), first


def parity(result, cfg, backbone) -> tuple[float, float]:
    """Share of test sources where the export's text equals the float32 in-memory model's, and
    where it equals the training model's (its precision) text."""
    import tensorflow_text  # noqa: F401  (the export's ops)

    records = [json.loads(x) for x in (result.run_dir / "predictions" / "test.jsonl").open()]
    sources = [r["source"] for r in records]
    loaded = tf.saved_model.load(str(result.export_dir))
    served = loaded.signatures["serving_default"](text=tf.constant(sources))
    exported = [t.decode() for t in served["text"].numpy()]
    tokenizer = backbone.tokenizer
    ids = tokenizer(
        [cfg.data.source_prefix + s for s in sources],
        truncation=True,
        max_length=cfg.data.max_length,
    )
    flat = np.concatenate([np.asarray(i, np.int32) for i in ids["input_ids"]])
    lengths = np.array([len(i) for i in ids["input_ids"]])
    features = {"input_ids": flat, "attention_mask": np.ones_like(flat)}
    in_memory = decode(
        tokenizer, Generator(backbone.model, cfg.generation)(features, lengths, backbone.pad_id)
    )
    same = np.mean([a == b for a, b in zip(exported, in_memory, strict=True)])
    trained = np.mean([a == r["generated"] for a, r in zip(exported, records, strict=True)])
    return float(same), float(trained)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=20000, help="training dates (default 20000)")
    p.add_argument("--epochs", type=int, default=4, help="epochs (default 4, the config's)")
    p.add_argument("--generate", type=int, default=500, help="test sources timed for generate")
    add_keep(p)
    args = p.parse_args()
    work = work_dir("kerasft-seq2seq-", args.keep)
    cfg, result, wall = train(work, args.train, args.epochs)
    test, tr = result.metrics["test"], result.metrics["train"]
    print(
        f"trained {tr['examples']} examples x {tr['epochs']} epochs in {wall:.0f}s "
        f"({tr['examples_per_second']} examples/s in training steps); test exact match "
        f"{test['exact_match']:.4f}, BLEU {test['bleu']:.2f}, chrF {test['chrf']:.2f}",
        flush=True,
    )
    _, backbone, _ = rebuild(result.run_dir)  # the best weights, in float32, as the export has them
    from kerasft.data.prepared import load_data
    from kerasft.tasks import TASKS

    data = load_data(cfg, TASKS["seq2seq"], backbone.tokenizer)
    n = min(args.generate, len(data.encoded["test"]))
    speeds = {}
    for jit in (False, True):
        rate, first = generate_speed(
            backbone.model, cfg, data.encoded["test"], backbone.pad_id, jit, n
        )
        speeds[jit] = rate
        print(
            f"generate ({'XLA' if jit else 'eager'}, float32): {rate:.1f} examples/s on {n} test "
            f"sources after a first call of {first:.1f}s",
            flush=True,
        )
    same, trained = parity(result, cfg, backbone)
    print(
        f"export parity: {same:.4f} of {n} test texts equal the float32 in-memory model's; "
        f"{trained:.4f} equal the training model's own ({result.model.dtype_policy.name})",
        flush=True,
    )
    print(
        f"exact_match={test['exact_match']:.4f} bleu={test['bleu']:.2f} "
        f"xla_generate_speedup={speeds[True] / speeds[False]:.2f} export_parity={same:.4f} "
        f"train_examples_per_second={tr['examples_per_second']} train_seconds={wall:.0f}"
    )


if __name__ == "__main__":
    main()
