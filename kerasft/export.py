"""`python -m kerasft.export --run RUN_DIR`: a new SavedModel version of a finished run.

The model is rebuilt from the run's config and best checkpoint, in float32 (or in
bfloat16 with `--set export.precision=bfloat16`), and exported with the contract the
run recorded (`kerasft.training.exports.reexport`).
"""

from __future__ import annotations

import argparse

from kerasft import config as config_lib
from kerasft.cli import cli_main
from kerasft.training.exports import reexport


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kerasft.export",
        description="Re-export a finished run's best checkpoint as a new SavedModel version.",
        epilog="The last output line is export_dir=<path>. Exit status 2: not a finished run.",
    )
    p.add_argument(
        "--run", required=True, help="a run directory, as printed by kerasft.train (run_dir=...)"
    )
    p.add_argument("--dir", default=None, help="export root instead of the run's export.dir")
    p.add_argument(
        "--onnx",
        action="store_true",
        help="also write onnx/<version>/model.onnx and model.int8.onnx (as `export.onnx: true`)",
    )
    config_lib.add_override_argument(
        p,
        "export.precision=bfloat16",
        "override an export.* key of the run's config (other keys are what the checkpoint was "
        "trained with)",
    )
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    target = reexport(args.run, args.dir, onnx=args.onnx, overrides=args.overrides)
    print(f"export_dir={target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
