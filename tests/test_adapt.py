"""Invariants of mini-model adaptation, on tiny models (seconds)."""

import json

import pytest
import torch

from xlt import compute
from xlt.data import mlm
from xlt.errors import XltError
from xlt.models.load import tiny_config
from xlt.models.minimodel import MaskedLM, freeze, layer_list, mini_body, new_head, set_token_embedding
from xlt.tokenization import train_tokenizer
from xlt.train.adapt import Step1, init_embeddings, qa_from_body, step2_model
from xlt.train.loop import Meter


def tiny_body(layers=4, vocab=300, model_type="bert"):
    from transformers import AutoConfig, AutoModel

    if model_type == "bert":
        cfg = tiny_config(vocab_size=vocab, layers=layers, hidden=32, heads=2, intermediate=64, max_positions=64)
    else:
        cfg = AutoConfig.for_model(model_type, vocab_size=vocab, num_hidden_layers=layers, hidden_size=32,
                                   num_attention_heads=2, intermediate_size=64, max_position_embeddings=66)
    torch.manual_seed(0)
    return AutoModel.from_config(cfg)


@pytest.fixture(scope="module")
def tok():
    from xlt.data.synthetic import make_text

    return train_tokenizer(make_text("ru", 300, 0), vocab_size=300)


@pytest.mark.parametrize("model_type", ["bert", "roberta", "xlm-roberta"])
def test_mini_model_is_the_primary_bottom_k(model_type):
    primary = tiny_body(model_type=model_type)
    mini = mini_body(primary, 2)
    assert len(layer_list(mini)) == 2
    for a, b in zip(layer_list(mini), layer_list(primary)[:2], strict=True):
        assert a is b  # the same modules, not copies
    assert mini.embeddings is primary.embeddings
    ids = torch.randint(5, 300, (2, 10))
    primary.eval(), mini.eval()
    out = mini(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    ref = primary(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states[2]
    assert torch.allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("k", [0, 4, 7])
def test_bad_depth(k):
    with pytest.raises(XltError, match="adapt.depth: must be between 1 and 3"):
        mini_body(tiny_body(), k)


def test_layers_not_found():
    with pytest.raises(XltError, match="cannot find its transformer layers"):
        layer_list(_odd_model())


def _odd_model():
    m = torch.nn.Module()
    m.config = type("C", (), {"model_type": "gpt-odd"})()
    return m


@pytest.mark.parametrize("method", ["base_large", "mini_joint", "mini_post", "base_small"])
def test_step2_changes_only_the_embeddings(method, tok):
    k = 2
    body = tiny_body()
    heads = torch.nn.ModuleDict({"top": new_head(body.config), "k": new_head(body.config), "post": new_head(body.config)})
    post = layer_list(tiny_body())[0] if method == "mini_post" else None
    s1 = Step1(mini_body(body, k) if method == "base_small" else body, heads, post)
    primary_before = {n: p.detach().clone() for n, p in s1.bundle().named_parameters()}
    weight = init_embeddings(tok, tok, torch.zeros(10, 32), "random", 0.02, seed=0)
    emb = set_token_embedding(s1.body, weight)
    model = step2_model(s1, method, k)
    freeze(model)
    freeze(emb, True)
    rows = mlm.pack(tok, ["один два три четыре пять шесть семь"] * 40, 16)
    batches = mlm.mlm_batches(rows, tok, batch_size=8, probability=0.3, seed=0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    start = emb.weight.detach().clone()
    model.train()
    for _ in range(3):
        b = next(batches)
        loss = model(b["input_ids"], b["attention_mask"], b["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert not torch.equal(emb.weight, start)  # the embeddings learned
    for name, p in s1.bundle().named_parameters():
        if "word_embeddings" in name or name.endswith(".bias") and name.startswith("heads."):
            continue
        assert torch.equal(p, primary_before[name]), name  # every other tensor bit-identical


def test_swap_puts_step2_embeddings_into_the_qa_model(tok):
    body = tiny_body()
    qa = qa_from_body(body)
    freeze(qa.base_model.embeddings)
    emb = set_token_embedding(body, init_embeddings(tok, tok, torch.zeros(1, 32), "random", 0.02, 0))
    qa.base_model.set_input_embeddings(emb)
    assert qa.get_input_embeddings().weight is body.get_input_embeddings().weight
    for name in ("position_embeddings", "LayerNorm"):
        a = getattr(qa.base_model.embeddings, name).weight
        assert torch.equal(a, getattr(body.embeddings, name).weight)


def test_copy_shared_init_copies_only_shared_tokens(tok):
    src = train_tokenizer(["один два три", "one two three"] * 50, vocab_size=120)
    source_weight = torch.randn(len(src), 8)
    w = init_embeddings(src, tok, source_weight, "copy_shared", 0.02, 0)
    shared = set(src.get_vocab()) & set(tok.get_vocab())
    assert "[CLS]" in shared and len(shared) > 5
    for t in shared:
        assert torch.equal(w[tok.get_vocab()[t]], source_weight[src.get_vocab()[t]])


def _wordpiece(tokens: list[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def test_source_pieces_init_averages_the_source_pieces_of_new_tokens():
    """Fast Vocabulary Transfer: a token the source vocabulary lacks starts as the mean of the rows
    of the source pieces its text splits into (inside a word, as continuations); shared tokens are
    copied as with copy_shared; a token of [UNK] pieces only stays random."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    src = _wordpiece(specials + ["abc", "##abd", "x", "##x", "##y"])
    tgt = _wordpiece(specials + ["abcabd", "##abd", "##xy", "zz"])
    weight = torch.arange(10 * 3, dtype=torch.float32).reshape(10, 3)
    w = init_embeddings(src, tgt, weight, "source_pieces", 0.02, 0)
    rand = init_embeddings(src, tgt, weight, "random", 0.02, 0)
    row = src.get_vocab()
    assert torch.equal(w[5], (weight[row["abc"]] + weight[row["##abd"]]) / 2)  # abcabd = abc + ##abd
    assert torch.equal(w[6], weight[row["##abd"]])  # shared
    assert torch.equal(w[7], (weight[row["##x"]] + weight[row["##y"]]) / 2)  # ##xy: ##x + ##y, not x + ##y
    assert torch.equal(w[8], rand[8])  # zz: no source piece but [UNK]
    assert torch.equal(w[:5], weight[:5])  # special tokens copied


def test_step2_flops_shrink_with_depth():
    """Same step-2 tokens: analytical FLOPs and measured time grow with the layers step 2 runs.
    Time is the minimum over interleaved repeats after a warm-up, so a busy machine does not
    decide it; ratios are timed by `xlt bench`, not here."""
    import time

    body = tiny_body(layers=6, vocab=2000)
    head = new_head(body.config)
    ids = torch.randint(5, 2000, (16, 64))
    labels = torch.where(torch.rand(16, 64) < 0.15, ids, torch.full_like(ids, -100))
    models, flops = {}, {}
    for k in (1, 3, 6):
        m = MaskedLM(mini_body(body, k) if k < 6 else body, {k: head})
        freeze(m)
        freeze(m.body.get_input_embeddings(), True)
        models[k] = m
        plan = compute.Plan(embeddings=True, layers=(False,) * k, head=False, head_kind="mlm", head_tied=True)
        shape = compute.EncoderShape.from_config(m.body.config.to_dict())
        flops[k] = compute.train_step_flops(shape, 16, 64, plan, mlm_positions=int((labels != -100).sum()))
    seconds = {k: float("inf") for k in models}
    for rep in range(7):
        for k, m in models.items():
            t0 = time.perf_counter()
            m(ids, torch.ones_like(ids), labels).backward()
            if rep:  # the first round warms up allocators and kernels
                seconds[k] = min(seconds[k], time.perf_counter() - t0)
    assert flops[1] < flops[3] < flops[6]
    assert seconds[1] < seconds[6]  # the measured ratio vs the analytical one is `xlt bench --parts adapt`


def test_meter_is_monotone():
    m = Meter()
    m.add_train("s", {"flops": 5.0, "flops_real": 4.0}, 10, 12, 2)
    a = m.snapshot("s")
    m.add_train("s", {"flops": 5.0, "flops_real": 5.0}, 10, 10, 2)
    b = m.snapshot("s")
    assert b["flops_train"] > a["flops_train"] and b["tokens_real"] > a["tokens_real"]
    assert b["wall_seconds"] >= a["wall_seconds"]
    assert b["padding_share"] == pytest.approx(1 - 9 / 10)


TINY_ADAPT = """
name: tiny-adapt
task: adapt
model: {tiny: {layers: 2, hidden: 32, heads: 2, intermediate: 64, vocab_size: 400, max_positions: 128}}
data:
  english: {lang: en, synthetic: {n: 80}}
  eval:
    - {name: en-dev, lang: en, synthetic: {n: 20, split: dev}}
    - {name: ru-dev, lang: ru, synthetic: {n: 20, split: dev}}
train: {max_steps: 4, batch_size: 16, lr: 1.0e-3, max_seq_length: 128, doc_stride: 32}
adapt:
  method: mini_joint
  depth: 1
  target_lang: ru
  synthetic_lines: 200
  vocab_size: 300
  step1: {steps: 3, batch_size: 8, max_seq_length: 32}
  step2: {steps: 4, batch_size: 8, max_seq_length: 32}
  eval_every: 2
"""


@pytest.mark.parametrize("method", ["base_large", "mini_post"])
def test_pipeline_step3_keeps_token_embeddings_and_step2_curve(tmp_path, method):
    from safetensors.torch import load_file

    from tests.helpers import run_cli
    from xlt import results

    study = tmp_path / "a.yaml"
    study.write_text(TINY_ADAPT, encoding="utf-8")
    code, _, err = run_cli("trial", str(study), "--out", str(tmp_path / "run"), f"adapt.method={method}")
    assert code == 0, err
    step1 = load_file(next((tmp_path / "run/artifacts/step1").glob("*/model.safetensors")))
    step3 = load_file(next((tmp_path / "run/artifacts/step3").glob("*/model.safetensors")))
    emb1 = next(v for k, v in step1.items() if k.endswith("word_embeddings.weight"))
    emb3 = next(v for k, v in step3.items() if k.endswith("word_embeddings.weight"))
    assert torch.equal(emb1, emb3)  # step 3 left the token embeddings as step 1 made them
    df = results.read_table(tmp_path / "run")
    curve = df[df.stage == "step2"].sort_values("step")
    assert list(curve.step) == [0, 2, 4] and (curve.method == method).all()
    assert curve.flops_stage.is_monotonic_increasing and curve.flops_train.is_monotonic_increasing
    assert df[df.is_final].eval_set.tolist() == ["ru-dev"]
    # each step measured on its own: held-out masked LM on the target text at every step-2
    # evaluation, step 1's on English (one value: measured before the swap), and the English QA
    # model on the target set with its own vocabulary
    assert curve.mlm_loss.gt(0).all() and curve.mlm_accuracy.between(0, 100).all()
    assert curve.mlm_loss.nunique() > 1  # step 2 changes what the held-out text scores
    assert curve.source_mlm_loss.gt(0).all() and curve.source_mlm_accuracy.nunique() == 1
    base = df[df.stage == "source_vocab"]
    assert base.eval_set.tolist() == ["ru-dev"] and base.step.tolist() == [0] and base.mlm_loss.isna().all()
    # a second trial with the same step-1/step-3 inputs reuses the artifacts instead of recomputing
    step3_dir = tmp_path / "run/artifacts/step3"
    before = step3_dir.stat().st_mtime_ns  # a trial that trains step 3 writes (or races to write) an entry here
    code, _, err = run_cli("trial", str(study), "--out", str(tmp_path / "run2"), f"adapt.method={method}",
                           f"cache_dir={tmp_path / 'run/artifacts'}", "adapt.step2.lr=0.01")
    assert code == 0, err
    again = results.read_table(tmp_path / "run2")
    assert step3_dir.stat().st_mtime_ns == before  # step 3 came from the cache, not trained again ...
    # ... with the English curve it drew, as this trial's rows
    cols = ["event", "step", "eval_set", "f1", "exact_match", "flops_train"]
    first3, again3 = (d[d.stage == "step3"].sort_values(["event", "eval_set"]) for d in (df, again))
    assert len(first3) > 0 and first3[cols].reset_index(drop=True).equals(again3[cols].reset_index(drop=True))
    assert set(again3.trial_id) == set(again.trial_id) and set(again3.run_id) == set(again.run_id)
    assert again.flops_train.max() > 0


def test_base_large_and_mini_post_at_every_depth_share_one_primary_and_one_step3(tmp_path):
    """MiniPost's English phase is BaseLarge's: one primary and one step 3 serve both methods at
    every depth, and each trial is still charged the compute it used (its own step 1 included)."""
    from tests.helpers import run_cli
    from xlt import results

    study = tmp_path / "a.yaml"
    study.write_text(TINY_ADAPT, encoding="utf-8")
    cache = tmp_path / "cache"
    tables, errs = {}, {}
    for name, over in (("post1", ["adapt.method=mini_post", "adapt.depth=1"]), ("large", ["adapt.method=base_large"]),
                       ("post2", ["adapt.method=mini_post", "adapt.depth=2"])):
        code, _, err = run_cli("trial", str(study), "--out", str(tmp_path / name), f"cache_dir={cache}",
                               "model.tiny.layers=3", *over)
        assert code == 0, err
        tables[name], errs[name] = results.read_table(tmp_path / name), err
    assert "xlt: step3:" in errs["post1"] and "xlt: step3:" not in errs["large"] + errs["post2"]
    assert len(list((cache / "step1").iterdir())) == 3  # BaseLarge's primary, and a post layer per depth
    assert len(list((cache / "step3").iterdir())) == 1
    step3 = {n: t[t.stage == "step3"].sort_values(["event", "eval_set"]).reset_index(drop=True) for n, t in tables.items()}
    assert step3["post1"].f1.tolist() == step3["large"].f1.tolist() == step3["post2"].f1.tolist()
    # the same step-3 compute on top of each trial's own step 1: MiniPost's adds its post layer
    first = {n: s.flops_train - s.flops_stage for n, s in step3.items()}
    assert (first["post1"] > first["large"]).all() and (first["post2"] > first["post1"]).all()
    assert step3["large"].flops_stage.tolist() == step3["post1"].flops_stage.tolist()


def test_mlm_score_is_the_training_loss_and_top1_accuracy(tok):
    """mlm_score's loss is the mean masked cross-entropy the training loss computes, on a fixed
    masking (the same positions every call), and its accuracy counts argmax hits."""
    from xlt.data.synthetic import make_text
    from xlt.models.minimodel import mlm_score

    body = tiny_body(layers=2, vocab=len(tok))
    model = MaskedLM(body, {2: new_head(body.config)}).eval()
    rows = mlm.pack(tok, make_text("ru", 60, 1), 16)
    batches = mlm.fixed_masked(rows, tok, batch_size=len(rows), probability=0.3)
    again = mlm.fixed_masked(rows, tok, batch_size=len(rows), probability=0.3)
    assert all(torch.equal(a["labels"], b["labels"]) for a, b in zip(batches, again, strict=True))
    got = mlm_score(model, batches)
    b = batches[0]
    with torch.no_grad():
        loss = model(b["input_ids"], b["attention_mask"], b["labels"])
        (logits, target), = model.head_logits(b["input_ids"], b["attention_mask"], b["labels"]).values()
    assert got["mlm_loss"] == pytest.approx(float(loss), rel=1e-5)
    assert got["mlm_accuracy"] == pytest.approx(100 * float((logits.argmax(-1) == target).float().mean()))


def test_hold_out_is_seeded_disjoint_and_at_most_a_tenth():
    lines = [f"line {i}" for i in range(100)]
    train, held = mlm.hold_out(lines, 400, seed=0)
    assert len(held) == 10 and not set(train) & set(held) and len(train) + len(held) == 100
    assert mlm.hold_out(lines, 400, seed=0) == (train, held) and mlm.hold_out(lines, 400, seed=1)[1] != held
    assert mlm.hold_out(lines, 0, seed=0) == (lines, [])


@pytest.mark.parametrize("damage", ["flipped", "truncated", "torn_meta"])
def test_a_damaged_step3_entry_is_moved_aside_and_rebuilt(tmp_path, damage):
    """The cache writes checksums with every entry and checks them on first read: a bit-flipped
    or truncated weight file or a torn meta.json is reported in one line, moved aside and built
    again, and the trial's rows come out as from an undamaged cache."""
    from tests.helpers import run_cli
    from xlt import results

    study = tmp_path / "a.yaml"
    study.write_text(TINY_ADAPT, encoding="utf-8")
    cache = tmp_path / "cache"
    code, _, err = run_cli("trial", str(study), "--out", str(tmp_path / "run"), f"cache_dir={cache}")
    assert code == 0, err
    entry = next((cache / "step3").glob("[!.]*"))
    weights = entry / "model.safetensors"
    if damage == "flipped":
        blob = bytearray(weights.read_bytes())
        blob[len(blob) // 2] ^= 0x10
        weights.write_bytes(bytes(blob))
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    else:
        (entry / "meta.json").write_text('{"flops": 1.0, "ev')
    code, _, err = run_cli("trial", str(study), "--out", str(tmp_path / "again"), f"cache_dir={cache}")
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "is damaged" in ln]
    assert len(lines) == 1 and f"step3/{entry.name}" in lines[0] and "building it again" in lines[0], err
    cols = ["stage", "event", "eval_set", "f1", "exact_match"]
    first, again = (results.read_table(tmp_path / d).sort_values(cols[:3])[cols].reset_index(drop=True)
                    for d in ("run", "again"))
    assert first.equals(again)
    assert (entry / "meta.json").exists() and "_files" in json.loads((entry / "meta.json").read_text())


@pytest.mark.parametrize("how", ["head", "all"])
def test_step1_of_a_headless_pretrained_primary_fits_a_head_over_its_frozen_body(tmp_path, tok, how):
    """adapt.primary_step1: `head` (the default) fits a new MLM head and leaves the pretrained body
    as the checkpoint has it (training the whole MiniLM under a random head cost step 3 most of its
    English F1); `all` trains the whole model. The estimate prices the two as they run."""
    import yaml

    from xlt.spec import spec_from_dict
    from xlt.study.estimate import trial_cost
    from xlt.train.adapt import AdaptText, run_step1

    ckpt = tmp_path / "ckpt"
    tiny_body(layers=2, vocab=len(tok)).save_pretrained(ckpt)  # a BertModel: no MLM head in its weights
    tok.save_pretrained(ckpt)
    tree = yaml.safe_load(TINY_ADAPT)
    tree["model"] = {"name": str(ckpt)}
    tree["adapt"] |= {"method": "base_large", "primary_step1": how}
    spec = spec_from_dict(tree)
    text = AdaptText.read(spec)
    before = {k: v.clone() for k, v in tiny_body(layers=2, vocab=len(tok)).state_dict().items()}
    s1 = run_step1(spec, tok, text.source, Meter(), torch.device("cpu"))
    after = s1.body.state_dict()
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert (changed == []) == (how == "head"), changed[:3]
    costs = {h: trial_cost(spec_from_dict({**tree, "adapt": {**tree["adapt"], "primary_step1": h}}))["stages"]["step1"]
             for h in ("head", "all")}
    assert 0 < costs["head"] < costs["all"] / 2
