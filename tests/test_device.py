"""What the device paths write on any machine: a CPU trial's rows say peak_memory_bytes is None,
and a step that runs out of device memory (torch.OutOfMemoryError, what CUDA raises) fails the
trial in one line naming the batch size and the key that sets it."""

import pytest
import torch

from xlt.errors import OutOfDeviceMemory, XltError
from xlt.results import COLUMNS
from xlt.train.loop import LoopConfig, Meter, train_loop


def test_peak_memory_is_a_column_and_none_on_cpu(tmp_path):
    from tests.helpers import run_cli, tiny_qa_study
    from xlt import results

    assert COLUMNS["peak_memory_bytes"] == "int"
    assert Meter(device_kind="cpu").snapshot("qa")["peak_memory_bytes"] is None
    import yaml

    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(tiny_qa_study(train=40, dev=10, max_steps=2)), encoding="utf-8")
    code, _, err = run_cli("trial", str(study), "--out", str(tmp_path / "run"))
    assert code == 0, err
    df = results.read_table(tmp_path / "run")
    assert len(df) > 0 and df.peak_memory_bytes.isna().all() and (df.device_kind == "cpu").all()


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(4, 1)


def _batches(n=8):
    while True:
        yield {"input_ids": torch.zeros(n, 16, dtype=torch.long), "x": torch.randn(n, 4)}


def _loop(loss_fn, **cfg):
    model = _Tiny()
    return train_loop(model, _batches(), LoopConfig(total_steps=3, lr=1e-3, **cfg), device=torch.device("cpu"),
                      loss_fn=loss_fn, on_batch=lambda b: None, evaluate=lambda s: None)


def test_out_of_memory_in_a_step_is_one_line_naming_the_batch_size():
    calls = []

    def oom_on_second(model, batch):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return model.w(batch["x"]).pow(2).mean()

    with pytest.raises(OutOfDeviceMemory) as e:
        _loop(oom_on_second, batch_key="adapt.step2.batch_size")
    msg = str(e.value)
    assert isinstance(e.value, XltError) and "\n" not in msg
    assert msg == "out of device memory training step 2 (micro-batch of 8 x 16 tokens): lower adapt.step2.batch_size"
    with pytest.raises(OutOfDeviceMemory, match=r"lower train.batch_size \(and raise train.grad_accum"):
        _loop(_always_oom, batch_key="train.batch_size")


def _always_oom(model, batch):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory")


def test_out_of_memory_in_evaluation_names_the_eval_batch_size():
    def evaluate(state):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(OutOfDeviceMemory, match="^out of device memory evaluating at step 3: lower train.eval_batch_size$"):
        train_loop(_Tiny(), _batches(), LoopConfig(total_steps=3, lr=1e-3), device=torch.device("cpu"),
                   loss_fn=lambda m, b: m.w(b["x"]).pow(2).mean(), on_batch=lambda b: None, evaluate=evaluate)


def test_trial_failure_line_is_the_out_of_memory_line(tmp_path):
    """What `xlt run` prints for a failed trial: the last XltError line of Tune's error.txt."""
    from types import SimpleNamespace

    from xlt.study.progress import _error_line

    err = tmp_path / "error.txt"
    err.write_text("Traceback (most recent call last):\n  File ...\nray.exceptions.RayTaskError: ...\n"
                   "xlt.errors.OutOfDeviceMemory: out of device memory training step 1 (micro-batch of 32 x 512"
                   " tokens): lower adapt.step2.batch_size\n", encoding="utf-8")
    assert _error_line(SimpleNamespace(error_file=str(err))) == (
        "out of device memory training step 1 (micro-batch of 32 x 512 tokens): lower adapt.step2.batch_size")
