"""`python -m kerasft.distill --config configs/distill_sst2.yaml`: a smaller student taught by a finished run.

A distillation run is a training run whose config has a `distill:` section naming the
teacher run; `kerasft.training.distillation` holds the teacher, its cached outputs and
the `Distiller` model, and `kerasft.training.runner` runs it like any other run.
"""

from __future__ import annotations

from kerasft import config as config_lib
from kerasft.cli import cli_main, run_parser
from kerasft.errors import ConfigError
from kerasft.training.runner import launch


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = run_parser(
        "python -m kerasft.distill",
        "Train a smaller student on a finished run's outputs (the config's `distill:` section; "
        "every other section as for kerasft.train).",
    ).parse_args(argv)
    cfg = config_lib.load_config(args.config, args.overrides)
    if cfg.distill is None:
        raise ConfigError(
            f"{args.config}: no `distill:` section; add one with `teacher: <run dir>` "
            "(configs/distill_sst2.yaml shows one)."
        )
    return launch(cfg, args.fresh)


if __name__ == "__main__":
    raise SystemExit(main())
