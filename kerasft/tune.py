"""`python -m kerasft.tune --config configs/x.yaml`: a hyperparameter search over config keys.

Every trial is a training run of the config with the trial's values set
(`kerasft.training.search`), with keras-tuner or Optuna (`tuning.engine`). Running the
same command again continues the search; running it in several processes or machines
on one Optuna storage, or as keras-tuner chief and workers, spreads one search over them.

Outputs in the tuning directory: `trials.csv` and `trials.md` (every trial,
best first), `search.json`, `best_config.yaml` (the best trial's fully resolved config,
which `python -m kerasft.train --config` accepts unchanged), `hparams/` (TensorBoard
HParams logs) and the engine's state (`search/`, or `study.journal`). The last output
line is `best_config=<path>`.
"""

from __future__ import annotations

import argparse
import sys

from kerasft import config as config_lib
from kerasft.cli import cli_main
from kerasft.errors import ConfigError, Interrupted
from kerasft.training.search import tune


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kerasft.tune",
        description="Search hyperparameters over a kerasft config's `tuning:` section with keras-tuner "
        "or Optuna (`tuning.engine`).",
        epilog="Run the same command again to continue a search. Run it in several processes on one "
        "Optuna `tuning.storage`, or as keras-tuner chief and workers (KERASTUNER_TUNER_ID, "
        "KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT), to share one search (docs/tuning.md). The last "
        "output line is best_config=<path>, a config `python -m kerasft.train --config` accepts as is "
        "(a keras-tuner worker ends with `worker done: the chief writes the results`). "
        "Exit status 2 means a problem with the config, data, backbone or storage.",
    )
    p.add_argument("--config", required=True, help="a YAML config with a `tuning:` section")
    config_lib.add_override_argument(p, "tuning.max_trials=5")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    import keras_tuner as kt  # after kerasft.training.search has set TensorFlow up

    args = parser().parse_args(argv)
    try:
        best = tune(args.config, args.overrides)
    except kt.errors.FatalError as exc:  # keras-tuner's word for a search that cannot go on
        raise ConfigError(str(exc)) from None
    except (KeyboardInterrupt, Interrupted):
        raise Interrupted(
            "the search stopped; run the same command again to continue it (finished trials are "
            "kept, the interrupted one starts over)."
        ) from None
    if best is not None:  # a keras-tuner worker: its chief writes the results
        print(f"best_config={best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
