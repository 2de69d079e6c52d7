"""`kerasft <command> ...`: one entry point for the module commands.

kerasft train   --config configs/x.yaml     (python -m kerasft.train)
kerasft tune    --config configs/x.yaml     (python -m kerasft.tune)
kerasft export  --run runs/x/<timestamp>    (python -m kerasft.export)
kerasft predict --model saved_models/x --input in.csv --output out.jsonl   (python -m kerasft.predict)
kerasft distill --config configs/distill_sst2.yaml   (python -m kerasft.distill)
kerasft report  runs/x/<timestamp> [runs/y/<timestamp> ...]   (python -m kerasft.report)
kerasft pretrain --config configs/pretrain_tweets.yaml   (python -m kerasft.pretrain)
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = ("train", "tune", "export", "predict", "distill", "report", "pretrain")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(
                f"\nerror: unknown command `{argv[0]}`; use one of {', '.join(COMMANDS)}",
                file=sys.stderr,
            )
            return 2
        return 0
    return importlib.import_module(f"kerasft.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
