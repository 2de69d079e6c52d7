"""A hyperparameter search over config keys, every trial a training run (`python -m kerasft.tune`).

Every trial is a full `kerasft.training.runner.run` of the config with the trial's values
set (the same code path as `python -m kerasft.train`), after `clear_session()`. Two
engines run the trials, with the same `tuning` section and the same outputs
(`kerasft.training.trials.write_results`):

- `keras_tuner` (`search_kt`): its random, Bayesian and Hyperband oracles; on several
  machines, its chief/worker mode from `KERASTUNER_*` environment variables.
- `optuna` (`search_optuna`): TPE, random or grid samplers, median or Hyperband pruning,
  optionally a second objective, and any number of workers sharing `tuning.storage`.
"""

from __future__ import annotations

from pathlib import Path

from kerasft import config as config_lib
from kerasft._compat import keras
from kerasft.errors import ConfigError
from kerasft.training.trials import (
    check_space,
    objective_of,
    search_directory,
    with_values,
    write_hparams_config,
    write_results,
)

__all__ = ["objective_of", "search_directory", "tune", "with_values"]


def tune(config_path: str, overrides: list[str], verbose: int | None = None) -> Path | None:
    """Runs (or continues) the search described by the config's `tuning` section.

    Returns:
        best_config.yaml, or None on a keras-tuner worker (its chief writes the results).
    """
    source = str(config_path)
    cfg = config_lib.load_config(config_path, overrides)
    if cfg.tuning is None:
        raise ConfigError(f"{source} has no `tuning:` section; see configs/tune_quickstart.yaml.")
    raw = config_lib.load_raw(config_path, overrides)
    raw.pop("tuning")
    check_space(raw, cfg, source)
    root = search_directory(cfg)
    if cfg.tuning.engine == "optuna":
        from kerasft.training import search_optuna as engine

        engine.open_study(cfg, root)  # a missing extra, a bad storage or a changed space: now
    else:
        from kerasft.training import search_kt as engine

        engine.distributed_role()  # an incomplete environment, likewise
    root.mkdir(parents=True, exist_ok=True)
    (root / "hparams").mkdir(exist_ok=True)
    write_hparams_config(root / "hparams", cfg)
    records = engine.search(cfg, raw, source, root, verbose)
    if records is None:
        return None
    meta = {"engine": cfg.tuning.engine, "config": source}
    best_path = write_results(root, cfg, raw, source, records, meta)
    pruned = sum(r.state == "pruned" for r in records)
    if pruned:
        print(f"{pruned} of {len(records)} trials pruned", flush=True)
    if cfg.tuning.export_best:
        from kerasft.training.runner import run

        keras.backend.clear_session()
        result = run(config_lib.load_config(best_path), verbose=verbose)
        print(f"best config retrained: run_dir={result.run_dir} export_dir={result.export_dir}")
    return best_path
