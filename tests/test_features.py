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


@pytest.mark.parametrize("L, max_len, ties", [(17, 4, False), (17, 4, True), (6, 30, True), (9, 1, True)])
def test_best_spans_matches_brute_force(L, max_len, ties):
    """Exact over the band; on equal scores the earliest start, then the earliest end (integer
    logits make ties common)."""
    torch.manual_seed(0)
    B = 7
    s, e = torch.randn(B, L), torch.randn(B, L)
    if ties:
        s, e = s.mul(2).round(), e.mul(2).round()
    mask = torch.rand(B, L) > 0.3
    mask[:, 0] = True  # every window has context
    scores, starts, ends = F.best_spans(s, e, mask, max_len)
    for b in range(B):
        valid = [(float(s[b, i] + e[b, j]), -i, -j) for i, j in itertools.product(range(L), range(L))
                 if mask[b, i] and mask[b, j] and i <= j < i + max_len]
        best, i, j = max(valid)
        assert (float(scores[b]), int(starts[b]), int(ends[b])) == (pytest.approx(best), -i, -j)


def decode(examples, feats, logits, *, rule="run_qa", max_answer_length=30, batch_size=3, cls_token_id=None, seed=0):
    """Feed per-window (start, end) logits to a SpanDecoder in shuffled, padded batches."""
    dec = F.SpanDecoder(examples, feats, max_answer_length=max_answer_length, rule=rule, cls_token_id=cls_token_id)
    rows = list(range(len(feats)))
    random.Random(seed).shuffle(rows)  # batch order must not decide anything
    for k in range(0, len(rows), batch_size):
        chunk = rows[k:k + batch_size]
        width = max(feats.lengths[r] for r in chunk) + 2
        start, end = torch.randn(len(chunk), width) * 50, torch.randn(len(chunk), width) * 50  # junk as padding
        for b, r in enumerate(chunk):
            n = feats.lengths[r]
            start[b, :n], end[b, :n] = logits[r]
        dec.add(chunk, start, end)
    return dec.answers()


def test_decode_recovers_gold_from_oracle_logits(tokenizer):
    examples = make_examples(8, seed=1)
    feats = F.build_features(tokenizer, examples, max_seq_length=40, doc_stride=10, train=True)
    logits = []
    for r in range(len(feats)):  # put the mass on the gold tokens where the window holds the answer
        start, end = torch.zeros(feats.lengths[r]), torch.zeros(feats.lengths[r])
        if feats.start_positions[r]:
            start[feats.start_positions[r]] = end[feats.end_positions[r]] = 10
        logits.append((start, end))
    assert decode(examples, feats, logits) == {e.id: e.answers[0][0] for e in examples}


WORDY = ("the drengot count lived in melfi while philaretus kept bitstrings of the normans and the drengot "
         "house ruled melfi until philaretus came").split()


def wordy_examples(n, seed):
    rng = random.Random(seed)
    return [Example(f"w{i}", "t", ("\ufeff " if i % 2 else "") + " ".join(rng.choices(WORDY, k=rng.randint(15, 60))),
                    "who ruled melfi?", (), "en") for i in range(n)]


@pytest.mark.parametrize("seed", range(4))
def test_rules_equal_run_qa_postprocess_and_the_pipeline_on_random_logits(minilm_path, seed):
    """The two rules against the benchmark's references on the same windows and logits: run_qa.py's
    postprocessing (with n_best covering every position, so exact) and the QA pipeline port."""
    from xlt.bench.qa_eval import pipeline_decide, pipeline_windows, run_qa_postprocess

    tok = load_tokenizer(minilm_path)
    examples = wordy_examples(12, seed)
    feats = F.build_features(tok, examples, max_seq_length=40, doc_stride=12, train=False)
    windows = pipeline_windows(tok, examples, max_seq_len=40, doc_stride=12)
    assert [w.ids for w in windows] == feats.input_ids and len(feats) > len(examples)
    g = torch.Generator().manual_seed(seed)
    logits = [(torch.randn(n, generator=g) * 3, torch.randn(n, generator=g) * 3) for n in feats.lengths]
    for w, (s, e) in zip(windows, logits, strict=True):
        w.start, w.end = s.numpy(), e.numpy()
    pipe = pipeline_decide(tok, examples, windows, max_answer_len=6)
    assert decode(examples, feats, logits, rule="pipeline", max_answer_length=6, cls_token_id=tok.cls_token_id,
                  seed=seed) == pipe
    hf = {"example_id": [examples[i].id for i in feats.example_index], "offset_mapping": feats.offsets}
    run_qa = run_qa_postprocess(examples, hf, [s.numpy() for s, _ in logits], [e.numpy() for _, e in logits],
                                n_best=40, max_answer_length=6)
    assert decode(examples, feats, logits, max_answer_length=6, seed=seed) == run_qa
    assert sum(pipe[e.id] != run_qa[e.id] for e in examples) > 0  # the rules do differ


def test_pipeline_rule_widens_to_words_and_merges_equal_answers(minilm_path):
    tok = load_tokenizer(minilm_path)
    ctx = "the count of melfi met Philaretus and the count of melfi met philaretus"
    ex = [Example("a", "t", ctx, "who?", (), "en")]
    feats = F.build_features(tok, ex, max_seq_length=14, doc_stride=8, train=False)
    texts = [[ctx[o[0]:o[1]] for o in offs if o] for offs in feats.offsets]
    last = len(feats) - 1
    assert texts[0][-3:] == ["Phil", "are", "tus"] and texts[-1][-3:] == ["phil", "are", "tus"]

    def peak(r, piece, value):  # logits peaking on the last context token spelled `piece`
        offs = feats.offsets[r]
        j = max(k for k, o in enumerate(offs) if o and ctx[o[0]:o[1]] == piece)
        start, end = torch.zeros(len(offs)), torch.zeros(len(offs))
        start[j] = end[j] = value
        return start, end

    # windows 0 and -1 point at the middle piece of "Philaretus" / "philaretus"; one window in
    # between at "met", more strongly than either but less than both together
    logits = [(torch.zeros(n), torch.zeros(n)) for n in feats.lengths]
    logits[0], logits[-1], logits[5] = peak(0, "are", 6.0), peak(last, "are", 6.0), peak(5, "met", 9.0)
    assert decode(ex, feats, logits)["a"] == "met"
    # widened to the word, merged case-insensitively, the first window's spelling kept
    assert decode(ex, feats, logits, rule="pipeline", cls_token_id=tok.cls_token_id)["a"] == "Philaretus"


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
