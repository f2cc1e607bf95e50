"""CUDA code paths. In the default selection (`pytest` runs them): each skips with a reason where
torch.cuda.is_available() is false, and each asserts something that fails if the CUDA path is
broken (bf16 autocast not applied, AdamW not fused, a trial that fell back to CPU, no peak
memory, an out-of-memory error that is not the one-line failure)."""

import pytest
import torch
import yaml

from tests.helpers import run_cli, tiny_qa_study

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is false)")]

CUDA = torch.device("cuda")


def _tiny_qa_model():
    from transformers import AutoModelForQuestionAnswering, BertConfig

    cfg = BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=64)
    return AutoModelForQuestionAnswering.from_config(cfg).to(CUDA)


def _qa_batches(n=4, length=32):
    g = torch.Generator().manual_seed(0)
    while True:
        yield {"input_ids": torch.randint(5, 200, (n, length), generator=g),
               "attention_mask": torch.ones(n, length, dtype=torch.long),
               "start_positions": torch.randint(0, length, (n,), generator=g),
               "end_positions": torch.randint(0, length, (n,), generator=g)}


def test_bf16_autocast_qa_step_and_fused_adamw():
    from xlt.train.loop import LoopConfig, make_optimizer, train_loop

    model = _tiny_qa_model()
    dtypes = []

    def loss_fn(m, b):
        out = m(**b)
        dtypes.append(out.start_logits.dtype)
        return out.loss

    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = make_optimizer(model, 1e-3, 0.01, CUDA)
    assert opt.defaults.get("fused") is True  # the loop's AdamW on CUDA is the fused kernel
    state = train_loop(model, _qa_batches(), LoopConfig(total_steps=3, lr=1e-3, eval_every=3), device=CUDA,
                       loss_fn=loss_fn, on_batch=lambda b: None, evaluate=lambda s: None, optimizer=opt)
    assert state.step == 3 and dtypes and set(dtypes) == {torch.bfloat16}  # the forward ran under bf16 autocast
    assert all(p.dtype == torch.float32 and p.is_cuda for p in model.parameters())  # master weights stay fp32
    assert any(not torch.equal(before[k], v) for k, v in model.named_parameters())  # the fused step updated them
    assert torch.isfinite(torch.tensor(state.last_loss))


def test_adaptation_step2_on_cuda_trains_only_the_embeddings():
    from torch import nn
    from transformers import AutoModel, BertConfig

    from xlt.models.minimodel import new_head, token_embedding, without_pooler
    from xlt.train.adapt import Step1, step2_plan, with_new_embeddings
    from xlt.train.loop import LoopConfig, train_loop

    cfg = BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=64)
    body = without_pooler(AutoModel.from_config(cfg)).to(CUDA)
    s1 = Step1(body, nn.ModuleDict({"top": new_head(cfg), "k": new_head(cfg)}).to(CUDA), None)
    model = with_new_embeddings(s1, torch.randn(300, 64, device=CUDA) * 0.02, "mini_joint", 2)
    assert step2_plan(model).embeddings
    frozen = {k: v.detach().clone() for k, v in model.named_parameters() if not v.requires_grad}
    emb = token_embedding(body).weight.detach().clone()
    g = torch.Generator().manual_seed(0)

    def batches():
        while True:
            ids = torch.randint(5, 300, (8, 32), generator=g)
            labels = torch.where(torch.rand(8, 32, generator=g) < 0.15, ids, torch.full_like(ids, -100))
            yield {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    state = train_loop(model, batches(), LoopConfig(total_steps=3, lr=1e-2, weight_decay=0.0), device=CUDA,
                       loss_fn=lambda m, b: m(b["input_ids"], b["attention_mask"], b["labels"]),
                       on_batch=lambda b: None, evaluate=lambda s: None)
    assert state.step == 3
    assert not torch.equal(token_embedding(body).weight, emb)  # step 2 moved the new embeddings on the GPU
    assert all(torch.equal(v, frozen[k]) for k, v in model.named_parameters() if k in frozen)  # nothing else


def test_out_of_memory_on_cuda_is_the_one_line_failure():
    from xlt.errors import OutOfDeviceMemory
    from xlt.train.loop import LoopConfig, train_loop

    model = _tiny_qa_model()
    too_much = torch.cuda.get_device_properties(CUDA).total_memory * 4

    def loss_fn(m, b):
        torch.empty(too_much, dtype=torch.uint8, device=CUDA)  # what the CUDA allocator cannot give
        return m(**b).loss

    with pytest.raises(OutOfDeviceMemory, match=r"^out of device memory training step 1 \(micro-batch of 4 x 32 tokens\): "
                                                 r"lower train.batch_size"):
        train_loop(model, _qa_batches(), LoopConfig(total_steps=2, lr=1e-3, batch_key="train.batch_size"),
                   device=CUDA, loss_fn=loss_fn, on_batch=lambda b: None, evaluate=lambda s: None)


def _gpu_study(tmp_path, *, gpus: float, trials: int, concurrent: int):
    study = tiny_qa_study(train=60, dev=12, max_steps=4)
    study["resources"] = {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": gpus,
                          "max_concurrent_trials": concurrent}
    if trials > 1:
        study["search"] = {"algorithm": "grid", "space": {"train.lr": [1e-3, 3e-3][:trials]}}
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def _rows(out):
    from xlt import results

    return results.read_table(out)


@pytest.mark.ray
def test_one_worker_use_gpu_trial_through_xlt_run(tmp_path, ray_session):
    out = tmp_path / "run"
    code, _, err = run_cli("run", str(_gpu_study(tmp_path, gpus=1, trials=1, concurrent=1)), "--out", str(out))
    assert code == 0, err
    df = _rows(out)
    assert len(df) > 0 and df.device_kind.str.startswith("cuda:").all()  # the worker trained on the GPU
    assert (df.peak_memory_bytes > 0).all()  # and every row says how much of it the trial used


@pytest.mark.ray
def test_two_trials_share_one_gpu_with_fractional_gpus_per_worker(tmp_path, ray_session):
    out = tmp_path / "run"
    code, _, err = run_cli("run", str(_gpu_study(tmp_path, gpus=0.5, trials=2, concurrent=2)), "--out", str(out))
    assert code == 0, err
    df = _rows(out)
    assert df.trial_id.nunique() == 2 and df.device_kind.str.startswith("cuda:").all()
    peaks = df.groupby("trial_id").peak_memory_bytes.max()
    assert (peaks > 0).all()  # peak device memory per trial
