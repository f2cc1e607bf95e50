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
