"""`python -m kerasft.distill --config configs/distill_sst2.yaml`: a smaller student taught by a finished run.

A distillation run is a training run whose config has a `distill:` section naming the
teacher run; `kerasft.distillation` holds the teacher, the student's start and the loss,
and `kerasft.train` runs it like any other run.
"""

from __future__ import annotations

from kerasft import config as config_lib
from kerasft.errors import ConfigError, cli_main
from kerasft.train import launch, parser


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parser(
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
