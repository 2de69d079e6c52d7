"""Serving speed: the exported raw-text SavedModel against the in-memory model fed by the Python tokenizer.

    .venv/bin/python bench/serving.py [--batches 30] [--singles 200]

Both paths run the same MiniLM-L6 classifier on SST-2 GLUE-dev sentences
(../shared/data/sst2/glue_dev.tsv): (a) in memory, Hugging Face's fast tokenizer
in Python and then the Keras model in a tf.function; (b) the export's
`serving_default`, which takes the strings and tokenizes in the graph. Reports
examples/s at batch 64 and p50/p99 latency at batch 1. Last line:
inmemory_b64_ex_per_s=… export_b64_ex_per_s=… inmemory_b1_p50_ms=… export_b1_p50_ms=… export_b1_p99_ms=…
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from workdir import add_keep, work_dir

from kerasft._compat import tf
from kerasft.models import build_classifier, load_backbone, load_tokenizer, resolve_backbone
from kerasft.serving import ExportInfo, export_model

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "glue_dev.tsv"


def timed(fn, batches):
    times = []
    for batch in batches:
        start = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - start)
    return np.array(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=30, help="timed batches of 64")
    p.add_argument("--singles", type=int, default=200, help="timed single-sentence requests")
    add_keep(p)
    args = p.parse_args()
    if not DEV.is_file():
        sys.exit(f"error: {DEV} is absent; this benchmark needs ../shared/data")
    sentences = [line.split("\t")[0] for line in DEV.read_text(encoding="utf-8").splitlines()[1:]]
    directory = resolve_backbone("minilm-l6")
    tokenizer = load_tokenizer(directory)
    backbone = load_backbone(directory, tokenizer)
    model = build_classifier(backbone, 2)
    export = export_model(
        model,
        ExportInfo("classification", ("0", "1"), max_length=128),
        backbone.input_names,
        work_dir("kerasft-serving-", args.keep) / "bench",
        tokenizer=tokenizer,
    )
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    forward = tf.function(lambda x: tf.nn.softmax(model(x, training=False)), reduce_retracing=True)

    def in_memory(texts):
        ids = tokenizer(texts, truncation=True, max_length=128, padding=True, return_tensors="np")
        return forward({k: tf.constant(v) for k, v in ids.items()}).numpy()

    def exported(texts):
        return serve(text=tf.constant(texts))["probabilities"].numpy()

    rng = np.random.default_rng(0)
    batches = [list(rng.choice(sentences, 64)) for _ in range(args.batches)]
    singles = [[s] for s in rng.choice(sentences, args.singles)]
    np.testing.assert_allclose(
        exported(batches[0]), in_memory(batches[0]), atol=1e-4
    )  # same answers
    results = {}
    for name, fn in (("inmemory", in_memory), ("export", exported)):
        for warm in batches[:3] + singles[:10]:  # trace every shape class once before timing
            fn(warm)
        b64 = timed(fn, batches)
        b1 = timed(fn, singles) * 1000
        results[name] = (64 * len(b64) / b64.sum(), np.percentile(b1, 50), np.percentile(b1, 99))
        print(
            f"{name}: batch 64 {results[name][0]:.1f} examples/s; batch 1 p50 {results[name][1]:.1f} ms, "
            f"p99 {results[name][2]:.1f} ms",
            flush=True,
        )
    print(
        f"inmemory_b64_ex_per_s={results['inmemory'][0]:.1f} export_b64_ex_per_s={results['export'][0]:.1f} "
        f"inmemory_b1_p50_ms={results['inmemory'][1]:.2f} export_b1_p50_ms={results['export'][1]:.2f} "
        f"export_b1_p99_ms={results['export'][2]:.2f}"
    )


if __name__ == "__main__":
    main()
