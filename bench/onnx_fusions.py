"""Which of onnxruntime's transformer fusions, and skipping padding, make the ONNX export faster.

    .venv/bin/python bench/onnx_fusions.py [--run RUN_DIR] [--repeats 5] [--sorted]

Exports an SST-2 model of the embedded MiniLM-L6 (a 64-phrase, one-epoch run of
configs/sst2.yaml, or a finished run with `--run`: its accuracies then mean something)
with `export.onnx_optimize: false`, the plain tf2onnx graph; fuses that graph with
onnxruntime's transformer optimizer once per variant, after kerasft's rewrites
(`kerasft.serving.onnx_graph.optimize`), and quantizes each variant as the export does
(`kerasft.serving.onnx.quantize`). Then times, in turns over `--repeats` rounds (best
round each), the SavedModel and every variant's float32 and int8 graphs in default
onnxruntime sessions, on the 872 GLUE SST-2 dev sentences as batch-64 token ids (the
batches of bench/compression.py, in file order; `--sorted`: in order of length, so with
little padding). Variants, by the fusions left out:

- every: none left out (kerasft's export until 3df4ff5);
- noskip: the residual Add + LayerNormalization (`SkipLayerNormalization`);
- unfused: that and GELU's bias (`BiasGelu`): the export's fusions (`onnx_graph.UNFUSED`);
- noattention: those and attention (`Attention`);
- kerasft: `unfused` with the per-token layers on the real tokens only
  (`kerasft.serving.onnx_packing`): the export's default.

Last line: savedmodel_acc=… then, per variant, <variant>_fp32=… <variant>_int8=… (speed
against the SavedModel) and <variant>_int8_acc=…. Needs ../shared/data and the onnx extra.
"""

from __future__ import annotations

import numpy as np
from compression import dev_set, id_batches, onnx_predictor, savedmodel_predictor, speeds
from inference_ceiling import timing_parser, timing_setup

from kerasft.serving import onnx as onnx_lib
from kerasft.serving import onnx_graph

VARIANTS = {  # fusions left out, padding skipped
    "every": ((), False),
    "noskip": (("skip_layer_norm",), False),
    "unfused": (onnx_graph.UNFUSED, False),
    "noattention": ((*onnx_graph.UNFUSED, "attention"), False),
    "kerasft": (onnx_graph.UNFUSED, True),
}


def main() -> None:
    p = timing_parser(__doc__, "model")
    p.add_argument(
        "--sorted",
        action="store_true",
        help="batch the sentences in order of length (little padding) instead of file order",
    )
    args = p.parse_args()
    work, _, export, config = timing_setup(
        args, "kerasft-fusions-", ("export.onnx_optimize=false",)
    )
    plain = export.parent / "onnx" / export.name / onnx_lib.MODEL
    shape = (config["num_attention_heads"], config["hidden_size"])
    models = {"savedmodel": savedmodel_predictor(export)}
    for name, (unfused, pack) in VARIANTS.items():
        fused = work / f"{name}.onnx"
        ops = onnx_graph.optimize(plain, fused, *shape, unfused=unfused, pack=pack)
        onnx_lib.quantize(fused, work / f"{name}.int8.onnx")
        shown = ", ".join(f"{op} x{n}" for op, n in ops.items())
        print(f"{name}: {shown or 'nothing fused'}", flush=True)
        models[f"{name}_fp32"] = onnx_predictor(fused)
        models[f"{name}_int8"] = onnx_predictor(work / f"{name}.int8.onnx")
    texts, labels = dev_set()
    if args.sorted:
        order = np.argsort([len(t.split()) for t in texts], kind="stable")
        texts, labels = [texts[i] for i in order], labels[order]
    batches = id_batches(export, texts)
    real = np.mean([b["attention_mask"].mean() for b in batches])
    print(f"{len(batches)} batches, {1 - real:.0%} of their positions padding", flush=True)
    figures = speeds(models, batches, labels, args.repeats)
    base = figures["savedmodel"][1]
    print(
        f"savedmodel_acc={figures['savedmodel'][0]:.4f} "
        + " ".join(
            f"{name}_fp32={figures[name + '_fp32'][1] / base:.2f} "
            f"{name}_int8={figures[name + '_int8'][1] / base:.2f} "
            f"{name}_int8_acc={figures[name + '_int8'][0]:.4f}"
            for name in VARIANTS
        )
    )


if __name__ == "__main__":
    main()
