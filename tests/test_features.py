import itertools
import random

import pytest
import torch

from xlt.data import features as F
from xlt.data.squad import Example
from xlt.tokenization import load_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    words = "the cat sat on a mat in moscow with red hats while dogs ran past old towers".split()
    rng = random.Random(0)
    return train_tokenizer([" ".join(rng.choices(words, k=12)) for _ in range(200)], vocab_size=200)


def make_examples(n=20, seed=0):
    rng = random.Random(seed)
    words = "the cat sat on a mat in moscow with red hats while dogs ran past old towers".split()
    out = []
    for i in range(n):
        ctx = ("\ufeff " if i % 3 == 0 else "") + " ".join(rng.choices(words, k=rng.randint(20, 80))) + " "
        j = rng.randint(2, len(ctx) - 10)
        start = ctx.index(" ", j) + 1
        end = ctx.index(" ", start)
        out.append(Example(f"q{i}", "t", ctx, "where is the cat?", ((ctx[start:end], start),), "en"))
    return out


def test_windows_label_the_answer_or_cls(tokenizer):
    examples = make_examples()
    feats = F.build_features(tokenizer, examples, max_seq_length=32, doc_stride=8, train=True)
    assert len(feats) > len(examples)  # long contexts overflow into several windows
    seen = set()
    for i in range(len(feats)):
        ex = examples[feats.example_index[i]]
        s, e = feats.start_positions[i], feats.end_positions[i]
        assert len(feats.input_ids[i]) <= 32
        if s == 0:
            assert e == 0
            continue
        a, b = feats.offsets[i][s][0], feats.offsets[i][e][1]
        assert ex.context[a:b] == ex.answers[0][0]
        seen.add(feats.example_index[i])
    assert seen == set(range(len(examples)))  # every answer is inside at least one window


def test_best_spans_matches_brute_force():
    torch.manual_seed(0)
    B, L, max_len = 5, 17, 4
    s, e = torch.randn(B, L), torch.randn(B, L)
    mask = torch.rand(B, L) > 0.3
    scores, starts, ends = F.best_spans(s, e, mask, max_len)
    for b in range(B):
        valid = [(s[b, i] + e[b, j], i, j) for i, j in itertools.product(range(L), range(L))
                 if mask[b, i] and mask[b, j] and i <= j < i + max_len]
        best = max(valid)
        assert (float(scores[b]), int(starts[b]), int(ends[b])) == pytest.approx((float(best[0]), best[1], best[2]))


def test_decode_recovers_gold_from_oracle_logits(tokenizer):
    examples = make_examples(8, seed=1)
    feats = F.build_features(tokenizer, examples, max_seq_length=40, doc_stride=10, train=True)
    rows = list(range(len(feats)))
    width = max(feats.lengths)
    start, end = torch.zeros(len(rows), width), torch.zeros(len(rows), width)
    for b in rows:  # put the mass on the gold tokens where the window holds the answer
        if feats.start_positions[b]:
            start[b, feats.start_positions[b]] = 10
            end[b, feats.end_positions[b]] = 10
    best = {}
    F.decode(examples, feats, rows, start, end, max_answer_length=30, best=best)
    assert {examples[i].id: t for i, (_, t) in best.items()} == {e.id: e.answers[0][0] for e in examples}


def test_length_grouped_batches_cover_everything_once():
    lengths = [random.Random(i).randint(5, 100) for i in range(1000)]
    batches = F.length_grouped_batches(lengths, 16, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    pad = sum(max(lengths[i] for i in b) * len(b) for b in batches) - sum(lengths)
    assert pad / sum(lengths) < 0.05  # grouping keeps padding small


def test_minilm_tokenizer_windows_on_real_bom_context(minilm_path):
    tok = load_tokenizer(minilm_path)
    ctx = "\ufeff The Normans were in Normandy. "
    ex = [Example("a", "t", ctx, "Who?", (("Normandy", ctx.index("Normandy")),), "en")]
    feats = F.build_features(tok, ex, max_seq_length=64, doc_stride=16)
    s, e = feats.start_positions[0], feats.end_positions[0]
    assert ctx[feats.offsets[0][s][0]:feats.offsets[0][e][1]] == "Normandy"
