"""Shared fixtures: a tiny random BERT written to disk, tiny data, no downloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # any download attempt must fail loudly
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kerasft._compat import keras, tf  # noqa: E402, F401  (sets TF_USE_LEGACY_KERAS first)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

WORDS = [
    "good",
    "great",
    "fun",
    "bad",
    "awful",
    "boring",
    "movie",
    "film",
    "plot",
    "the",
    "was",
    "a",
    "very",
    "not",
    "ok",
]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ".", ","]


def tiny_bert_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
    )


def write_tokenizer(directory: Path) -> None:
    from transformers import BertTokenizerFast

    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True).save_pretrained(
        str(directory)
    )


def pytorch_state_dict(tf_model) -> dict[str, np.ndarray]:
    """The weights of a TF BERT as a PyTorch-format state dict (names and layouts), without torch."""
    from transformers.modeling_tf_pytorch_utils import (
        TransposeType,
        convert_tf_weight_name_to_pt_weight_name,
    )

    state = {}
    for weight in tf_model.weights:
        name, transpose = convert_tf_weight_name_to_pt_weight_name(
            weight.name, start_prefix_to_remove="bert.", tf_weight_shape=weight.shape
        )
        value = weight.numpy()
        state[name] = np.ascontiguousarray(value.T if transpose == TransposeType.SIMPLE else value)
    return state


@pytest.fixture(scope="session", autouse=True)
def children_keep_temporary_files_under_basetemp(tmp_path_factory):
    """Processes the tests start write their temporary files under pytest's own temporary
    directory, which pytest prunes, not the machine's /tmp: TensorFlow's autograph writes a
    source file per traced function and removes them at exit, which a process the tests kill
    (SIGKILL, to resume a run) never reaches. About 150 files were left in /tmp per suite.
    This process's own `tempfile` directory was fixed when pytest made its basetemp."""
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("children-tmp"))
    yield
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT saved the way Hugging Face PyTorch checkpoints are: PyTorch-format safetensors."""
    from safetensors.numpy import save_file
    from transformers import TFBertModel

    directory = tmp_path_factory.mktemp("tiny-bert")
    # Python's and NumPy's generators too: tf_keras draws an unseeded initializer's seed from
    # Python's `random`, so tf.random.set_seed alone left the weights to whichever tests ran
    # first in the worker, and numeric outcomes moved with pytest-xdist's scheduling.
    keras.utils.set_random_seed(0)
    model = TFBertModel(tiny_bert_config())
    model(model.dummy_inputs)
    model.config.save_pretrained(str(directory))
    save_file(
        pytorch_state_dict(model), str(directory / "model.safetensors"), metadata={"format": "pt"}
    )
    write_tokenizer(directory)
    return directory


POSITIVE = [
    "good movie",
    "great film",
    "the plot was fun",
    "very good",
    "a great plot",
    "fun film",
    "good fun",
    "the movie was great",
    "great fun",
    "very great film",
]
NEGATIVE = [
    "bad movie",
    "awful film",
    "the plot was boring",
    "very bad",
    "a boring plot",
    "awful movie",
    "not good",
    "the film was awful",
    "boring film",
    "very bad plot",
]


def tiny_run_config(root: Path, backbone: Path, copies: int = 3, **sections: dict) -> dict:
    """A config dict for a quick two-class run under `root` on `copies` copies of the easy sentences.

    20% validation and 20% test; `sections` update the config's sections (e.g. `training={...}`).
    """
    (root / "d.csv").write_text(
        "text,label\n"
        + "".join(f"{t},pos\n" for t in POSITIVE * copies)
        + "".join(f"{t},neg\n" for t in NEGATIVE * copies)
    )
    raw = {
        "name": "tiny",
        "data": {
            "train": str(root / "d.csv"),
            "max_length": 16,
            "cache_dir": str(root / "cache"),
            "validation_split": 0.2,
            "test_split": 0.2,
        },
        "model": {"backbone": str(backbone)},
        "training": {"epochs": 2, "batch_size": 8, "output_dir": str(root / "runs")},
        "export": {"dir": str(root / "exports")},
        # Reports cost seconds a run; tests/test_report.py and the CLI test turn them on.
        "evaluation": {"report": False},
    }
    return with_sections(raw, sections)


def with_sections(raw: dict, sections: dict) -> dict:
    """`raw` with each of `sections` merged into its section (or set, when it has none)."""
    for section, values in sections.items():
        if isinstance(raw.get(section), dict):
            raw[section].update(values)
        else:
            raw[section] = values
    return raw


@pytest.fixture
def tiny_csv(tmp_path) -> Path:
    """40 labelled lines of an easy two-class task."""
    rows = ["text,label"]
    for _i in range(2):
        rows += [f"{t},pos" for t in POSITIVE] + [f"{t},neg" for t in NEGATIVE]
    path = tmp_path / "tiny.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def bf16_cpu(monkeypatch):
    """`precision: auto` decides as on a CPU with native bfloat16 (AVX-512 BF16), whatever this
    one has, and not as `KERASFT_AUTO_PRECISION` says. Skips where a GPU decides first."""
    from kerasft.training import hardware

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU decides `precision: auto` before the CPU's flags")
    monkeypatch.delenv(hardware.AUTO_PRECISION_ENV, raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx512_bf16"})
    return hardware


@pytest.fixture
def tiny_config(tmp_path, tiny_bert_dir, tiny_csv) -> dict:
    """A complete config dict for a fast run on the tiny model; tests tweak it."""
    return {
        "name": "tiny",
        "data": {
            "train": str(tiny_csv),
            "validation_split": 0.2,
            "test_split": 0.2,
            "max_length": 16,
            "cache_dir": str(tmp_path / "cache"),
        },
        "model": {"backbone": str(tiny_bert_dir), "dropout": 0.0},
        "training": {
            "epochs": 2,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "output_dir": str(tmp_path / "runs"),
        },
        "export": {"dir": str(tmp_path / "saved_models")},
        "evaluation": {"report": False},  # as in tiny_run_config
    }


def _ctrl_c_works() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def ctrl_c():
    """Sends this process a Ctrl-C (SIGINT), as a user does, and returns once Python has run
    its handler. The suite started in the background by a shell without job control ignores
    SIGINT: the test takes it as `cli_main` would in a terminal. Main thread only (handlers)."""
    import signal
    import threading
    import time

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set in the main thread only")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def press() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(20):  # the handler has run, whichever thread the signal landed on
            time.sleep(0.005)

    try:
        yield press
    finally:
        signal.signal(signal.SIGINT, previous)


def command(module: str, config: Path, *extra: str, stderr=subprocess.STDOUT) -> subprocess.Popen:
    """`python -m <module> --config <config>` in a fresh process, unbuffered, output piped.

    The child takes Ctrl-C (SIGINT) even when the suite was started in the background by a
    shell without job control, which ignores SIGINT for its children.
    """
    return subprocess.Popen(
        [sys.executable, "-m", module, "--config", str(config), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_ctrl_c_works,
    )


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory):
    """A small SentencePiece Unigram model trained here on the parity corpus (no downloads)."""
    from tests.parity_corpus import parity_corpus

    spm = pytest.importorskip("sentencepiece")
    root = tmp_path_factory.mktemp("spm")
    lines = [t.replace("\n", " ").strip() for t in parity_corpus(560)]
    (root / "train.txt").write_text("\n".join(t for t in lines if t) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(root / "train.txt"),
        model_prefix=str(root / "spiece"),
        vocab_size=800,
        model_type="unigram",
        character_coverage=0.9995,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
        minloglevel=2,
    )
    return root / "spiece.model"


def sentencepiece_tokenizer(family: str, model_file: Path):
    """A Hugging Face tokenizer of `family` (albert, xlm-roberta, t5) on a SentencePiece model."""
    import transformers

    cls = {
        "albert": transformers.AlbertTokenizerFast,
        "xlm-roberta": transformers.XLMRobertaTokenizerFast,
        "t5": transformers.T5TokenizerFast,
    }[family]
    return cls(vocab_file=str(model_file))


def policy_atol(model, float32: float = 1e-5) -> float:
    """How closely a float32 rebuild (an export) can match `model`: `float32` when the model
    computes in float32, else what bfloat16/float16 rounding leaves (3 significant digits)."""
    return float32 if model.dtype_policy.compute_dtype == "float32" else 2e-2


def assert_trained_and_served(result, ids: dict) -> None:
    """A finished run's loss fell, its export takes raw text, and gives the trained model's
    probabilities on the token ids `ids` (so whatever the model learned is in the export).
    Exports compute in float32: a run trained in mixed precision matches within `policy_atol`."""
    history = result.metrics["train"]["history"]["loss"]
    assert history[-1] < history[0], history
    loaded = tf.saved_model.load(str(result.export_dir))
    served = loaded.signatures["serving_default"](text=tf.constant(["great fun film", "awful"]))
    assert served["probabilities"].shape == (2, 2)
    in_memory = tf.nn.softmax(result.model(ids, training=False)).numpy()
    exported = loaded.signatures["predict_ids"](**ids)["probabilities"].numpy()
    np.testing.assert_allclose(exported, in_memory, atol=policy_atol(result.model))


def pretrain_config(tmp_path, backbone, **pretrain) -> dict:
    """A `kerasft.pretrain` config dict on the easy sentences (written to `tmp_path`) for 4
    epochs; `pretrain` updates the `pretrain:` section."""
    (tmp_path / "unlabelled.txt").write_text("\n".join((POSITIVE + NEGATIVE) * 12) + "\n")
    return {
        "name": "dapt",
        "model": {"backbone": str(backbone)},
        "pretrain": {
            "files": [str(tmp_path / "unlabelled.txt")],
            "max_length": 16,
            "batch_size": 8,
            "learning_rate": 3e-3,
            "warmup_ratio": 0.0,
            "epochs": 4,
            "validation_share": 0.2,
            "log_every_steps": 5,
            "output_dir": str(tmp_path / "dapt"),
            **pretrain,
        },
    }


# The seq2seq fixtures (`dates`, `marian`) live in their own module; imported here, every test
# module can ask for them.
from tests.seq2seq_fixtures import dates, marian  # noqa: E402, F401

# ---- scheduling under `make test` (pytest-xdist, --dist loadgroup) ------------------------------
# Each module runs on one worker (its module-scoped fixtures are built once), except the modules
# below, whose tests share nothing costly: their slow tests spread over every worker. Modules
# start longest first (measured), so no worker is left with a long one at the end.
SPREAD = {"test_resume", "test_tune", "test_tune_optuna", "test_distribute", "test_contrastive"}
LONGEST_FIRST = [
    "test_distribute",
    "test_resume",
    "test_tune_optuna",
    "test_tune",
    "test_contrastive",
    "test_commands",
    "test_seq2seq_runs",
    "test_seq2seq",
    "test_distill",
    "test_rnn",
    "test_e2e",
    "test_pretrain",
    "test_onnx",
    "test_bf16",
    "test_export",
    "test_prompt",
    "test_adapters",
    "test_train",
    "test_tasks",
    "test_strategies",
]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    def module(item) -> str:
        return Path(str(item.fspath)).stem

    def rank(item) -> int:
        name = module(item)
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: tests keep their order within a module
    for item in items:
        if module(item) not in SPREAD:
            item.add_marker(pytest.mark.xdist_group(module(item)))
