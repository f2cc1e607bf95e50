"""Helpers shared by tests."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*argv: str):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from xlt.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse
            code = e.code
    return code, out.getvalue(), err.getvalue()


def tiny_qa_study(*, train: int, dev: int, max_steps: int) -> dict:
    """A QA study small enough for a test: a one-layer tiny BERT, synthetic English training
    data, English and Russian dev sets, an evaluation every 2 steps."""
    return {
        "name": "tiny",
        "task": "qa",
        "model": {"tiny": {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64, "vocab_size": 300,
                           "max_positions": 128}},
        "data": {"english": {"name": "en-train", "lang": "en", "synthetic": {"n": train, "seed": 0, "split": "train"}},
                 "eval": [{"name": "en-dev", "lang": "en", "synthetic": {"n": dev, "seed": 0, "split": "dev"}},
                          {"name": "ru-dev", "lang": "ru", "synthetic": {"n": dev, "seed": 0, "split": "dev"}}]},
        "train": {"max_steps": max_steps, "eval_every": 2, "batch_size": 8, "eval_batch_size": 32, "max_seq_length": 96,
                  "doc_stride": 32, "lr": 3e-3, "save_model": False},
    }
