"""The `data.augment:` section: EDA rates, masked-LM replacement, back-translation, code-switching,
templates and label rows."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from kerasft.config.base import MAX_BATCH_SIZE, _Section


class BackTranslationConfig(_Section):
    """Paraphrases made by translating each training text to another language and back."""

    forward: str = Field(
        description="Translation model into the pivot language: a local Hugging Face model directory "
        "(Marian or any TF sequence-to-sequence model) or a hub name such as `Helsinki-NLP/opus-mt-en-de` "
        "(needs network access)."
    )
    backward: str = Field(description="Translation model from the pivot language back, same forms.")
    num_beams: int = Field(
        1, ge=1, description="Beam search width; 1 with `sampling` draws varied paraphrases."
    )
    sampling: bool = Field(
        True,
        description="Sample each output token (top-k) instead of taking the likeliest, so copies differ.",
    )
    top_k: int = Field(50, ge=1, description="With sampling: draw from this many likeliest tokens.")
    batch_size: int = Field(16, ge=1, le=MAX_BATCH_SIZE, description="Texts translated at once.")
    max_length: int = Field(
        128, ge=8, description="Longest translation in tokens (longer inputs are truncated)."
    )


class CodeSwitchConfig(_Section):
    """Code-switching (CoSDA-ML): words replaced by their translations from bilingual dictionaries."""

    dictionaries: list[str] = Field(
        min_length=1,
        description="Bilingual dictionaries, one per target language: MUSE-style text files of "
        "`word<TAB>translation` (or one space) lines; a word may have several lines.",
    )
    rate: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="Share of the words with a translation that are replaced; each replaced word "
        "takes a language drawn at random, then one of its translations there.",
    )
    lowercase: bool = Field(
        True, description="Look words up in lower case (MUSE dictionaries are lower case)."
    )


class TemplatesConfig(_Section):
    """Synthetic labelled examples from templates with slots."""

    file: str = Field(
        description="A YAML file: `slots:` (a name -> list of values) and `templates:` (a list of "
        "`{text: 'the {product} was {good}', label: positive}`; `label` may be a list for "
        "multi_label). See docs/augmentation.md."
    )
    per_label: int = Field(
        100,
        ge=1,
        le=100_000,
        description="At most this many distinct examples per label, drawn at random (seeded) from "
        "the templates' fillings.",
    )


class AugmentConfig(_Section):
    """Extra training rows made from the training split (never validation or test)."""

    copies: int = Field(
        1,
        ge=1,
        le=32,
        description="Augmented rows per training example; each is made by one operation drawn at random "
        "from those enabled (as in EDA). A copy identical to its original is dropped.",
    )
    synonym: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of words replaced by a WordNet synonym (EDA SR)."
    )
    insertion: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of the text length of synonyms inserted at random places (EDA RI).",
    )
    swap: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of the text length of random word swaps (EDA RS)."
    )
    deletion: float = Field(
        0.0, ge=0.0, le=1.0, description="Probability that each word is deleted (EDA RD)."
    )
    contextual: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of words replaced by a masked-LM prediction of `contextual_model`.",
    )
    contextual_model: str | None = Field(
        None,
        description="The masked LM of `contextual`: a Hugging Face model directory with a masked-LM head, "
        "e.g. one written by `kerasft.pretrain`. Defaults to `model.backbone`.",
    )
    back_translation: BackTranslationConfig | None = Field(
        None, description="Round-trip translation; see below. null: off."
    )
    code_switch: CodeSwitchConfig | None = Field(
        None,
        description="Code-switching for cross-lingual training of multilingual backbones (one more "
        "operation copies are drawn from); see below. null: off.",
    )
    templates: TemplatesConfig | None = Field(
        None,
        description="Labelled examples generated from templates, added to the training split; see "
        "below. null: off.",
    )
    label_template: str | None = Field(
        None,
        description="One more training row per label: this text with `{label}` replaced by the "
        "label's name, e.g. `this sentence is {label}` (SetFit's templated examples). With a few "
        "labels per class it ties each class to what its name means, most with `training.method: "
        "contrastive` (docs/training.md). null: off.",
    )
    label_names: dict[str, str] | None = Field(
        None,
        description="What `{label}` of `label_template` reads for each label, e.g. `{0: negative, 1: "
        "positive}` where the labels are codes. Labels not listed read as themselves.",
    )
    protected: list[str] = Field(
        [],
        description="Words never changed, moved or deleted (case-insensitive). Numbers, URLs, e-mail "
        "addresses, @mentions and #hashtags are always protected.",
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**32 - 1,
        description="Seed of the augmentation. Defaults to `training.seed`.",
    )

    @field_validator("protected", mode="before")
    @classmethod
    def _words_not_booleans(cls, value: Any) -> Any:
        if isinstance(value, list) and any(isinstance(v, bool) for v in value):
            raise ValueError(
                "YAML reads a bare no, yes, on or off as true/false; quote the words, "
                'e.g. protected: ["not", "no"]'
            )
        return value

    @field_validator("label_names", mode="before")
    @classmethod
    def _names_as_strings(cls, value: Any) -> Any:
        """YAML reads `{0: negative}` with an integer key; labels are compared as strings."""
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value

    @field_validator("label_template")
    @classmethod
    def _one_label_slot(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if "{label}" not in value:
            raise ValueError(
                f"{value!r} has no `{{label}}`; write where the label's name goes, e.g. "
                "'this sentence is {label}'"
            )
        if any(c in value.replace("{label}", "") for c in "{}"):
            raise ValueError(f"{value!r}: the only slot is `{{label}}`; drop the other braces")
        return value

    @model_validator(mode="after")
    def _something_enabled(self) -> AugmentConfig:
        if self.label_names is not None and self.label_template is None:
            raise ValueError(
                "`label_names` names the labels for `label_template`, which is not set; set "
                "it (e.g. 'this sentence is {label}') or drop `label_names`"
            )
        if not self.operations() and self.templates is None and self.label_template is None:
            raise ValueError(
                "no operation is enabled: set a rate above 0 for synonym, insertion, swap, deletion "
                "or contextual, or give back_translation, code_switch, templates or label_template"
            )
        return self

    def operations(self) -> tuple[str, ...]:
        """The enabled operations, in a fixed order."""
        rates = {
            n: getattr(self, n) for n in ("synonym", "insertion", "swap", "deletion", "contextual")
        }
        enabled = tuple(n for n, rate in rates.items() if rate > 0)
        enabled += ("code_switch",) if self.code_switch else ()
        return enabled + (("back_translation",) if self.back_translation else ())
