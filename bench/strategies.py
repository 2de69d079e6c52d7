"""Fine-tuning strategies side by side on SST-2: full, layer-wise decay, unfreezing, LoRA, adapters, BitFit, prompt tuning, and a BiGRU baseline.

    .venv/bin/python bench/strategies.py [--train 3000] [--epochs 3] [--only adapter,bitfit]

Each strategy trains the embedded MiniLM-L6 (the BiGRU: from scratch on its
vocabulary and input embeddings) on the same `--train` SST-2 phrases for the same
number of steps (`--epochs` epochs, batch 32) and is scored on the GLUE SST-2 dev
set (872 sentences). Needs ../shared/data. Last line (the strategies that ran):
full_acc=… llrd_acc=… unfreeze_acc=… lora_acc=… adapter_acc=… bitfit_acc=…
prompt_acc=… bigru_acc=… lora_trainable_pct=… adapter_trainable_pct=…
"""

from __future__ import annotations

import argparse
import io
from contextlib import redirect_stdout

from sst2 import require_sst2, sst2_data
from workdir import add_keep, work_dir

from kerasft._compat import keras
from kerasft.config import config_from_dict
from kerasft.training.runner import run

STRATEGIES = {
    "full": ({"learning_rate": 1e-4}, {}),
    "llrd": ({"learning_rate": 2e-4, "layerwise_lr_decay": 0.8}, {}),
    "unfreeze": ({"learning_rate": 2e-4, "unfreeze_every_epochs": 1}, {}),
    "lora": ({"learning_rate": 1e-3}, {"lora": {"rank": 8, "alpha": 16, "dropout": 0.05}}),
    "adapter": ({"learning_rate": 1e-3}, {"adapters": {"size": 64, "placement": "houlsby"}}),
    "bitfit": ({"learning_rate": 1e-3, "bitfit": True}, {}),
    "prompt": ({"learning_rate": 3e-2}, {"prompt_tuning": {"tokens": 20, "init": "vocab"}}),
    # The baseline: no pretrained encoder, only MiniLM's vocabulary and input embeddings.
    "bigru": ({"learning_rate": 2e-3}, {"backbone": "bigru", "rnn": {"units": 128}}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=3000, help="training phrases")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--only", help=f"comma-separated subset of {', '.join(STRATEGIES)}")
    add_keep(p)
    args = p.parse_args()
    chosen = args.only.split(",") if args.only else list(STRATEGIES)
    unknown = sorted(set(chosen) - set(STRATEGIES))
    if unknown:
        p.error(f"unknown strategy {unknown[0]}; choose from {', '.join(STRATEGIES)}")
    require_sst2()
    work = work_dir("kerasft-strategies-", args.keep)
    results = {}
    for name in chosen:
        training, model = STRATEGIES[name]
        keras.backend.clear_session()
        cfg = config_from_dict(
            {
                "name": f"sst2_{name}",
                "data": sst2_data(args.train, work / "cache", max_length=64),
                "model": {"backbone": "minilm-l6", **model},
                "training": {
                    "epochs": args.epochs,
                    "batch_size": 32,
                    "monitor": "val_accuracy",
                    "patience": args.epochs,
                    "output_dir": str(work / "runs"),
                    **training,
                },
                "export": {"enabled": False},
            }
        )
        log = io.StringIO()
        with redirect_stdout(log):
            result = run(cfg, verbose=0)
        line = next(x for x in log.getvalue().splitlines() if x.startswith("training "))
        trainable = line.split("batch 32, ")[1].split(" parameters")[0]
        pct = float(line.split("trainable (")[1].split("%")[0])
        acc = result.metrics["validation"]["accuracy"]
        speed = result.metrics["train"]["examples_per_second"]
        results[name] = (acc, pct)
        print(
            f"{name:9s} GLUE-dev accuracy {acc:.4f}  {speed:6.1f} train examples/s  trainable {trainable} "
            f"({pct:.2f}%)",
            flush=True,
        )
    summary = [f"{name}_acc={acc:.4f}" for name, (acc, _) in results.items()]
    summary += [
        f"{name}_trainable_pct={results[name][1]:.2f}"
        for name in ("lora", "adapter")
        if name in results
    ]
    print(" ".join(summary))


if __name__ == "__main__":
    main()
