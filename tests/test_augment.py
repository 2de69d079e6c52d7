"""`data.augment`: EDA operations on WordNet, masked-LM replacement, back-translation, and a run that uses them."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from kerasft.config import BackTranslationConfig, load_config
from kerasft.data.augment.eda import OPERATIONS, Eda
from kerasft.data.augment.wordnet import synonyms
from kerasft.errors import ConfigError, ModelError
from tests.conftest import VOCAB, tiny_bert_config, tiny_run_config, write_tokenizer, write_yaml

TWEET = "@bob This movie was GREAT , 10/10 film ; see http://x.co now #happy"
ALWAYS_KEPT = ["@bob", "10/10", "http://x.co", "#happy", "film"]


def test_wordnet_synonyms_come_from_the_bundled_database_without_the_word_itself():
    assert "film" in synonyms("movie") and "outstanding" in synonyms("great")
    assert "movie" not in synonyms("movies") and "buy" not in synonyms("bought")  # base forms
    assert all(" " not in s for s in synonyms("movie", single_word=True))
    assert synonyms("qwxzzy") == ()


@pytest.mark.parametrize("operation", OPERATIONS)
def test_each_operation_changes_the_text_and_leaves_protected_words_alone(operation):
    eda = Eda({op: 0.3 for op in OPERATIONS}, protected=frozenset({"film"}))
    words = TWEET.split()
    changed = 0
    for seed in range(20):
        new, tags = eda.apply(operation, words, np.random.default_rng(seed))
        assert tags is None and new
        changed += new != words
        for kept in ALWAYS_KEPT:  # numbers, URLs, @mentions, #hashtags, the protected list
            assert new.count(kept) >= 1, (operation, new)
        if operation in ("synonym", "swap"):
            assert len(new) == len(words)
        if operation == "insertion":
            assert len(new) > len(words)
        if operation == "deletion":
            assert len(new) < len(words) or new == words
    assert changed >= 15  # nearly every draw changes something
    assert words == TWEET.split()  # the input is not modified


def test_operations_are_seeded():
    eda = Eda({op: 0.3 for op in OPERATIONS})
    words = TWEET.split()
    for op in OPERATIONS:
        first = eda.apply(op, words, np.random.default_rng(7))
        assert eda.apply(op, words, np.random.default_rng(7)) == first


@pytest.mark.parametrize("operation", OPERATIONS)
def test_token_tags_stay_aligned_and_entities_untouched(operation):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    words = "John Smith bought a big house in New York yesterday".split()
    tags = [1, 2, 0, 0, 0, 0, 0, 3, 4, 0]
    eda = Eda({op: 0.5 for op in OPERATIONS}, outside_tag=0)
    for seed in range(20):
        new, new_tags = eda.apply(operation, words, np.random.default_rng(seed), tags)
        assert len(new) == len(new_tags)
        entities = [(w, names[t]) for w, t in zip(new, new_tags, strict=True) if t]
        assert entities == [
            ("John", "B-PER"),
            ("Smith", "I-PER"),
            ("New", "B-LOC"),
            ("York", "I-LOC"),
        ]
        # Entities stay whole: nothing is inserted between the words of one.
        starts = [i for i, t in enumerate(new_tags) if t in (1, 3)]
        assert all(new_tags[i + 1] in (2, 4) for i in starts)
        assert all(" " not in w for w in new)  # single-word synonyms only


@pytest.mark.slow
def test_a_run_augments_its_training_split_only_and_writes_the_rows(
    tmp_path, tiny_bert_dir, capsys
):
    from kerasft.data.prepared import load_data
    from kerasft.tasks import TASKS
    from kerasft.training.runner import run

    raw = tiny_run_config(
        tmp_path,
        tiny_bert_dir,
        copies=2,
        data={
            "augment": {
                "copies": 2,
                "synonym": 0.3,
                "swap": 0.3,
                "deletion": 0.2,
                "insertion": 0.2,
                "protected": ["plot"],
            }
        },
        training={"epochs": 1},
        export={"enabled": False},
    )
    cfg = load_config(write_yaml(tmp_path / "c.yaml", raw))
    result = run(cfg, verbose=0)
    out = capsys.readouterr().out
    records = [
        json.loads(line)
        for line in (result.run_dir / "augmented.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert f"augmentation: +{len(records)} training rows from 24" in out
    assert 24 < len(records) <= 48  # 2 copies of 24 rows, minus copies equal to their original
    assert {r["operation"] for r in records} == set(OPERATIONS)
    for r in records:
        assert r["text"] != r["original"] and r["label"] in ("pos", "neg")
        assert ("plot" in r["original"].split()) <= ("plot" in r["text"].split())
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["train"]["examples"] == 24 + len(records) == 24 + metrics["train"]["augmented"]
    assert metrics["validation"]["examples"] == 8 and metrics["test"]["examples"] == 8

    # A second load reads the cache and makes the same rows; validation and test are the originals.
    data = load_data(cfg, TASKS["classification"], _tokenizer(cfg))
    assert "augmented rows read from the cache" in capsys.readouterr().out
    assert [dict(r) for r in data.augmented] == records
    assert len(data.splits.train) == 24 + len(records)
    assert len(data.splits.validation) == len(data.splits.test) == 8

    # A cache file cut short (a copy, a disk error) is made again, not a JSONDecodeError.
    (cache,) = (tmp_path / "cache").glob("augment-*.jsonl")
    cache.write_bytes(cache.read_bytes()[:-20])
    data = load_data(cfg, TASKS["classification"], _tokenizer(cfg))
    assert f"cache: {cache} cannot be read" in capsys.readouterr().out
    assert [dict(r) for r in data.augmented] == records


def _tokenizer(cfg):
    from kerasft.models import load_tokenizer, model_directory

    return load_tokenizer(model_directory(cfg.model))


def test_sentence_pairs_are_augmented_on_both_sides(tmp_path, tiny_bert_dir):
    from kerasft.data.augment import augment_training
    from kerasft.data.splits import load_splits
    from kerasft.tasks import TASKS

    rows = "".join(
        f"the movie was {a},the film was {b},{a}\n"
        for a in ("good", "bad")
        for b in ("great", "awful")
    )
    (tmp_path / "p.csv").write_text("a,b,label\n" + rows * 5)
    raw = {
        "name": "pairs",
        "data": {
            "train": str(tmp_path / "p.csv"),
            "text_column": "a",
            "text_pair_column": "b",
            "cache_dir": None,
            "augment": {"copies": 1, "synonym": 0.5},
        },
        "model": {"backbone": str(tiny_bert_dir)},
    }
    cfg = load_config(write_yaml(tmp_path / "c.yaml", raw))
    spec = TASKS["classification"]
    splits = load_splits(cfg.data, 0, spec)
    augmented, records = augment_training(cfg, spec, splits)
    assert len(augmented.train) == len(splits.train) + len(records) == len(augmented.train.pairs)
    assert any(r["text"] != r["original"] for r in records)
    assert any(r["pair"] != r["original_pair"] for r in records)
    assert augmented.validation is splits.validation and augmented.test is splits.test


def test_config_refuses_an_empty_augmentation_and_back_translation_for_tags(tmp_path):
    base = {"name": "x", "data": {"train": "d.csv", "augment": {"copies": 2}}}
    with pytest.raises(ConfigError, match="no operation is enabled"):
        load_config(write_yaml(tmp_path / "a.yaml", base))
    base["task"] = "token_classification"
    base["data"]["augment"] = {"back_translation": {"forward": "a", "backward": "b"}}
    with pytest.raises(ConfigError, match="back_translation` rewrites whole sentences"):
        load_config(write_yaml(tmp_path / "b.yaml", base))


# --- masked-LM replacement -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_masked_lm(tmp_path_factory):
    """A tiny random BERT with a masked-LM head, saved by transformers (tf_model.h5)."""
    from transformers import TFBertForMaskedLM

    from kerasft._compat import keras

    directory = tmp_path_factory.mktemp("tiny-mlm")
    keras.utils.set_random_seed(0)  # Python's generator too: it seeds tf_keras' initializers
    model = TFBertForMaskedLM(tiny_bert_config())
    model(model.dummy_inputs)
    model.save_pretrained(str(directory))
    write_tokenizer(directory)
    return directory


def test_contextual_replacement_puts_whole_vocabulary_words_in_place(tiny_masked_lm):
    from kerasft.data.augment import Job
    from kerasft.data.augment.contextual import MaskedLmReplacer

    replacer = MaskedLmReplacer(tiny_masked_lm)
    eda = Eda({op: 0.0 for op in OPERATIONS})
    jobs = [Job(i, "contextual", "the movie was very good .".split()) for i in range(6)]
    out = replacer.replace(jobs, eda, 0.4, np.random.default_rng(0))
    words = set(VOCAB)
    for job, new in zip(jobs, out, strict=True):
        assert len(new.words) == len(job.words) and new.words != job.words
        assert set(new.words) <= words  # real tokens of the vocabulary, never [MASK] or pieces
        assert "[MASK]" not in new.words and new.words[-1] == "."


def test_contextual_replacement_refuses_a_backbone_without_a_masked_lm_head(tiny_bert_dir):
    from kerasft.data.augment.contextual import MaskedLmReplacer

    with pytest.raises(ModelError, match="has no masked-LM head.*kerasft.pretrain"):
        MaskedLmReplacer(tiny_bert_dir)


# --- back-translation ------------------------------------------------------------------


def _tiny_marian(directory, spm_model, seed):
    """A tiny random Marian translation model with a SentencePiece tokenizer, as the hub ships them."""
    import shutil

    import sentencepiece
    from transformers import MarianConfig, MarianTokenizer, TFMarianMTModel

    from kerasft._compat import keras

    processor = sentencepiece.SentencePieceProcessor(model_file=str(spm_model))
    vocab = {processor.id_to_piece(i): i for i in range(processor.get_piece_size())}
    directory.mkdir()
    (directory / "vocab.json").write_text(json.dumps(vocab))
    for name in ("source.spm", "target.spm"):
        shutil.copy(spm_model, directory / name)
    with warnings.catch_warnings():  # "Recommended: pip install sacremoses": optional
        warnings.simplefilter("ignore", UserWarning)
        tokenizer = MarianTokenizer(
            str(directory / "source.spm"),
            str(directory / "target.spm"),
            str(directory / "vocab.json"),
        )
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"],
        decoder_start_token_id=vocab["<pad>"],
    )
    keras.utils.set_random_seed(seed)  # Python's generator too: it seeds the initializers
    model = TFMarianMTModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def tiny_marians(tmp_path_factory, spm_model):
    root = tmp_path_factory.mktemp("marian")
    return _tiny_marian(root / "en-xx", spm_model, 0), _tiny_marian(root / "xx-en", spm_model, 1)


def test_back_translation_round_trips_every_text_in_order(tiny_marians):
    from kerasft.data.augment.translate import BackTranslator

    forward, backward = tiny_marians
    cfg = BackTranslationConfig(
        forward=str(forward), backward=str(backward), batch_size=3, max_length=12, top_k=20
    )
    translator = BackTranslator(cfg)
    texts = ["a short one", "a much longer sentence about the film and its plot", "hi", "the end"]
    out = translator.round_trip(texts)
    assert len(out) == len(texts) and all(isinstance(t, str) for t in out)
    assert any(out)  # random weights still say something
    beams = BackTranslator(cfg.model_copy(update={"sampling": False, "num_beams": 2}))
    assert beams.round_trip(texts) == beams.round_trip(texts)  # deterministic without sampling


def test_back_translation_from_the_hub_fails_clearly_offline():
    from kerasft.data.augment.translate import BackTranslator

    cfg = BackTranslationConfig(
        forward="Helsinki-NLP/opus-mt-en-de", backward="Helsinki-NLP/opus-mt-de-en"
    )
    with pytest.raises(
        ModelError,
        match=r"`data.augment.back_translation.forward: Helsinki-NLP/opus-mt-en-de`.*"
        r"huggingface-cli download Helsinki-NLP/opus-mt-en-de",
    ):
        BackTranslator(cfg)


def test_back_translation_refuses_an_encoder_only_model(tiny_bert_dir, tiny_marians):
    from kerasft.data.augment.translate import BackTranslator

    cfg = BackTranslationConfig(forward=str(tiny_bert_dir), backward=str(tiny_marians[1]))
    with pytest.raises(ModelError, match="not a translation"):
        BackTranslator(cfg)


def test_masked_lm_and_back_translation_copies_join_the_training_split(
    tmp_path, tiny_bert_dir, tiny_masked_lm, tiny_marians, monkeypatch
):
    from kerasft.data.augment import augment_training
    from kerasft.data.splits import load_splits
    from kerasft.tasks import TASKS

    forward, backward = tiny_marians
    raw = tiny_run_config(
        tmp_path,
        tiny_bert_dir,
        copies=1,
        data={
            "augment": {
                "copies": 3,
                "contextual": 0.4,
                "contextual_model": str(tiny_masked_lm),
                "back_translation": {
                    "forward": str(forward),
                    "backward": str(backward),
                    "max_length": 12,
                },
            }
        },
    )
    cfg = load_config(write_yaml(tmp_path / "c.yaml", raw))
    spec = TASKS["classification"]
    splits = load_splits(cfg.data, 0, spec)
    augmented, records = augment_training(cfg, spec, splits)
    assert {r["operation"] for r in records} == {"contextual", "back_translation"}
    assert len(augmented.train) == len(splits.train) + len(records)
    by_row = {}
    for r in records:
        assert r["label"] == splits.vocab.names[int(splits.train.targets[r["row"]])]
        by_row.setdefault(r["row"], []).append(r["text"])
    assert all(len(set(texts)) == len(texts) for texts in by_row.values())  # no duplicate copies
    # The second time the rows come from the cache, without loading either model.
    from kerasft.data.augment import contextual, translate

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded despite the cache")

    monkeypatch.setattr(contextual.MaskedLmReplacer, "__init__", refuse)
    monkeypatch.setattr(translate.BackTranslator, "__init__", refuse)
    again, cached = augment_training(cfg, spec, splits)
    assert cached == records and again.train.texts == augmented.train.texts


def test_token_classification_copies_keep_their_entities(tmp_path, tiny_bert_dir):
    from kerasft.data.augment import augment_training
    from kerasft.data.splits import load_splits
    from kerasft.tasks import TASKS

    sentences = (
        "great film was good O B-X O O\nthe very boring movie plot was fun O O O B-X I-X O O\n"
    )
    conll = ""
    for line in sentences.splitlines():
        parts = line.split()
        words, tags = parts[: len(parts) // 2], parts[len(parts) // 2 :]
        conll += "".join(f"{w} {t}\n" for w, t in zip(words, tags, strict=True)) + "\n"
    (tmp_path / "ner.conll").write_text(conll * 10)
    raw = {
        "name": "ner",
        "task": "token_classification",
        "data": {
            "train": str(tmp_path / "ner.conll"),
            "cache_dir": None,
            "augment": {
                "copies": 2,
                "synonym": 0.3,
                "insertion": 0.3,
                "swap": 0.3,
                "deletion": 0.3,
            },
        },
        "model": {"backbone": str(tiny_bert_dir)},
    }
    cfg = load_config(write_yaml(tmp_path / "c.yaml", raw))
    spec = TASKS["token_classification"]
    splits = load_splits(cfg.data, 0, spec)
    augmented, records = augment_training(cfg, spec, splits)
    assert records and len(augmented.train) == len(splits.train) + len(records)
    names = splits.vocab.names
    for words, tags in zip(augmented.train.texts, augmented.train.targets, strict=True):
        assert isinstance(words, list) and len(words) == len(tags)
        entities = [(w, names[t]) for w, t in zip(words, tags, strict=True) if names[t] != "O"]
        assert entities in ([("film", "B-X")], [("movie", "B-X"), ("plot", "I-X")])


def test_a_bare_no_in_the_protected_words_gets_a_quoting_hint(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "name: x\ndata:\n  train: d.csv\n  augment:\n    synonym: 0.1\n    protected: [not, no]\n"
    )
    with pytest.raises(ConfigError, match=r"`data.augment.protected`.*quote the words"):
        load_config(tmp_path / "c.yaml")
