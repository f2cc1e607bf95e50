"""Analytical compute for BERT-family encoders, aware of what is frozen (stdlib only, no torch).

What is counted
---------------
Matrix multiplications only, at 2 FLOPs per multiply-add: an (m x k) @ (k x n) product costs
``2*m*n*k`` ("1 multiply-add = 2 FLOPs", the convention of Kaplan et al. 2020, "Scaling Laws for
Neural Language Models", section 2.1 and Table 1, and of Hoffmann et al. 2022, "Training
Compute-Optimal Large Language Models" (Chinchilla), appendix F). Elementwise work (softmax, GELU,
LayerNorm, dropout, residual adds, biases, the loss) is left out of every number here, as in both
papers; ``torch.utils.flop_counter.FlopCounterMode`` leaves it out too, which is what the numbers
are checked against (``xlt.models.flops``; tests/test_flops_measure.py).

With ``T = batch * seq_len`` tokens, hidden size ``h``, FFN size ``f`` and vocabulary ``V``, one
transformer layer's forward pass costs

* Q, K, V and output projections: ``4 * 2*T*h*h``  (Kaplan's ``2N`` per token for these weights),
* attention scores ``Q K^T`` and the weighted sum ``P V``: ``2 * 2*batch*seq_len^2*h``
  (Kaplan's ``2 * n_layer * n_ctx * d_attn`` per token, counted for both products as Chinchilla
  appendix F and Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU
  Clusters using Megatron-LM", section 5.1, do; the number of heads does not change it),
* the FFN: ``2 * 2*T*h*f``.

Heads: extractive QA is ``h -> 2`` span logits on every position; the BERT MLM head is a dense
``h -> h`` transform (``h -> embedding_size`` for ELECTRA), a LayerNorm and a decoder
``h -> V``, on every position, or on ``mlm_positions`` positions in total when the caller
gathers the masked positions first. An embedding lookup costs no matmul FLOPs; when the token
embedding matrix is trainable its gradient scatter-add costs ``T * embedding_size`` (counted,
small; FlopCounterMode does not count it). ELECTRA models with ``embedding_size != hidden_size``
also run an ``embedding_size -> h`` projection.

Training step (forward + backward; the optimizer update is elementwise and not counted)
------------------------------------------------------------------------------------
Rather than fixed "3x / 2x / 1x" factors, every matmul is followed through PyTorch autograd,
which computes, for ``y = x @ W``:

* the gradient wrt ``W`` (same cost as the forward product) iff ``W`` requires grad,
* the gradient wrt ``x`` (same cost again) iff ``x`` requires grad,

and only for products whose output feeds a loss. Consequences, which the 3x/2x/1x rule of thumb
gets slightly wrong:

* a trainable layer whose input does not require grad (the lowest trainable layer when the
  embeddings are frozen) skips grad-input for Q, K and V: it costs ``3x - 6*T*h*h``;
* a frozen layer that gradients pass through costs 2x for its projections and FFN, but 3x for the
  two attention products ``Q K^T`` and ``P V``: both of their operands are activations that
  require grad, so both operand gradients are computed;
* a trainable head on a frozen body costs 2x (weight gradient only), and frozen components below
  every trainable parameter cost 1x (forward only); with nothing trainable a step is a forward;
* the token embedding matrix is trainable together with every layer's input, so the first layer
  above a trainable embedding computes grad-input (with ``--trainable embeddings`` every layer
  costs 2x, attention products 3x);
* a tied MLM decoder (its weight is the token embedding matrix) gets a weight gradient iff the
  embeddings are trainable, whatever ``head`` says.

Which parameters a :class:`Plan` makes trainable
------------------------------------------------
``embeddings`` is the token embedding matrix. The rest of the embedding stage (position and
token-type embeddings, the embedding LayerNorm, ELECTRA's embedding projection) is trainable only
when the embeddings *and* every layer are (full fine-tuning, ``--trainable all``); see
:func:`embedding_extras_trainable`. ``layers[i]`` covers all parameters of layer ``i + 1``.
``head`` covers the output head and every extra head (except a tied decoder weight, above).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from xlt.errors import XltError

__all__ = [
    "EncoderShape",
    "Plan",
    "analytical_for",
    "batch_flops",
    "check_run_shape",
    "device_seconds",
    "embedding_extras_trainable",
    "forward_flops",
    "frontier",
    "mlm_head_tied",
    "plan_for",
    "step_breakdown",
    "time_to_near_max",
    "train_step_flops",
]

# model_type -> family. All are post-LN BERT-shaped encoders with absolute position embeddings.
_BERT_KEYS = {
    "layers": "num_hidden_layers",
    "hidden": "hidden_size",
    "heads": "num_attention_heads",
    "intermediate": "intermediate_size",
    "vocab": "vocab_size",
    "max_positions": "max_position_embeddings",
}
_DISTILBERT_KEYS = {
    "layers": "n_layers",
    "hidden": "dim",
    "heads": "n_heads",
    "intermediate": "hidden_dim",
    "vocab": "vocab_size",
    "max_positions": "max_position_embeddings",
}
_FAMILIES = {
    "bert": _BERT_KEYS,
    "electra": _BERT_KEYS,
    "roberta": _BERT_KEYS,
    "xlm-roberta": _BERT_KEYS,
    "camembert": _BERT_KEYS,
    "distilbert": _DISTILBERT_KEYS,
}
# RoBERTa-style position ids start at pad_token_id + 1, so fewer tokens fit than positions exist.
_PAD_OFFSET_TYPES = {"roberta", "xlm-roberta", "camembert"}

HEAD_KINDS = ("qa", "mlm", "none")


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise XltError(f"{what}: expected a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class EncoderShape:
    """The sizes of a BERT-shaped encoder that decide its matmul FLOPs.

    ``max_positions`` is the longest sequence the model can embed: ``max_position_embeddings``,
    minus ``pad_token_id + 1`` for RoBERTa-type models (514 -> 512). ``embedding_size`` is the
    width of the token embeddings when it differs from ``hidden`` (ELECTRA); ``None`` means
    ``hidden``.
    """

    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    embedding_size: int | None = None
    model_type: str = "bert"

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "intermediate", "vocab", "max_positions"):
            _positive_int(getattr(self, name), f"encoder shape {name}")
        if self.embedding_size is not None:
            _positive_int(self.embedding_size, "encoder shape embedding_size")

    @property
    def emb(self) -> int:
        """Width of the token embeddings (and of ELECTRA's MLM decoder input)."""
        return self.embedding_size if self.embedding_size is not None else self.hidden

    @classmethod
    def from_config(cls, cfg: dict) -> EncoderShape:
        """Read a transformers ``config.json`` dict (BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA,
        DistilBERT; MiniLM checkpoints are ``model_type=bert``). Raises XltError in one line for
        other model types and missing or bad keys."""
        if not isinstance(cfg, dict):
            raise XltError(f"config: expected a dict (a config.json), got {type(cfg).__name__}")
        model_type = cfg.get("model_type")
        if model_type is None:
            raise XltError("config: no model_type key; cannot tell which encoder family it is")
        keys = _FAMILIES.get(model_type)
        if keys is None:
            raise XltError(
                f"config: not an encoder config (model_type={model_type}); "
                f"supported: {', '.join(sorted(_FAMILIES))}"
            )
        missing = [k for k in keys.values() if k not in cfg]
        if missing:
            raise XltError(f"config (model_type={model_type}): missing key(s) {', '.join(missing)}")
        values = {field: _positive_int(cfg[key], f"config {key}") for field, key in keys.items()}
        pos_type = cfg.get("position_embedding_type", "absolute")
        if pos_type not in (None, "absolute"):
            raise XltError(
                f"config (model_type={model_type}): position_embedding_type={pos_type} is not supported "
                "(only absolute position embeddings are counted)"
            )
        if values["hidden"] % values["heads"]:
            raise XltError(
                f"config (model_type={model_type}): hidden size {values['hidden']} is not a multiple "
                f"of the {values['heads']} attention heads"
            )
        embedding_size = None
        if model_type == "electra":
            if "embedding_size" not in cfg:
                raise XltError("config (model_type=electra): missing key embedding_size")
            embedding_size = _positive_int(cfg["embedding_size"], "config embedding_size")
            if embedding_size == values["hidden"]:
                embedding_size = None
        if model_type in _PAD_OFFSET_TYPES:
            pad = cfg.get("pad_token_id", 1)
            pad = 1 if pad is None else pad
            values["max_positions"] -= pad + 1
            if values["max_positions"] < 1:
                raise XltError(
                    f"config (model_type={model_type}): max_position_embeddings "
                    f"{cfg['max_position_embeddings']} leaves no positions after the padding offset"
                )
        return cls(**values, embedding_size=embedding_size, model_type=model_type)


@dataclass(frozen=True)
class Plan:
    """What is trainable, bottom to top (see the module docstring for the exact parameter sets).

    ``layers`` has one flag per transformer layer actually executed (a mini-model runs fewer than
    ``shape.layers``). ``head_kind`` is ``"qa"`` (h -> 2 span logits), ``"mlm"`` (BERT LM head)
    or ``"none"`` (no head, no loss at the top). ``extra_heads`` are further heads, each with
    its own loss, on the output of layer ``i`` (1-based), e.g. MiniJoint's MLM head after layer
    k; they are trainable iff ``head`` is. ``head_tied``: every MLM decoder weight is the token
    embedding matrix.
    """

    embeddings: bool
    layers: tuple[bool, ...]
    head: bool
    head_kind: str = "qa"
    head_tied: bool = False
    extra_heads: tuple[tuple[int, str], ...] = ()

    def __post_init__(self) -> None:
        if self.head_kind not in HEAD_KINDS:
            raise XltError(f"plan head_kind: expected one of {', '.join(HEAD_KINDS)}, got {self.head_kind!r}")
        for item in self.extra_heads:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise XltError(f"plan extra_heads: expected (layer_index, kind) pairs, got {item!r}")
            index, kind = item
            if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= len(self.layers):
                raise XltError(f"plan extra_heads: layer index {index!r} is outside 1..{len(self.layers)}")
            if kind not in ("qa", "mlm"):
                raise XltError(f"plan extra_heads: kind must be qa or mlm, got {kind!r}")

    @property
    def has_loss(self) -> bool:
        """Whether any head (and so any loss) is attached."""
        return self.head_kind != "none" or bool(self.extra_heads)

    @property
    def trainable(self) -> bool:
        """Whether any parameter is trainable (otherwise a training step is a forward pass)."""
        return self.embeddings or any(self.layers) or (self.head and self.has_loss)


def embedding_extras_trainable(plan: Plan) -> bool:
    """Position/token-type embeddings, the embedding LayerNorm and ELECTRA's embedding projection:
    trainable only with the token embeddings and every layer (full fine-tuning)."""
    return plan.embeddings and all(plan.layers)


TRAINABLE_HELP = "all, none, head, embeddings, body, top:N, or parts joined by '+' (e.g. embeddings+head)"


def plan_for(
    trainable: str,
    n_layers: int,
    head_kind: str = "qa",
    head_tied: bool = False,
    extra_heads: tuple[tuple[int, str], ...] = (),
) -> Plan:
    """Parse a ``--trainable`` value for a model running ``n_layers`` layers.

    * ``all``: token embeddings, every layer and the head (full fine-tuning; also the rest of the
      embedding stage, see :func:`embedding_extras_trainable`);
    * ``none``: nothing; a "training step" is a forward pass (evaluation, or cached features);
    * ``head``: only the output head (a probe on a frozen body);
    * ``embeddings``: only the token embedding matrix, body and head frozen (mini-model
      adaptation step 2: learn new-language embeddings);
    * ``body``: every layer and the head, embeddings frozen (step 3: fine-tune on the English
      task with the embeddings frozen, so target embeddings can be swapped in later);
    * ``top:N``: the top N layers and the head (``top:0`` is ``head``; MiniPost's small top is
      ``top:1`` on the k frozen bottom layers plus one new layer);
    * parts joined by ``+`` take the union, e.g. ``embeddings+head``, ``embeddings+top:2``.
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 0:
        raise XltError(f"plan_for: n_layers must be a non-negative integer, got {n_layers!r}")
    if not isinstance(trainable, str) or not trainable.strip():
        raise XltError(f"--trainable: expected {TRAINABLE_HELP}, got {trainable!r}")
    embeddings = False
    head = False
    layers = [False] * n_layers
    parts = [p.strip() for p in trainable.strip().lower().split("+")]
    if "none" in parts and len(parts) > 1:
        raise XltError(f"--trainable {trainable!r}: 'none' cannot be combined with other parts")
    for part in parts:
        if part == "all":
            embeddings, head, layers = True, True, [True] * n_layers
        elif part == "none":
            pass
        elif part == "head":
            head = True
        elif part in ("embeddings", "embedding", "emb"):
            embeddings = True
        elif part == "body":
            head, layers = True, [True] * n_layers
        elif part.startswith("top:"):
            count = part[4:]
            if not count.isdigit():
                raise XltError(f"--trainable {trainable!r}: top:N needs a whole number N >= 0")
            k = int(count)
            if k > n_layers:
                raise XltError(f"--trainable {trainable!r}: the model runs only {n_layers} layers")
            head = True
            for i in range(n_layers - k, n_layers):
                layers[i] = True
        else:
            raise XltError(f"--trainable {trainable!r}: unknown part {part!r}; expected {TRAINABLE_HELP}")
    return Plan(
        embeddings=embeddings,
        layers=tuple(layers),
        head=head,
        head_kind=head_kind,
        head_tied=head_tied,
        extra_heads=tuple(extra_heads),
    )


class _Tally:
    """Accumulates forward, grad-input and grad-weight matmul FLOPs per component."""

    def __init__(self, train: bool) -> None:
        self.train = train
        self.parts: dict[str, float] = {}
        self.forward = 0.0
        self.backward_input = 0.0
        self.backward_weight = 0.0
        self.other = 0.0

    def _add(self, component: str, amount: float) -> None:
        self.parts[component] = self.parts.get(component, 0.0) + amount

    def linear(
        self,
        component: str,
        rows: float,
        d_in: int,
        d_out: int,
        weight_grad: bool,
        input_grad: bool,
        backward: bool,
    ) -> bool:
        """y = x W for ``rows`` rows of x; returns whether y requires grad."""
        cost = 2.0 * rows * d_in * d_out
        bw_in = cost if (self.train and backward and input_grad) else 0.0
        bw_w = cost if (self.train and backward and weight_grad) else 0.0
        self.forward += cost
        self.backward_input += bw_in
        self.backward_weight += bw_w
        self._add(component, cost + bw_in + bw_w)
        return weight_grad or input_grad

    def activation_product(self, component: str, cost: float, operands_grad: bool, backward: bool) -> None:
        """A product of two activations (Q K^T, P V): both operand gradients iff they require grad."""
        bw = 2.0 * cost if (self.train and backward and operands_grad) else 0.0
        self.forward += cost
        self.backward_input += bw
        self._add(component, cost + bw)

    def scatter(self, component: str, cost: float) -> None:
        if self.train:
            self.other += cost
            self._add(component, cost)

    @property
    def total(self) -> float:
        return self.forward + self.backward_input + self.backward_weight + self.other


def _check_counts(batch: int, seq_len: int, mlm_positions: int | None) -> None:
    _positive_int(batch, "batch")
    _positive_int(seq_len, "seq_len")
    if mlm_positions is not None:
        if isinstance(mlm_positions, bool) or not isinstance(mlm_positions, int) or mlm_positions < 0:
            raise XltError(f"mlm_positions: expected a non-negative integer, got {mlm_positions!r}")
        if mlm_positions > batch * seq_len:
            raise XltError(f"mlm_positions: {mlm_positions} exceeds the batch's {batch * seq_len} positions")


def _head(
    tally: _Tally,
    name: str,
    kind: str,
    shape: EncoderShape,
    plan: Plan,
    tokens: int,
    mlm_rows: float,
    input_grad: bool,
) -> None:
    if kind == "qa":
        tally.linear(name, tokens, shape.hidden, 2, plan.head, input_grad, True)
    elif kind == "mlm":
        dense_out = tally.linear(name, mlm_rows, shape.hidden, shape.emb, plan.head, input_grad, True)
        decoder_weight = plan.embeddings if plan.head_tied else plan.head
        tally.linear(name, mlm_rows, shape.emb, shape.vocab, decoder_weight, dense_out, True)


def _tally(
    shape: EncoderShape, batch: int, seq_len: int, plan: Plan, train: bool, mlm_rows: float | None
) -> _Tally:
    """The count; ``mlm_rows`` (None: every position) is already validated and may be fractional."""
    tokens = batch * seq_len
    if mlm_rows is None:
        mlm_rows = tokens
    h, f = shape.hidden, shape.intermediate
    n = len(plan.layers)
    extra_at: dict[int, list[str]] = {}
    for index, kind in plan.extra_heads:
        extra_at.setdefault(index, []).append(kind)
    # The highest layer whose output feeds a loss; layers above it get no backward pass.
    top_loss = n if plan.head_kind != "none" else max(extra_at, default=0)
    tally = _Tally(train)

    # Embedding stage: lookups are free; the trainable matrix's gradient is a scatter-add.
    grad = plan.embeddings  # does the current activation require grad?
    if plan.embeddings and plan.has_loss:
        tally.scatter("embeddings", float(tokens * shape.emb))
    if shape.emb != h:
        grad = tally.linear(
            "embeddings", tokens, shape.emb, h, embedding_extras_trainable(plan), grad, plan.has_loss
        )

    for i, trainable in enumerate(plan.layers, start=1):
        component = f"layer{i}"
        backward = i <= top_loss
        out_grad = trainable or grad
        for _ in range(3):  # Q, K, V
            tally.linear(component, tokens, h, h, trainable, grad, backward)
        attention = 2.0 * batch * seq_len * seq_len * h
        tally.activation_product(component, attention, out_grad, backward)  # Q K^T
        tally.activation_product(component, attention, out_grad, backward)  # P V
        tally.linear(component, tokens, h, h, trainable, out_grad, backward)  # output projection
        tally.linear(component, tokens, h, f, trainable, out_grad, backward)  # FFN in
        tally.linear(component, tokens, f, h, trainable, out_grad, backward)  # FFN out
        grad = out_grad
        for kind in extra_at.get(i, ()):
            _head(tally, f"extra_head{i}", kind, shape, plan, tokens, mlm_rows, grad)

    if plan.head_kind != "none":
        _head(tally, "head", plan.head_kind, shape, plan, tokens, mlm_rows, grad)
    return tally


def forward_flops(
    shape: EncoderShape, batch: int, seq_len: int, plan: Plan, mlm_positions: int | None = None
) -> float:
    """Matmul FLOPs of one forward pass over a batch of ``batch`` sequences of ``seq_len`` tokens."""
    _check_counts(batch, seq_len, mlm_positions)
    return _tally(shape, batch, seq_len, plan, False, mlm_positions).total


def train_step_flops(
    shape: EncoderShape, batch: int, seq_len: int, plan: Plan, mlm_positions: int | None = None
) -> float:
    """Matmul FLOPs of one training step (forward + backward), following autograd (module docstring)."""
    _check_counts(batch, seq_len, mlm_positions)
    return _tally(shape, batch, seq_len, plan, True, mlm_positions).total


def step_breakdown(
    shape: EncoderShape,
    batch: int,
    seq_len: int,
    plan: Plan,
    train: bool = True,
    mlm_positions: int | None = None,
) -> dict:
    """The same count split up: ``forward``, ``backward_input``, ``backward_weight``,
    ``embedding_grad`` (the scatter-add), ``total``, and ``components`` (embeddings, layer1..,
    head, extra_head<i>) with each component's total."""
    _check_counts(batch, seq_len, mlm_positions)
    tally = _tally(shape, batch, seq_len, plan, train, mlm_positions)
    return {
        "forward": tally.forward,
        "backward_input": tally.backward_input,
        "backward_weight": tally.backward_weight,
        "embedding_grad": tally.other,
        "total": tally.total,
        "components": dict(tally.parts),
    }


def batch_flops(
    shape: EncoderShape,
    seq_lens: Sequence[int],
    padded_len: int,
    plan: Plan,
    train: bool = True,
    mlm_positions: int | None = None,
) -> dict:
    """FLOPs of one batch padded to ``padded_len``, and of its real tokens alone.

    ``flops`` is what the padded batch computes; ``flops_real`` what each sequence would cost at
    its own length (sum of per-sequence costs); ``padding_share`` = 1 - real / flops.
    ``mlm_positions`` (masked positions in the whole batch, all real tokens) costs the same in both.
    """
    lens = list(seq_lens)
    if not lens:
        raise XltError("batch_flops: empty batch (no sequence lengths)")
    for n in lens:
        _positive_int(n, "batch_flops sequence length")
        if n > padded_len:
            raise XltError(
                f"batch_flops: a sequence of {n} tokens is longer than the padded length {padded_len}"
            )
    _check_counts(len(lens), padded_len, mlm_positions)
    real_tokens = sum(lens)
    if mlm_positions is not None and mlm_positions > real_tokens:
        raise XltError(f"mlm_positions: {mlm_positions} exceeds the batch's {real_tokens} real tokens")
    flops = _tally(shape, len(lens), padded_len, plan, train, mlm_positions).total
    real = 0.0
    for n in lens:
        # The MLM head is linear in its rows: give each sequence its share of the masked positions.
        rows = None if mlm_positions is None else mlm_positions * n / real_tokens
        real += _tally(shape, 1, n, plan, train, rows).total
    share = 1.0 - real / flops if flops > 0 else 0.0
    return {"flops": flops, "flops_real": real, "padding_share": share}


def check_run_shape(shape: EncoderShape, seq_len: int, batch: int) -> None:
    """Validate --seq-len and --batch against the model (one-line XltError naming the flag)."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise XltError(f"--seq-len: expected a positive integer, got {seq_len!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise XltError(f"--batch: expected a positive integer, got {batch!r}")
    if seq_len > shape.max_positions:
        raise XltError(
            f"--seq-len {seq_len} is longer than the {shape.max_positions} positions the model can embed"
        )


def mlm_head_tied(cfg: dict) -> bool:
    """Whether a masked-LM model built from ``cfg`` ties its decoder to the token embeddings."""
    return bool(cfg.get("tie_word_embeddings", True))


def analytical_for(
    config: dict,
    seq_len: int,
    batch: int,
    trainable: str,
    head_kind: str = "qa",
    mlm_positions: int | None = None,
) -> dict:
    """Analytical FLOPs of one training step for a model built from ``config`` (no torch)."""
    shape = EncoderShape.from_config(config)
    check_run_shape(shape, seq_len, batch)
    tied = head_kind == "mlm" and mlm_head_tied(config)
    plan = plan_for(trainable, shape.layers, head_kind=head_kind, head_tied=tied)
    breakdown = step_breakdown(shape, batch, seq_len, plan, True, mlm_positions)
    forward = forward_flops(shape, batch, seq_len, plan, mlm_positions)
    return {
        "analytical_flops": breakdown["total"],
        "forward_flops": forward,
        "breakdown": breakdown,
        "config": asdict(shape),
        "seq_len": seq_len,
        "batch": batch,
        "trainable": trainable,
        "head_kind": head_kind,
        "head_tied": tied,
        "mlm_positions": mlm_positions,
    }


def time_to_near_max(
    xs: Sequence[float], ys: Sequence[float], tau: float = 0.95
) -> tuple[float, float] | None:
    """The first point ``(x, y)`` (in x order) where ``y >= tau * max(y)``.

    NaN values of y (failed evaluations) are skipped. Returns None for an empty curve and for a
    curve whose maximum is <= 0 (nothing was learned, so there is no "near-maximal" to reach;
    the rule is meant for scores such as F1 and EM, not for losses). ``tau`` must be in (0, 1].
    """
    if len(xs) != len(ys):
        raise XltError(f"time_to_near_max: {len(xs)} x values but {len(ys)} y values")
    if not 0.0 < tau <= 1.0:
        raise XltError(f"time_to_near_max: tau must be in (0, 1], got {tau}")
    points = sorted(
        ((float(x), float(y)) for x, y in zip(xs, ys, strict=True) if not math.isnan(float(y))),
        key=lambda p: p[0],
    )
    if not points:
        return None
    best = max(y for _, y in points)
    if best <= 0:
        return None
    threshold = tau * best
    for x, y in points:
        if y >= threshold:
            return (x, y)
    return None  # unreachable: the maximum itself passes


def frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Upper envelope over compute: points sorted by x, keeping each one whose y exceeds every y
    at smaller or equal x (the best quality reachable for at most that compute). At equal x only
    the highest point can survive; NaN points are skipped."""
    clean = [(float(x), float(y)) for x, y in points if not (math.isnan(float(x)) or math.isnan(float(y)))]
    clean.sort(key=lambda p: (p[0], -p[1]))
    kept: list[tuple[float, float]] = []
    best = -math.inf
    for x, y in clean:
        if y > best:
            kept.append((x, y))
            best = y
    return kept


def device_seconds(wall_seconds: float, n_devices: int) -> float:
    """Wall seconds times accelerators in use (GPU-seconds; a CPU-only run counts 1 device)."""
    if wall_seconds < 0 or math.isnan(wall_seconds):
        raise XltError(f"device_seconds: wall seconds must be >= 0, got {wall_seconds}")
    if isinstance(n_devices, bool) or not isinstance(n_devices, int) or n_devices < 1:
        raise XltError(f"device_seconds: n_devices must be a positive integer, got {n_devices!r}")
    return float(wall_seconds) * n_devices
