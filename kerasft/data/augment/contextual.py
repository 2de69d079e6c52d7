"""Contextual replacement: words masked and replaced by a masked LM's predictions (Kobayashi, 2018).

The masked LM must have a trained head: the embedded MiniLM has none, so point
`data.augment.contextual_model` at a directory written by `kerasft.pretrain`
(or any Hugging Face masked-LM checkpoint).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from kerasft.data.augment.eda import _WORD, Eda, _core, match_case
from kerasft.errors import ModelError

_CANDIDATES = 20  # the likeliest tokens a replacement is drawn from
_BATCH = 32


class MaskedLmReplacer:
    """Replaces words by samples from a masked LM's predictions for them."""

    def __init__(self, directory: Path | None):
        from kerasft.models.masked_lm import load_masked_lm

        if directory is None:
            raise ModelError("`data.augment.contextual` needs `data.augment.contextual_model`.")
        self.tokenizer, self.model, fresh = load_masked_lm(
            directory, "data.augment.contextual_model"
        )
        if fresh:
            raise ModelError(
                f"`data.augment.contextual_model`: {directory} has no masked-LM head, so its guesses "
                "would be random. Run `python -m kerasft.pretrain` on it and point "
                "`contextual_model` at the directory it writes."
            )
        if self.tokenizer.mask_token is None:
            raise ModelError(f"`data.augment.contextual_model`: {directory} has no mask token.")

    def replace(self, jobs: list, eda: Eda, rate: float, rng: np.random.Generator) -> list:
        """The jobs with a share `rate` of their replaceable words (at least one) replaced."""
        out, start = [], time.monotonic()
        for begin in range(0, len(jobs), _BATCH):
            batch = jobs[begin : begin + _BATCH]
            chosen = []
            for job in batch:
                options = eda.replaceable(job.words, job.tags)
                count = min(len(options), max(1, round(rate * len(job.words))))
                chosen.append(sorted(rng.permutation(options)[:count].tolist()))
            guesses = self._guesses([j.words for j in batch], chosen)
            for job, positions, tops in zip(batch, chosen, guesses, strict=True):
                words = list(job.words)
                for at, (tokens, probs) in zip(
                    positions, tops, strict=False
                ):  # truncation may drop masks
                    pre, core, post = _core(words[at])
                    keep = [k for k, t in enumerate(tokens) if t.lower() != core.lower()]
                    if keep:
                        p = probs[keep] / probs[keep].sum()
                        new = tokens[keep[rng.choice(len(keep), p=p)]]
                        words[at] = pre + match_case(new, core) + post
                out.append(dataclasses.replace(job, words=words))
            if len(jobs) > _BATCH and (begin // _BATCH) % 20 == 19:
                print(
                    f"contextual replacement: {begin + len(batch)}/{len(jobs)} texts, "
                    f"{time.monotonic() - start:.0f}s",
                    flush=True,
                )
        return out

    def _guesses(self, texts: list[list[str]], chosen: list[list[int]]) -> list[list[tuple]]:
        """Per text, per chosen word: the likeliest whole-word tokens and their probabilities."""
        mask = self.tokenizer.mask_token
        masked = []
        for words, positions in zip(texts, chosen, strict=True):
            words = list(words)
            for at in positions:
                pre, _, post = _core(words[at])
                words[at] = f"{pre}{mask}{post}"
            masked.append(" ".join(words))
        inputs = self.tokenizer(
            masked, return_tensors="np", padding=True, truncation=True, max_length=256
        )
        names = [n for n in self.tokenizer.model_input_names if n in inputs]
        logits = self.model({n: inputs[n] for n in names}, training=False).logits.numpy()
        out = []
        for row in range(len(texts)):
            spots = np.flatnonzero(inputs["input_ids"][row] == self.tokenizer.mask_token_id)
            out.append([self._top(logits[row, s]) for s in spots])
        return out

    def _top(self, logits: np.ndarray) -> tuple[list[str], np.ndarray]:
        best = np.argsort(-logits)[: _CANDIDATES * 3]
        tokens, scores = [], []
        for i in best:
            token = self.tokenizer.convert_ids_to_tokens(int(i))
            word = token.lstrip("\u2581\u0120")  # SentencePiece and byte-level BPE word starts
            if token.startswith("##") or not _WORD.fullmatch(word):
                continue
            tokens.append(word)
            scores.append(logits[i])
            if len(tokens) == _CANDIDATES:
                break
        scores = np.exp(np.asarray(scores, dtype=np.float64) - max(scores, default=0.0))
        return tokens, scores / max(scores.sum(), 1e-12)
