"""A seq2seq task that needs no download: dates written out in words → ISO dates.

    .venv/bin/python bench/dates.py --out data/dates [--train 20000] [--seed 0]

Writes `train.jsonl`, `validation.jsonl` and `test.jsonl` (`{"text": "the 3rd of
March, 2021", "target": "2021-03-03"}`, seeded, the three sets disjoint) and
`t5-tiny/`: a T5 config (2 + 2 layers, d_model 128) with a SentencePiece
vocabulary trained on the training texts, for `model.weights: random`
(`configs/dates.yaml` trains it from scratch). No pretrained weights are needed:
the mapping is learnt in a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path

MONTHS = (
    "January February March April May June July August September October November December".split()
)
ONES = "zero one two three four five six seven eight nine".split()


def ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def date_example(rng: random.Random) -> tuple[str, str]:
    """One written-out date and its ISO form, in one of eight styles."""
    year, month, day = rng.randint(1900, 2099), rng.randint(1, 12), rng.randint(1, 28)
    name = MONTHS[month - 1]
    text = rng.choice(
        [
            f"the {ordinal(day)} of {name}, {year}",
            f"{name} {day}, {year}",
            f"{day} {name} {year}",
            f"{name[:3]} {ordinal(day)} {year}",
            f"{day}/{month}/{year}",
            f"{name.lower()} {ordinal(day)}, {year}",
            f"on {name} the {ordinal(day)} in {year}",
            f"{year}, {name} {day}",
        ]
    )
    return text, f"{year}-{month:02d}-{day:02d}"


def write_dates(
    out: Path, train: int = 20000, held_out: int = 500, seed: int = 0
) -> dict[str, Path]:
    """The three JSONL files and the `t5-tiny` backbone directory under `out`."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[tuple[str, str]]] = {}
    for name, n in (("validation", held_out), ("test", held_out), ("train", train)):
        rows = []
        while len(rows) < n:
            text, target = date_example(rng)
            if text not in seen or name == "train":
                seen.add(text)
                rows.append((text, target))
        splits[name] = rows
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, rows in splits.items():
        files[name] = out / f"{name}.jsonl"
        with files[name].open("w", encoding="utf-8") as f:
            for text, target in rows:
                f.write(json.dumps({"text": text, "target": target}) + "\n")
    files["backbone"] = write_tiny_t5(
        out / "t5-tiny", [t for pair in splits["train"] for t in pair]
    )
    return files


def write_tiny_t5(directory: Path, texts: list[str], vocab_size: int = 96, **sizes) -> Path:
    """A T5 config and a SentencePiece vocabulary trained on `texts` (T5's ids: pad 0, eos 1, unk 2)."""
    import sentencepiece as spm
    from transformers import T5Config

    directory.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        split_digits=True,
        character_coverage=1.0,
        minloglevel=2,
    )
    (directory / "spiece.model").write_bytes(model.getvalue())
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
    config = T5Config(
        vocab_size=vocab,
        d_model=sizes.get("d_model", 128),
        d_kv=sizes.get("d_kv", 32),
        d_ff=sizes.get("d_ff", 256),
        num_layers=sizes.get("num_layers", 2),
        num_decoder_layers=sizes.get("num_layers", 2),
        num_heads=sizes.get("num_heads", 4),
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    config.save_pretrained(str(directory))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "T5Tokenizer",
                "extra_ids": 0,
                "legacy": False,
                "model_max_length": 512,
            }
        )
    )
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/dates", help="folder to write (default data/dates)")
    parser.add_argument(
        "--train", type=int, default=20000, help="training examples (default 20000)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = write_dates(Path(args.out), args.train, seed=args.seed)
    for name, path in files.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
