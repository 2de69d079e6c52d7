"""`python -m kerasft.train --config configs/x.yaml`: one fine-tuning run, top to bottom.

The run itself is `kerasft.training.runner.run`; this command reads the config,
resumes an interrupted run of it unless `--fresh`, and prints where the run,
its export and its report went.
"""

from __future__ import annotations

import sys

from kerasft import config as config_lib
from kerasft.cli import cli_main, run_parser
from kerasft.training.runner import launch


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = run_parser(
        "python -m kerasft.train",
        "Fine-tune a pretrained transformer from a YAML config, evaluate it and export a SavedModel.",
    ).parse_args(argv)
    return launch(config_lib.load_config(args.config, args.overrides), args.fresh)


if __name__ == "__main__":
    sys.exit(main())
