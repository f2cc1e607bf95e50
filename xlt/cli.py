"""xlt's command line: validate | trial | eval | flops | estimate | run | status | dashboard | bench.

Imports are lazy so that `validate`, `estimate` and `dashboard` start fast and never
touch torch. Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xlt.errors import XltError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xlt", description="Studies of cross-lingual transfer for pretrained encoders.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("validate", help="check a study file (and overrides) without running it")
    s.add_argument("study")
    s.add_argument("overrides", nargs="*", metavar="key.path=value")

    s = sub.add_parser("trial", help="run one trial in-process (no Ray) and write DIR/results.parquet")
    s.add_argument("study")
    s.add_argument("overrides", nargs="*", metavar="key.path=value")
    s.add_argument("--out", default=None, help="run directory (default: runs/<study>-trial)")

    s = sub.add_parser("eval", help="score predictions against a SQuAD-format file (official-script semantics)")
    s.add_argument("data")
    s.add_argument("predictions")
    s.add_argument("--lang", required=True)
    s.add_argument("--mode", default="xlt", help="xlt | squad_v1 | mlqa | zh_char")

    s = sub.add_parser("dashboard", help="write the study's offline HTML dashboard from a run directory")
    s.add_argument("run_dir")
    s.add_argument("--out", default=None, help="file or directory (default: dashboards/<study>.html)")

    s = sub.add_parser("estimate", help="planned trials and predicted FLOPs / device-hours of a study (no torch)")
    s.add_argument("study")
    s.add_argument("overrides", nargs="*", metavar="key.path=value")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    s = sub.add_parser("flops", help="analytical FLOPs of one training step, optionally measured")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="a transformers config.json")
    src.add_argument("--model", help="hub name or local path (or pkg:module/dir)")
    s.add_argument("--seq-len", type=int, required=True)
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--trainable", default="all", help="all | embeddings | none | head | top:N | bottom:N")
    s.add_argument("--head", default="qa", choices=["qa", "mlm", "none"])
    s.add_argument("--measure", action="store_true", help="also run one step under torch's FlopCounterMode")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may follow options (`xlt trial s.yaml --out d train.lr=1e-4`)
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return _COMMANDS[args.command](args) or 0
    except XltError as e:
        print(f"xlt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xlt: interrupted", file=sys.stderr)
        return 130


def _validate(args) -> int:
    from xlt.spec import load_spec

    spec = load_spec(args.study, args.overrides)
    print(f"{args.study}: ok ({spec.task} study '{spec.name}', {spec.scale}-scale, search {spec.search.algorithm})")
    return 0


def _trial(args) -> int:
    from xlt.spec import load_spec, parse_override

    spec = load_spec(args.study, args.overrides)
    from xlt.train.trial import run_trial_local

    out = Path(args.out or f"runs/{spec.name}-trial")
    summary = run_trial_local(spec, out, params=dict(parse_override(o) for o in args.overrides))
    print(json.dumps(summary, indent=1))
    return 0


def _eval(args) -> int:
    from xlt import metrics
    from xlt.data.squad import read_squad_file

    examples, _ = read_squad_file(args.data, args.lang, require_answers=False)
    try:
        preds = json.loads(Path(args.predictions).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise XltError(f"{args.predictions}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise XltError(f"{args.predictions}: not a JSON file ({e})") from None
    if not isinstance(preds, dict) or not all(isinstance(v, str) for v in preds.values()):
        raise XltError(f"{args.predictions}: expected a JSON object {{question_id: answer_text}}")
    gold = {e.id: e.answer_texts for e in examples}
    print(json.dumps(metrics.evaluate(gold, preds, args.lang, args.mode)))
    return 0


def _flops(args) -> int:
    from xlt import compute

    if args.config:
        try:
            cfg = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise XltError(f"--config {args.config}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise XltError(f"--config {args.config}: not a JSON file ({e})") from None
    else:
        from xlt.models.load import load_config

        cfg = load_config(args.model).to_dict()
    if args.measure:
        from xlt.models.flops import measure_train_step

        out = measure_train_step(cfg, args.seq_len, args.batch, args.trainable, head_kind=args.head)
    else:
        out = compute.analytical_for(cfg, args.seq_len, args.batch, args.trainable, head_kind=args.head)
    print(json.dumps(out))
    return 0


def _dashboard(args) -> int:
    from xlt.dashboards.page import main_dashboard

    print(main_dashboard(args.run_dir, args.out))
    return 0


def _estimate(args) -> int:
    from xlt.spec import load_spec
    from xlt.study.estimate import estimate, format_estimate

    spec = load_spec(args.study, args.overrides)
    est = estimate(spec)
    print(json.dumps(est) if args.json else format_estimate(est))
    return 0


_COMMANDS = {"validate": _validate, "trial": _trial, "eval": _eval, "flops": _flops, "dashboard": _dashboard,
             "estimate": _estimate}


if __name__ == "__main__":
    sys.exit(main())
