"""`data.packing`: a task model trained on packed batches (`data.packing.pack_batch`).

`PackedModel.around(model, backbone)` shares the task model's layers and weights; only its
`train_step` differs. It runs the backbone's own embeddings and encoder over the packed
rows with an attention mask that keeps each text to itself (block diagonal, one block per
text), gives each text its own positions, pools each text's tokens on its own and applies
the task model's head: the same arithmetic as the texts run one per row, without the
padding. Calling it, `evaluate`, `predict`, checkpoints and the export are the task
model's.

Backbones: the BERT family's layout (`embeddings` and `encoder` under the main layer: BERT,
MiniLM, RoBERTa, XLM-R, ELECTRA, CamemBERT). `packing_for` decides whether a run packs
(`data.packing: auto`) and `refusal` names what keeps a run from it.
"""

from __future__ import annotations

from functools import partial

from kerasft._compat import keras, tf
from kerasft.errors import ConfigError

PACKABLE = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
NEG = -10000.0  # what the backbones add to the scores of masked positions


def packing_for(cfg, spec, model_type: str, jit: bool) -> bool:
    """Whether the run trains on packed batches: `data.packing` resolved for this run.

    `auto` packs where it can and otherwise keeps length-sorted batches; `true` where it
    cannot is a `ConfigError` naming why.

    Args:
        model_type: the backbone's (`config.model_type`: `bert`, `roberta`, `bigru`, ...).
        jit: whether the steps compile with XLA.
    """
    setting = cfg.data.packing
    if setting is False:
        return False
    why = refusal(cfg, spec, model_type, jit)
    if why is None:
        return True
    if setting is True:
        raise ConfigError(
            f"`data.packing: true` cannot train {why}; set `data.packing: auto` (packs where "
            "it can) or `false`."
        )
    return False


def refusal(cfg, spec, model_type: str, jit: bool) -> str | None:
    """Why this run cannot train on packed batches, or None when it can."""
    t, m = cfg.training, cfg.model
    for why, applies in (
        ("per-token tasks (token classification, seq2seq)", spec.per_token or spec.generative),
        ("`training.method: contrastive` (it trains on sentence pairs)", t.method != "standard"),
        ("a distillation run", cfg.distill is not None),
        ("`model.prompt_tuning`", m.prompt_tuning is not None),
        ("with XLA (`training.jit_compile`): packed shapes differ every batch", jit),
        (
            f"a {model_type} backbone (packing runs on {', '.join(PACKABLE)})",
            model_type not in PACKABLE,
        ),
    ):
        if applies:
            return why
    return None


class PackedModel(keras.Model):
    """A task model whose `fit` takes packed batches: `(packed features, targets per slot)`."""

    @classmethod
    def around(cls, model: keras.Model, backbone_model, pooling: str) -> PackedModel:
        """A PackedModel sharing `model`'s layers and weights (`backbone_model`: the HF model)."""
        packed = cls(inputs=model.inputs, outputs=model.outputs, name=model.name)
        # A partial, not attributes holding layers: those would add second paths to the same
        # weights in every checkpoint.
        packed.packed_call = partial(_packed_logits, model, backbone_model, pooling)
        packed.packed_loss = keras.metrics.Mean(name="loss")
        return packed

    def train_step(self, data):
        x, y = data
        filled = x["weights"] > 0
        weight = tf.boolean_mask(x["weights"], filled)
        with tf.GradientTape() as tape:
            logits = self.packed_call(x, training=True)
            y_true, y_pred = tf.boolean_mask(y, filled), tf.boolean_mask(logits, filled)
            share, mean = _share_of_mean(self.loss, y_true, y_pred, weight)
            if self.losses:
                share += tf.add_n(self.losses) / tf.distribute.get_strategy().num_replicas_in_sync
        self.optimizer.minimize(share, self.trainable_variables, tape=tape)
        self.packed_loss.update_state(mean)
        self.compiled_metrics.update_state(y_true, y_pred, weight)
        return {
            "loss": self.packed_loss.result(),
            **{m.name: m.result() for m in self.compiled_metrics.metrics},
        }


def _share_of_mean(loss, y_true, y_pred, weight) -> tuple[tf.Tensor, tf.Tensor]:
    """This replica's share of the global batch's mean loss, and that mean (for the logs).

    Replicas hold different numbers of texts (whole rows each), so each divides its
    weighted sum by the global count: the shares' sum, which the replicas' summed
    gradients follow, is the mean over the global batch, as one device computes it.
    Weights scale each text's loss as Keras' class weights do (the mean is over texts).
    """
    if y_pred.shape.rank == 1:  # one number per text: losses reduce the last axis
        y_true, y_pred = y_true[:, None], y_pred[:, None]
    per_text = loss.call(y_true, y_pred) * weight
    context = tf.distribute.get_replica_context()
    total = context.all_reduce("sum", tf.cast(tf.size(weight), tf.float32))
    local = tf.reduce_sum(per_text)
    mean = context.all_reduce("sum", tf.stop_gradient(local)) / total
    return local / total, mean


def _packed_logits(model: keras.Model, backbone_model, pooling: str, x: dict, training: bool):
    """The task model's outputs for every text of a packed batch, `[rows, slots, ...]`."""
    main = getattr(backbone_model, backbone_model.base_model_prefix)
    segments = x["segments"]
    positions = x["positions"]
    if hasattr(main.embeddings, "padding_idx"):
        positions = positions + main.embeddings.padding_idx + 1  # RoBERTa counts from pad + 1
    hidden = main.embeddings(
        input_ids=x["input_ids"],
        position_ids=positions,
        token_type_ids=x.get("token_type_ids"),
        training=training,
    )
    if getattr(main, "embeddings_project", None) is not None:  # ELECTRA's smaller embeddings
        hidden = main.embeddings_project(hidden)
    same = tf.logical_and(
        tf.equal(segments[:, :, None], segments[:, None, :]), segments[:, None, :] > 0
    )
    mask = (1.0 - tf.cast(same, hidden.dtype)) * tf.constant(NEG, hidden.dtype)
    hidden = main.encoder(
        hidden,
        attention_mask=mask[:, None, :, :],
        head_mask=[None] * backbone_model.config.num_hidden_layers,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        past_key_values=None,
        use_cache=False,
        output_attentions=False,
        output_hidden_states=False,
        return_dict=False,
        training=training,
    )[0]
    slots = tf.shape(x["weights"])[1]
    member = tf.one_hot(segments - 1, slots, dtype=tf.float32)  # [rows, width, slots]; pad: 0
    if pooling != "mean":  # each text's first token
        member *= tf.cast(tf.equal(x["positions"], 0), tf.float32)[:, :, None]
    hidden = tf.cast(hidden, tf.float32)
    pooled = tf.einsum("rws,rwh->rsh", member, hidden)
    if pooling == "mean":
        pooled /= tf.maximum(tf.reduce_sum(member, axis=1), 1.0)[:, :, None]
    elif pooling == "pooler":  # the backbone's pooler: its dense layer on the first token
        pooled = main.pooler.dense(pooled)
    names = {layer.name for layer in model.layers}
    if "normalize" in names:
        pooled = model.get_layer("normalize")(pooled)
    pooled = model.get_layer("head_dropout")(pooled, training=training)
    logits = model.get_layer("head")(pooled)
    if "score" in names:  # regression: one number per text
        logits = tf.squeeze(logits, -1)
    return logits
