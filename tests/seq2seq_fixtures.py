"""Fixtures of the seq2seq tests (tests/conftest.py imports them): the date task of
bench/dates.py with a tiny T5, a tiny Marian on the same vocabulary, and a quick config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from dates import write_dates, write_tiny_t5  # noqa: E402


@pytest.fixture(scope="session")
def dates(tmp_path_factory) -> dict[str, Path]:
    """The date task (1,600 training, 48 validation and test examples) and a tiny T5 for it."""
    root = tmp_path_factory.mktemp("dates")
    files = write_dates(root, train=1600, held_out=48, seed=0)
    rows = [json.loads(line) for line in files["train"].read_text().splitlines()]
    texts = [r[k] for r in rows for k in ("text", "target")]
    write_tiny_t5(files["backbone"], texts, d_model=32, d_kv=8, d_ff=64, num_heads=4)
    return files


def seq2seq_config(root: Path, files: dict, **sections) -> dict:
    raw = {
        "name": "dates",
        "task": "seq2seq",
        "data": {
            "train": str(files["train"]),
            "validation": str(files["validation"]),
            "test": str(files["test"]),
            "target_column": "target",
            "max_length": 24,
            "max_target_length": 12,
        },
        "model": {"backbone": str(files["backbone"]), "weights": "random"},
        "training": {
            "epochs": 2,
            "batch_size": 32,
            "learning_rate": 5e-3,
            "monitor": "val_chrf",
            "precision": "float32",
            "output_dir": str(root / "runs"),
        },
        # Eager generation in validation: faster than XLA's compilations on 48 texts.
        "generation": {"max_new_tokens": 12, "batch_size": 64, "xla": False},
        "export": {"dir": str(root / "exports")},
        "evaluation": {"report": False},
    }
    from tests.conftest import with_sections

    return with_sections(raw, sections)


def write_tiny_marian(directory: Path, texts: list[str]) -> Path:
    """A tiny Marian (2 + 2 layers) and its tokenizer: one SentencePiece model for both sides,
    `vocab.json` with Marian's ids (`</s>` 0, `<unk>` 1, `<pad>` last)."""
    import io

    import sentencepiece as spm
    from transformers import MarianConfig, MarianTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=90,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        minloglevel=2,
    )
    (directory / "source.spm").write_bytes(model.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    pieces = [p for p in pieces if p not in ("<unk>", "<s>", "</s>")]
    vocab = ["</s>", "<unk>", ">>fr<<", *pieces, "<pad>"]
    (directory / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(vocab)}))
    tokenizer = MarianTokenizer(
        str(directory / "source.spm"), str(directory / "source.spm"), str(directory / "vocab.json")
    )
    tokenizer.save_pretrained(str(directory))
    MarianConfig(
        vocab_size=len(vocab),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=len(vocab) - 1,
        eos_token_id=0,
        decoder_start_token_id=len(vocab) - 1,
        forced_eos_token_id=0,
        dropout=0.0,
    ).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def marian(dates) -> Path:
    rows = [json.loads(line) for line in dates["train"].read_text().splitlines()]
    return write_tiny_marian(
        dates["train"].parent / "marian", [r[k] for r in rows for k in ("text", "target")]
    )
