"""Back-translation: each text to a pivot language and back with TF sequence-to-sequence models (Marian).

The models come from local Hugging Face directories or the hub (`Helsinki-NLP/
opus-mt-en-de` and `Helsinki-NLP/opus-mt-de-en`, for example); without network
access a hub name fails with the command to fetch it elsewhere. Texts are
translated in batches of similar length, with progress output.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from kerasft.config import BackTranslationConfig
from kerasft.errors import ModelError


class BackTranslator:
    """The forward and backward translation models of `data.augment.back_translation`."""

    def __init__(self, cfg: BackTranslationConfig):
        self.cfg = cfg
        self.forward = _load("data.augment.back_translation.forward", cfg.forward)
        self.backward = _load("data.augment.back_translation.backward", cfg.backward)

    def round_trip(self, texts: list[str]) -> list[str]:
        """Every text translated forward and back, in input order."""
        pivot = self.translate(self.forward, texts, "forward")
        return self.translate(self.backward, pivot, "backward")

    def translate(self, models: tuple[Any, Any], texts: list[str], name: str) -> list[str]:
        """`texts` through one model, batched by length; prints progress every ~10 seconds."""
        tokenizer, model = models
        cfg = self.cfg
        order = np.argsort([len(t) for t in texts], kind="stable")
        out: list[str] = [""] * len(texts)
        start = last = time.monotonic()
        for begin in range(0, len(texts), cfg.batch_size):
            rows = order[begin : begin + cfg.batch_size]
            inputs = tokenizer(
                [texts[i] for i in rows],
                return_tensors="tf",
                padding=True,
                truncation=True,
                max_length=cfg.max_length,
            )
            generated = model.generate(
                **inputs,
                max_new_tokens=cfg.max_length,
                num_beams=cfg.num_beams,
                do_sample=cfg.sampling,
                top_k=cfg.top_k if cfg.sampling else None,
            )
            decoded = tokenizer.batch_decode(generated, skip_special_tokens=True)
            for i, text in zip(rows, decoded, strict=True):
                out[i] = text.strip()
            done = min(begin + cfg.batch_size, len(texts))
            if time.monotonic() - last > 10 or done == len(texts):
                last = time.monotonic()
                print(
                    f"back-translation ({name}): {done}/{len(texts)} texts, {last - start:.0f}s",
                    flush=True,
                )
        return out


def _load(key: str, spec: str) -> tuple[Any, Any]:
    """The tokenizer and TF sequence-to-sequence model that `key: spec` names."""
    from transformers import AutoConfig, AutoTokenizer, TFAutoModelForSeq2SeqLM

    from kerasft.models import load_weights, resolve_backbone

    directory = resolve_backbone(spec, key)
    try:
        with warnings.catch_warnings():  # Marian: "Recommended: pip install sacremoses" (optional)
            warnings.filterwarnings("ignore", message=".*sacremoses")
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
        config = AutoConfig.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        raise ModelError(f"`{key}`: {directory}: {str(exc).splitlines()[0]}") from None
    if not getattr(config, "is_encoder_decoder", False):
        raise ModelError(
            f"`{key}`: {directory} holds a `{config.model_type}` model, not a translation "
            "(encoder-decoder) model such as Marian."
        )
    model, info = load_weights(directory, config, TFAutoModelForSeq2SeqLM)
    missing = [k for k in info.get("missing_keys", []) if "final_logits_bias" not in k]
    if missing:
        raise ModelError(
            f"`{key}`: {directory} lacks {len(missing)} weights of its model (e.g. {missing[0]})."
        )
    print(
        f"translation model {config.model_type} from {directory}: {model.count_params():,} parameters"
    )
    return tokenizer, model
