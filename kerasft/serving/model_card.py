"""The model card (`<export dir>/<name>/README.md`) and TF Serving warmup requests of an export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kerasft._compat import tf
from kerasft.serving.versions import list_versions

META = "kerasft.json"  # per version, in assets.extra/ (TF Serving ignores it)


def write_warmup(version_dir: Path, name: str, texts: list[str], pairs: list[str] | None) -> int:
    """Writes `assets.extra/tf_serving_warmup_requests`: PredictionLog records TF Serving replays at load."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    texts = [t for t in texts if t][:8] or ["warm up"]
    batches = [
        texts[:1],
        texts,
    ]  # batch 1 and a small batch: both shapes are traced before the first client
    extra = version_dir / "assets.extra"
    extra.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
        for batch in batches:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            request.model_spec.signature_name = "serving_default"
            request.inputs["text"].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
            if pairs is not None:
                request.inputs["text_pair"].CopyFrom(
                    tf.make_tensor_proto((pairs or texts)[: len(batch)], dtype=tf.string)
                )
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return len(batches)


def write_meta(version_dir: Path, meta: dict[str, Any]) -> None:
    extra = version_dir / "assets.extra"
    extra.mkdir(exist_ok=True)
    (extra / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def write_card(model_dir: Path, name: str) -> Path:
    """Regenerates the model card from every version's metadata; the newest version is described in full."""
    metas = {}
    for v in reversed(list_versions(model_dir)):
        path = model_dir / str(v) / "assets.extra" / META
        if path.is_file():
            metas[v] = json.loads(path.read_text())
    if not metas:
        return model_dir / "README.md"
    latest, meta = next(iter(metas.items()))
    lines = [
        *_summary(name, latest, meta),
        *_metrics_table(meta),
        *_tflite_section(latest, meta.get("tflite"), meta.get("tflite_int8")),
        *_onnx_section(latest, meta.get("onnx")),
        *_signatures(name, meta),
        *_versions_table(metas, meta["metric_names"][:2]),
        *["", "## Config", "", *fenced(meta["config"].rstrip(), "yaml"), ""],
    ]
    card = model_dir / "README.md"
    card.write_text("\n".join(lines), encoding="utf-8")
    return card


def _summary(name: str, latest: int, meta: dict) -> list[str]:
    labels = ", ".join(code(n) for n in meta["labels"]) or "(regression score)"
    gen = meta.get("generation")
    if gen:  # seq2seq: what the export generates, and how
        search = "greedy" if gen["num_beams"] == 1 else f"beam search, {gen['num_beams']} beams"
        prefix = f", source prefix {code(gen['source_prefix'])}" if gen.get("source_prefix") else ""
        labels = f"generated text ({search}, up to {gen['max_new_tokens']} tokens{prefix})"
    return [
        f"# {name}",
        "",
        f"Fine-tuned with kerasft. Latest version: **{latest}** ({meta['created']}). "
        f"Serve this folder with TensorFlow Serving (`--model_base_path=$(pwd)`); it loads the highest version.",
        "",
        "| | |",
        "| --- | --- |",
        f"| task | `{meta['task']}` |",
        f"| backbone | {code(meta['backbone'])} |",
        f"| {'output' if gen else 'labels'} | {labels} |",
        f"| max length | {meta['max_length']} tokens |",
        f"| computes in | {meta.get('precision', 'float32')} |",
        f"| training data | {code(meta['data']['train'])} ({meta['data']['train_examples']} examples) |",
        f"| validation / test | {code(meta['data']['validation'])} / {code(meta['data']['test'])} |",
        f"| run | {code(meta['run_dir'])} |",
        *(
            [f"| distilled from | {code(meta['teacher'])} (teacher run) |"]
            if meta.get("teacher")
            else []
        ),
    ]


def _metrics_table(meta: dict) -> list[str]:
    names = meta["metric_names"]
    lines = [
        "",
        "## Metrics",
        "",
        "| split | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for split in ("validation", "test"):
        values = meta["metrics"].get(split, {})
        lines.append(f"| {split} | " + " | ".join(_num(values.get(k)) for k in names) + " |")
    return lines


def _tflite_section(latest: int, dynamic: dict | None, full: dict | None) -> list[str]:
    lines = []
    if dynamic:
        lines.append(
            _tflite_line(f"tflite/{latest}.tflite", "dynamic-range: int8 weights", dynamic)
        )
    if full:
        kind = "full integer: int8 weights and activations"
        lines.append(_tflite_line(f"tflite/{latest}.int8.tflite", kind, full))
    return ["", "## TFLite", "", "\n\n".join(lines)] if lines else []


def _tflite_line(file: str, kind: str, t: dict) -> str:
    lite = (
        f"`{file}` (token ids in, {kind}): {t['mb']:.1f} MB, "
        f"{t['size_ratio']:.2f} of the SavedModel's variables."
    )
    if "examples" in t:
        lite += (
            f" On {t['examples']} test examples its largest output change against the float model is "
            f"{t['max_abs_diff']:.4f}"
        )
        if t.get("examples_per_s"):
            lite += (
                f"; one example at a time it runs {t['examples_per_s']:.1f} examples/s against the float "
                f"model's {t['float_examples_per_s']:.1f}"
            )
        if t["agreement"] is not None:  # single-label classification
            lite += (
                f"; the top label agrees on {100 * t['agreement']:.1f}% and accuracy changes by "
                f"{t['accuracy_change']:+.4f}"
            )
        lite += "."
    return lite


def _onnx_section(latest: int, facts: dict | None) -> list[str]:
    if not facts:
        return []
    lines = [
        "",
        "## ONNX",
        "",
        f"`onnx/{latest}/` holds `model.onnx` (opset {facts['opset']}; token ids in, the outputs of "
        "`predict_ids` out) and `model.int8.onnx` (int8 weights and matrix products), with the tokenizer "
        "files and `labels.txt`. `python -m kerasft.predict --model onnx/"
        f"{latest}/model.onnx` runs either with onnxruntime.",
    ]
    fused = facts.get("fused")
    if fused:
        kernels = ", ".join(f"{n} {op}" for op, n in fused.items())
        lines.append(
            f"\nBoth are fused for onnxruntime ({kernels}: com.microsoft operators); for another "
            "ONNX runtime, re-export with `--onnx --set export.onnx_optimize=false`."
        )
    if "examples" not in facts:
        return lines
    accuracy = "savedmodel_accuracy" in facts
    lines += [
        "",
        f"On {facts['examples']} test examples, in batches, on the machine that exported it:",
        "",
        "| model | MB | examples/s | largest output change |" + (" accuracy |" if accuracy else ""),
        "| --- | --- | --- | --- |" + (" --- |" if accuracy else ""),
    ]
    for name, label, mb in (
        ("savedmodel", "SavedModel", None),
        ("onnx", "`model.onnx`", facts["mb"]),
        ("onnx_int8", "`model.int8.onnx`", facts["int8_mb"]),
    ):
        diff = facts.get(name + "_max_abs_diff")
        row = (
            f"| {label} | {f'{mb:.1f}' if mb else ''} | {facts[name + '_ex_per_s']:.1f} | "
            f"{'reference' if diff is None else f'{diff:.1e}'} |"
        )
        lines.append(row + (f" {facts[name + '_accuracy']:.4f} |" if accuracy else ""))
    return lines


def _signatures(name: str, meta: dict) -> list[str]:
    raw_text = meta["signature"] == "text"
    if raw_text:
        pair = {"text_pair": "a second one"} if meta["pair"] else {}
        example = {"instances": [{"text": "an example sentence", **pair}]}
        default = (
            "raw UTF-8 strings `text`"
            + (" and `text_pair`" if meta["pair"] else "")
            + " `[batch]`, tokenized in the graph exactly as in training (needs TF Serving built "
            "with TF Text ops, as the official images are)."
        )
    else:
        example = {"instances": [{"input_ids": [101, 2019, 102], "attention_mask": [1, 1, 1]}]}
        default = (
            "token ids (the backbone's tokenizer cannot run in the graph; tokenize with the files "
            "in `assets/`)."
        )
    types = ", `token_type_ids`" if "token_type_ids" in meta["input_names"] else ""
    return [
        "",
        "## Signatures",
        "",
        f"- `serving_default`: {default}",
        f"- `predict_ids`: int32 `input_ids`, `attention_mask`{types} `[batch, length]`, for "
        "clients that tokenize themselves.",
        f"- outputs: {', '.join(f'`{o}`' for o in meta['outputs'])}.",
        "",
        "REST:",
        "",
        "```",
        f"curl -d '{json.dumps(example)}' http://localhost:8501/v1/models/{name}:predict",
        "```",
        "",
        "gRPC (Python, `tensorflow-serving-api`):",
        "",
        "```python",
        "import grpc, tensorflow as tf",
        "from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc",
        "stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel('localhost:8500'))",
        "request = predict_pb2.PredictRequest()",
        f"request.model_spec.name = '{name}'",
        "request.model_spec.signature_name = 'serving_default'",
        "request.inputs['text'].CopyFrom(tf.make_tensor_proto(['an example sentence']))",
        "print(stub.Predict(request, 10.0).outputs)",
        "```",
        "",
        "`assets.extra/tf_serving_warmup_requests` holds warmup requests TF Serving replays when it loads a version.",
    ]


def _versions_table(metas: dict[int, dict], shown: list[str]) -> list[str]:
    lines = [
        "",
        "## Versions",
        "",
        "| version | created | run | " + " | ".join(f"test {k}" for k in shown) + " |",
        "| --- | --- | --- |" + " --- |" * len(shown),
    ]
    for v, m in metas.items():
        test = m["metrics"].get("test", {})
        lines.append(
            f"| {v} | {m['created']} | {code(m['run_dir'])} | "
            + " | ".join(_num(test.get(k)) for k in shown)
            + " |"
        )
    return lines


def code(text: Any) -> str:
    """`text` as a Markdown code span that stays one span in a table cell, whatever it holds:
    the fence is longer than any run of backticks inside, pipes are escaped and line breaks
    become spaces, so a label or path can neither end the span nor leave raw HTML."""
    text = " ".join(str(text).splitlines()).replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def fenced(text: str, language: str = "") -> list[str]:
    """A fenced code block around `text`, its fence longer than any backtick run inside."""
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * (longest + 1)
    return [f"{fence}{language}", text, fence]


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))
