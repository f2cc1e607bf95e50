"""Raw text -> masked-LM batches: read lines, tokenize, pack, mask (80/10/10), deterministic per seed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from xlt.errors import XltError


def read_lines(paths: Sequence[str | Path]) -> list[str]:
    lines: list[str] = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise XltError(f"{p}: text file not found")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise XltError(f"{p}: not UTF-8 (byte {e.start})") from None
        lines += [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise XltError(f"{', '.join(map(str, paths)) or 'text'}: no non-empty lines to train on")
    return lines


def pack(tokenizer, lines: Sequence[str], max_len: int) -> torch.Tensor:
    """Concatenate tokenized lines and cut them into rows of `max_len` ([CLS] ... [SEP]) with no
    padding, so every position is a real token. Lines longer than a row are split."""
    ids = tokenizer(list(lines), add_special_tokens=False)["input_ids"]
    body = max_len - 2
    stream: list[int] = []
    for seq in ids:
        stream += seq + [tokenizer.sep_token_id]
    n_rows = len(stream) // body
    if n_rows == 0:
        raise XltError(f"text too short: {len(stream)} tokens, need at least {body} for one sequence")
    rows = torch.tensor(stream[: n_rows * body]).view(n_rows, body)
    cls = torch.full((n_rows, 1), tokenizer.cls_token_id)
    sep = torch.full((n_rows, 1), tokenizer.sep_token_id)
    return torch.cat([cls, rows, sep], dim=1)  # (n_rows, max_len)


def mask_tokens(ids: torch.Tensor, *, mask_id: int, vocab_size: int, special_ids: Sequence[int],
                probability: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: choose `probability` of the non-special positions; of those 80% -> [MASK],
    10% -> a random token, 10% unchanged. Labels are -100 where nothing is predicted."""
    labels = ids.clone()
    special = torch.isin(ids, torch.tensor(list(special_ids)))
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & ~special
    labels[~chosen] = -100
    inputs = ids.clone()
    action = torch.rand(ids.shape, generator=generator)
    inputs[chosen & (action < 0.8)] = mask_id
    rand = chosen & (action >= 0.8) & (action < 0.9)
    inputs[rand] = torch.randint(vocab_size, ids.shape, generator=generator)[rand]
    return inputs, labels


def mlm_batches(rows: torch.Tensor, tokenizer, *, batch_size: int, probability: float,
                seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled epochs of masked batches; the same seed gives the same stream."""
    g = torch.Generator().manual_seed(seed)
    special = tokenizer.all_special_ids
    while True:
        order = torch.randperm(len(rows), generator=g)
        for i in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
            ids = rows[order[i:i + batch_size]]
            inputs, labels = mask_tokens(ids, mask_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
                                         special_ids=special, probability=probability, generator=g)
            yield {"input_ids": inputs, "attention_mask": torch.ones_like(ids), "labels": labels}


def hold_out(lines: Sequence[str], n: int, seed: int) -> tuple[list[str], list[str]]:
    """(lines to train on, `n` held-out lines): a seeded choice, so every trial of a study holds
    out the same lines (at most a tenth of them)."""
    n = min(n, len(lines) // 10)
    order = torch.randperm(len(lines), generator=torch.Generator().manual_seed(seed)).tolist()
    out = set(order[:n])
    return [ln for i, ln in enumerate(lines) if i not in out], [lines[i] for i in sorted(out)]


def fixed_masked(rows: torch.Tensor, tokenizer, *, batch_size: int, probability: float,
                 seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """One pass over `rows`, masked once with a fixed seed: the same held-out positions at every
    evaluation, so two scores differ only by the model."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(rows), batch_size):
        ids = rows[i:i + batch_size]
        inputs, labels = mask_tokens(ids, mask_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
                                     special_ids=tokenizer.all_special_ids, probability=probability, generator=g)
        out.append({"input_ids": inputs, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out
