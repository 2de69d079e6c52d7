"""Fine-tuning strategies side by side on SST-2: full fine-tuning, layer-wise decay, gradual unfreezing, LoRA.

    .venv/bin/python bench/strategies.py [--train 3000] [--epochs 3]

Each strategy trains the embedded MiniLM-L6 on the same `--train` SST-2 phrases
for the same number of steps (`--epochs` epochs, batch 32) and is scored on the
GLUE SST-2 dev set (872 sentences). Needs ../shared/data. Last line:
full_acc=… llrd_acc=… unfreeze_acc=… lora_acc=… lora_trainable_pct=…
"""

from __future__ import annotations

import argparse
import io
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

from sst2 import require_sst2, sst2_data

from kerasft._compat import keras
from kerasft.config import config_from_dict
from kerasft.train import run

STRATEGIES = {
    "full": ({"learning_rate": 1e-4}, {}),
    "llrd": ({"learning_rate": 2e-4, "layerwise_lr_decay": 0.8}, {}),
    "unfreeze": ({"learning_rate": 2e-4, "unfreeze_every_epochs": 1}, {}),
    "lora": ({"learning_rate": 1e-3}, {"lora": {"rank": 8, "alpha": 16, "dropout": 0.05}}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=3000, help="training phrases")
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    require_sst2()
    work = Path(tempfile.mkdtemp(prefix="kerasft-strategies-"))
    results = {}
    for name, (training, model) in STRATEGIES.items():
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
    print(
        f"full_acc={results['full'][0]:.4f} llrd_acc={results['llrd'][0]:.4f} "
        f"unfreeze_acc={results['unfreeze'][0]:.4f} lora_acc={results['lora'][0]:.4f} "
        f"lora_trainable_pct={results['lora'][1]:.2f}"
    )


if __name__ == "__main__":
    main()
