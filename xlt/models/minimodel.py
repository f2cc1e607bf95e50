"""Model surgery for mini-model adaptation (Marchisio et al., 2023).

An encoder body (a transformers base model: BERT, RoBERTa/XLM-R, ELECTRA, DistilBERT) plus
masked-LM heads at chosen depths. A mini-model is *not* a copy: it is a k-layer body whose
embeddings module and layers are the primary model's own modules, so training its
embeddings trains the primary's, and its layers are the primary's bottom k by identity.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from xlt import derived
from xlt.errors import XltError

# a transformers base model: its config, embeddings and layers are attributes nn.Module's types cannot see
Encoder = Any


def layer_list(body: Encoder) -> nn.ModuleList:
    """The transformer layers of a base model, wherever its family keeps them."""
    layers = derived.find_layers(body, lambda node: isinstance(node, nn.ModuleList))
    if layers is not None:
        return layers
    raise XltError(f"model type {body.config.model_type}: cannot find its transformer layers (not BERT-like)")


def set_layer_list(body: Encoder, layers: list[nn.Module]) -> None:
    parent = body.encoder if hasattr(body, "encoder") else body.transformer
    attr = "layer" if hasattr(parent, "layer") else "layers"
    setattr(parent, attr, nn.ModuleList(layers))
    n = len(layers)
    body.config.num_hidden_layers = n
    if hasattr(body.config, "n_layers"):
        body.config.n_layers = n


def token_embedding(body: Encoder) -> nn.Embedding:
    return body.get_input_embeddings()


def set_token_embedding(body: Encoder, weight: torch.Tensor) -> nn.Embedding:
    emb = nn.Embedding(weight.shape[0], weight.shape[1], padding_idx=None)
    emb.weight = nn.Parameter(weight)
    body.set_input_embeddings(emb)
    body.config.vocab_size = weight.shape[0]
    return emb


class MLMHead(nn.Module):
    """BERT's LM head: dense + GELU + LayerNorm, then a decoder tied to the token embeddings
    (passed in at call time, so swapping the vocabulary never leaves a stale copy)."""

    def __init__(self, hidden: int, vocab: int, eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(F.gelu(self.dense(h))), embedding, self.bias)


class MaskedLM(nn.Module):
    """A body with MLM heads after some of its layers: heads[str(i)] reads the output of layer i
    (1-based). Loss = the sum of the heads' losses, each computed on masked positions only."""

    def __init__(self, body: Encoder, heads: Mapping[int, nn.Module]):
        super().__init__()
        self.body = body
        self.heads = nn.ModuleDict({str(i): h for i, h in heads.items()})

    def forward(self, input_ids, attention_mask, labels, token_type_ids=None) -> torch.Tensor:
        loss = torch.zeros((), device=input_ids.device)
        for logits, target in self.head_logits(input_ids, attention_mask, labels).values():
            loss = loss + F.cross_entropy(logits, target)
        return loss

    def head_logits(self, input_ids, attention_mask, labels) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per head: (logits (M, V), targets (M,)) at the M masked positions (labels != -100)."""
        top = len(layer_list(self.body))
        need_all = any(int(i) != top for i in self.heads)
        out = self.body(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=need_all)
        masked = labels != -100  # (B, S)
        target = labels[masked]  # (M,)
        emb = token_embedding(self.body).weight
        logits = {}
        for i, head in self.heads.items():
            h = out.hidden_states[int(i)] if int(i) != top else out.last_hidden_state  # (B, S, H)
            logits[i] = (head(h[masked], emb), target)  # head on M positions only
        return logits


@torch.no_grad()
def mlm_score(model: MaskedLM, batches) -> dict[str, float]:
    """Masked-LM loss (mean cross-entropy per masked token) and top-1 accuracy of a one-head
    model over `batches`: how well step 1 and step 2 learned, on text neither trained on."""
    was_training = model.training
    model.eval()
    loss, correct, n = 0.0, 0, 0
    device = token_embedding(model.body).weight.device
    for b in batches:
        (logits, target), = model.head_logits(b["input_ids"].to(device), b["attention_mask"].to(device),
                                              b["labels"].to(device)).values()
        loss += float(F.cross_entropy(logits.float(), target, reduction="sum"))
        correct += int((logits.argmax(-1) == target).sum())
        n += len(target)
    model.train(was_training)
    return {"mlm_loss": loss / max(n, 1), "mlm_accuracy": 100.0 * correct / max(n, 1)}


def new_head(config) -> MLMHead:
    eps = getattr(config, "layer_norm_eps", 1e-12)
    head = MLMHead(config.hidden_size, config.vocab_size, eps)
    std = getattr(config, "initializer_range", 0.02)
    nn.init.normal_(head.dense.weight, std=std)
    nn.init.zeros_(head.dense.bias)
    return head


def pretrained_head(state: dict[str, torch.Tensor], config) -> MLMHead | None:
    """The checkpoint's own MLM head, if it has one (a sentence encoder like MiniLM does not)."""
    if not derived.has_mlm_head(state, config.model_type):
        return None
    keys = derived.MLM_HEAD_KEYS[config.model_type]
    head = new_head(config)
    dense, norm, bias = keys
    head.load_state_dict({"dense.weight": state[f"{dense}.weight"], "dense.bias": state[f"{dense}.bias"],
                          "norm.weight": state[f"{norm}.weight"], "norm.bias": state[f"{norm}.bias"],
                          "bias": state[bias]})
    return head


def mini_body(primary: Encoder, k: int, extra_layers: Sequence[Any] = ()) -> Encoder:
    """A body of the primary's embeddings and bottom k layers (the same modules, not copies),
    plus optional extra layers on top (MiniPost's new layer)."""
    from transformers import AutoModel

    layers = layer_list(primary)
    if not 1 <= k < len(layers):
        raise XltError(f"adapt.depth: must be between 1 and {len(layers) - 1} for a {len(layers)}-layer model, got {k}")
    cfg = copy.deepcopy(primary.config)
    cfg.num_hidden_layers = k + len(extra_layers)
    body = AutoModel.from_config(cfg)  # a shell: its own embeddings and layers are replaced below
    body.embeddings = primary.embeddings
    set_layer_list(body, [*layers[:k], *extra_layers])
    return body


def without_pooler(body: Encoder) -> Encoder:
    """Drop the [CLS] pooler (BERT, RoBERTa): neither MLM nor QA reads it, and under DDP a
    trainable parameter that gets no gradient is an error."""
    if getattr(body, "pooler", None) is not None:
        body.pooler = None
    return body


def freeze(module: nn.Module, trainable: bool = False) -> None:
    for p in module.parameters():
        p.requires_grad_(trainable)
