"""Seconds per MiniLM training step for each speed lever, on SST-2 phrases.

    .venv/bin/python bench/step_time.py [--examples 2000]

Each setup trains one epoch of the same SST-2 training phrases (batch 32, length-sorted
batches, the embedded MiniLM-L6) in its own process, through `kerasft.train.run`,
and reports the mean time of the steps after the first (traced) one:
float32 with Keras' dense AdamW, mixed_bfloat16 with dense AdamW, the defaults
(bf16 where native, lazy embedding rows), and the defaults with frozen embeddings.
Last line: f32_dense_s=… bf16_dense_s=… default_s=… frozen_embeddings_s=…
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from sst2 import require_sst2, sst2_data
from workdir import work_dir

SETUPS = {
    "f32_dense_s": {"precision": "float32", "lazy_embedding_updates": False},
    "bf16_dense_s": {"precision": "mixed_bfloat16", "lazy_embedding_updates": False},
    "default_s": {},
    "frozen_embeddings_s": {"freeze_embeddings": True},
}


def measure(examples: int, overrides: dict) -> float:
    import numpy as np

    from kerasft._compat import keras
    from kerasft.config import config_from_dict
    from kerasft.training.runner import run

    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.start)

    fit = keras.Model.fit

    def timed_fit(model, *args, callbacks=None, **kwargs):
        return fit(model, *args, callbacks=[Timer(), *(callbacks or [])], **kwargs)

    keras.Model.fit = timed_fit
    work = work_dir("kerasft-step-time-")
    training = {"epochs": 1, "batch_size": 32, "learning_rate": 1e-4, **overrides}
    training["output_dir"] = str(work / "runs")
    cfg = config_from_dict(
        {
            "name": "steps",
            "data": sst2_data(examples, work / "cache"),
            "training": training,
            "export": {"enabled": False},
        }
    )
    run(cfg, verbose=0)
    return float(np.mean(times[1:]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=2000, help="training phrases (one epoch)")
    p.add_argument("--setup", choices=list(SETUPS), help=argparse.SUPPRESS)
    args = p.parse_args()
    require_sst2()
    if args.setup:
        print("RESULT " + json.dumps(measure(args.examples, SETUPS[args.setup])))
        return
    results = {}
    for name, overrides in SETUPS.items():
        cmd = [sys.executable, __file__, "--setup", name, "--examples", str(args.examples)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"error: the {name} run failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(line[7:])
        print(f"{name[:-2]} ({overrides or 'defaults'}): {results[name]:.3f} s/step", flush=True)
    print(" ".join(f"{k}={v:.3f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
