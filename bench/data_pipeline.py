"""Benchmark of kerasft's input pipeline on SST-2 (../shared/data/sst2/train.tsv).

Measures tokenization speed (first run, then from the on-disk cache), padding
efficiency (real tokens / all tokens fed to the model) of plain per-batch
padding versus length bucketing and packing (`data.packing`, with the attention
positions each real token's query scores: the packed rows are wider than sorted
batches), the tf.data pipeline's own speed, and the
speed at which a MiniLM training step consumes batches, for comparison.

    .venv/bin/python bench/data_pipeline.py [--examples N] [--batch-size 32] [--train-steps 20]

Last line: padding_efficiency_plain=… padding_efficiency_bucketed=… padding_efficiency_packed=…
attention_per_token_bucketed=… attention_per_token_packed=… tokenize_ex_per_s=…
cached_speedup=… pipeline_ex_per_s=… train_ex_per_s=… pipeline_over_train=…
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from kerasft._compat import keras, tf
from kerasft.config import DataConfig
from kerasft.data import encode, load_splits, train_dataset
from kerasft.models import build_classifier, load_backbone, load_tokenizer, resolve_backbone

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "train.tsv"


def padding_and_attention(ds: tf.data.Dataset, real: str = "attention_mask") -> tuple[float, float]:
    """Real tokens / all tokens fed, and attention scores per real token and head (rows *
    width^2 / real tokens), over one pass of `ds`; `real` is the feature that is nonzero on
    real tokens (`segments` for packed batches)."""
    tokens = cells = scores = 0
    for x, _ in ds:
        rows, width = x[real].shape
        tokens += int(tf.reduce_sum(tf.cast(x[real] > 0, tf.int32)))
        cells += rows * width
        scores += rows * width**2
    return tokens / cells, scores / tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--examples", type=int, default=None, help="cap on training examples (default: all 60k)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument(
        "--train-steps", type=int, default=20, help="MiniLM training steps timed for comparison"
    )
    args = p.parse_args()
    if not SST2.is_file():
        sys.exit(f"error: {SST2} is absent; this benchmark needs ../shared/data")

    cfg = DataConfig(
        train=str(SST2),
        text_column="sentence",
        quoting="none",
        validation_split=0.0001,
        test_split=0.0,
        max_train_examples=args.examples,
    )
    splits = load_splits(cfg, seed=0)
    train = splits.train
    tokenizer = load_tokenizer(resolve_backbone("minilm-l6"))
    print(f"examples: {len(train)}")

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        encoded = encode(tokenizer, train, args.max_length, cache_dir=cache)
        first = time.perf_counter() - start
        print(f"tokenize (first run): {first:.2f}s, {len(train) / first:.0f} examples/s")
        start = time.perf_counter()
        encode(tokenizer, train, args.max_length, cache_dir=cache)
        cached = time.perf_counter() - start
        print(f"tokenize (cached):    {cached:.3f}s, {first / cached:.1f}x faster")

    kw = dict(max_length=args.max_length, seed=0)
    plain_eff, _ = padding_and_attention(
        train_dataset(encoded, args.batch_size, 0, bucketing=False, **kw)
    )
    print(f"padding efficiency, plain per-batch padding: {plain_eff:.3f}")
    bucketed = train_dataset(encoded, args.batch_size, 0, bucketing=True, **kw)
    bucket_eff, bucket_att = padding_and_attention(bucketed)
    print(f"padding efficiency, length bucketing:        {bucket_eff:.3f}")
    packed = train_dataset(encoded, args.batch_size, 0, bucketing=True, packing={}, **kw)
    packed_eff, packed_att = padding_and_attention(packed, "segments")
    print(f"padding efficiency, packing:                 {packed_eff:.3f}")
    print(
        f"attention scores per real token and head: bucketing {bucket_att:.1f}, packing {packed_att:.1f}"
    )

    start = time.perf_counter()
    n = sum(int(y.shape[0]) for _, y in bucketed)
    pipe = n / (time.perf_counter() - start)
    print(f"pipeline alone (bucketed epoch): {pipe:.0f} examples/s")

    model = build_classifier(load_backbone(resolve_backbone("minilm-l6"), tokenizer), 2)
    model.compile(
        keras.optimizers.Adam(1e-5), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    batches = list(bucketed.take(args.train_steps + 3))
    for x, y in batches[:3]:  # trace the train function before timing
        model.train_on_batch(x, y)
    start, seen = time.perf_counter(), 0
    for x, y in batches[3:]:
        model.train_on_batch(x, y)
        seen += int(y.shape[0])
    train_rate = seen / (time.perf_counter() - start)
    print(f"MiniLM training step: {train_rate:.1f} examples/s ({args.train_steps} steps)")
    print(
        f"padding_efficiency_plain={plain_eff:.3f} padding_efficiency_bucketed={bucket_eff:.3f} "
        f"padding_efficiency_packed={packed_eff:.3f} attention_per_token_bucketed={bucket_att:.1f} "
        f"attention_per_token_packed={packed_att:.1f} "
        f"tokenize_ex_per_s={len(train) / first:.0f} cached_speedup={first / cached:.1f} "
        f"pipeline_ex_per_s={pipe:.0f} train_ex_per_s={train_rate:.1f} pipeline_over_train={pipe / train_rate:.0f}"
    )


if __name__ == "__main__":
    main()
