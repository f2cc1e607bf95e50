"""xlt's command line: validate | trial | eval | predict | flops | estimate | run | status | dashboard | bench.

Imports are lazy so that `validate`, `estimate` and `dashboard` start fast and never
touch torch. Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xlt.compute import TRAINABLE_HELP  # torch-free, like everything the parser needs
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

    s = sub.add_parser("predict", help="answer a SQuAD-format file with a saved QA model (writes {id: answer})")
    s.add_argument("model_dir", help="a model directory written by xlt trial / xlt run (<trial>/model)")
    s.add_argument("data")
    s.add_argument("--out", default=None, help="predictions file (default: standard output)")

    s = sub.add_parser("dashboard", help="write the study's offline HTML dashboard from a run directory")
    s.add_argument("run_dir", nargs="+", help="a run directory; several: one page comparing them")
    s.add_argument("--out", default=None, help="file or directory (default: dashboards/<study>.html)")
    s.add_argument("--watch", type=float, nargs="?", const=30.0, default=None, metavar="SECONDS",
                   help="rewrite the page every SECONDS (default 30) until the run ends")

    s = sub.add_parser("publish", help="a finished run's table, spec, verdicts and page screenshot, as they ship in studies/results/")
    s.add_argument("run_dir")
    s.add_argument("--to", default=None, help="directory (default: studies/results/<study>)")
    s.add_argument("--study", default=None, help="the study file whose claims to ship (must hash like the run's spec)")
    s.add_argument("--no-screenshot", action="store_true", help="skip the headless-Chromium screenshot")

    s = sub.add_parser("calibrate", help="measure this device's training/evaluation FLOP/s for xlt estimate")
    s.add_argument("study", nargs="?", default=None, help="the study whose model shape, batch and window to time "
                   "(default: BERT-base, 16 x 256)")
    s.add_argument("overrides", nargs="*", metavar="key.path=value")
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: the study's per worker, else 1)")
    s.add_argument("--steps", type=int, default=6, help="training steps timed (after one warm-up)")

    s = sub.add_parser("estimate", help="planned trials and predicted FLOPs / device-hours of a study (no torch)")
    s.add_argument("study")
    s.add_argument("overrides", nargs="*", metavar="key.path=value")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    s.add_argument("--against", default=None, metavar="RUN",
                   help="price the trials a run directory finished and set each beside what it measured")

    s = sub.add_parser("run", help="run a study on Ray (embedded local Ray, or --address) into a run directory")
    s.add_argument("study")
    s.add_argument("overrides", nargs="*", metavar="key.path=value")
    s.add_argument("--out", default=None, help="run directory (default: runs/<study>); on a cluster, shared storage")
    s.add_argument("--address", default=None, help="a running Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    s.add_argument("--resume", action="store_true", help="continue the study in --out after an interruption")
    s.add_argument("--force", action="store_true",
                   help="with --resume: go on although the study file changed (trials left run under the new spec)")
    s.add_argument("--driver-resource", default=None, metavar="NAME[=AMOUNT]",
                   help="custom resource each trial driver needs (keeps drivers on nodes that advertise it)")
    s.add_argument("--wait-resources", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for an autoscaling cluster to fit one trial")

    s = sub.add_parser("status", help="trials, best result, compute and overhead of a run directory (no Ray)")
    s.add_argument("run_dir")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    s = sub.add_parser("flops", help="analytical FLOPs of one training step, optionally measured")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="a transformers config.json")
    src.add_argument("--model", help="hub name or local path (or pkg:module/dir)")
    s.add_argument("--seq-len", type=int, required=True)
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--trainable", default="all", help=TRAINABLE_HELP)
    s.add_argument("--head", default="qa", choices=["qa", "mlm", "none"])
    s.add_argument("--measure", action="store_true", help="also run one step under torch's FlopCounterMode")

    s = sub.add_parser("bench", help="xlt vs Hugging Face training/evaluation speed, MFU, Ray overhead, step-2 speed, "
                                    "searchers replayed on a recorded grid")
    s.add_argument("--quick", action="store_true", help="tiny models and synthetic data (minutes on 2 CPU cores)")
    s.add_argument("--out", default=None, help="also write the JSON object to this file")
    s.add_argument("--parts", default=None, help="comma-separated subset of qa_train,qa_eval,mfu,orchestration,adapt_step2,search")
    s.add_argument("--grid", default=None, help="part search: the recorded grid's run directory or results.parquet "
                                                "(default: studies/results/search_grid_cpu)")
    s.add_argument("overrides", nargs="*", metavar="field=value",
                   help="BenchConfig fields, e.g. model=${XLT_MODELS_DIR}/multilingual-e5-small train_questions=200")
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
    from xlt.study.space import check  # `xlt run`'s search pre-flight (imports neither ray nor torch)

    spec = load_spec(args.study, args.overrides)
    try:
        check(spec)
    except XltError as e:
        raise XltError(f"{args.study}: {e}") from None
    s = spec.search
    print(f"{args.study}: ok ({spec.task} study '{spec.name}', {spec.scale}-scale, search {s.algorithm})")
    if not s.space and s.algorithm != "grid":
        from xlt import derived

        n = len(derived.repeat_seeds(s, spec.train.seed))
        print(f"{args.study}: search.space is empty: {n} trial{'s' if n != 1 else ''} (one per seed), "
              f"not search.num_samples={s.num_samples} copies of one")
    return 0


def _trial(args) -> int:
    from xlt.spec import load_spec, parse_override

    spec = load_spec(args.study, args.overrides)
    from xlt import lock
    from xlt.train.trial import run_trial_local

    out = Path(args.out or f"runs/{spec.name}-trial")
    with lock.held(out, "xlt trial"):  # two trials into one directory would interleave their rows
        summary = run_trial_local(spec, out, params=dict(parse_override(o) for o in args.overrides))
    print(json.dumps(summary, indent=1))
    return 0


def _eval(args) -> int:
    from xlt import metrics
    from xlt.data.squad import read_squad_file

    examples, report = read_squad_file(args.data, args.lang, require_answers=False)
    if not examples:
        detail = f" (first problem: {report.first_problem})" if report.first_problem else ""
        raise XltError(f"{args.data}: no questions with a usable gold answer{detail}")
    unanswered = [e.id for e in examples if not e.answers]
    if unanswered:
        raise XltError(f"{args.data}: question {unanswered[0]!r} has no gold answer"
                       f" ({len(unanswered)} of {len(examples)} questions have none)")
    try:
        preds = json.loads(Path(args.predictions).read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise XltError(f"{args.predictions}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise XltError(f"{args.predictions}: not a JSON file ({e})") from None
    except RecursionError:
        raise XltError(f"{args.predictions}: not a JSON file (nested too deeply)") from None
    if not isinstance(preds, dict) or not all(isinstance(v, str) for v in preds.values()):
        raise XltError(f"{args.predictions}: expected a JSON object {{question_id: answer_text}}")
    gold = {e.id: e.answer_texts for e in examples}
    print(json.dumps(metrics.evaluate(gold, preds, args.lang, args.mode)))
    return 0


def _predict(args) -> int:
    from xlt.train.predict import predict_file

    text = json.dumps(predict_file(args.model_dir, args.data), ensure_ascii=False, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
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
        except RecursionError:
            raise XltError(f"--config {args.config}: not a JSON file (nested too deeply)") from None
    else:
        from xlt.models.load import load_config

        cfg = load_config(args.model).to_dict()
    try:
        if args.measure:
            from xlt.models.flops import measure_train_step

            out = measure_train_step(cfg, args.seq_len, args.batch, args.trainable, head_kind=args.head)
        else:
            out = compute.analytical_for(cfg, args.seq_len, args.batch, args.trainable, head_kind=args.head)
    except XltError as e:  # "config: not an encoder config ..." -> name the file it came from
        if not str(e).startswith("config"):
            raise
        source = f"--config {args.config}" if args.config else f"--model {args.model}"
        raise XltError(f"{source}{str(e).removeprefix('config')}") from None
    print(json.dumps(out))
    return 0


def _dashboard(args) -> int:
    if len(args.run_dir) > 1:
        from xlt.dashboards.compare import compare_dashboard

        print(compare_dashboard(args.run_dir, args.out))
        return 0
    from xlt.dashboards.page import main_dashboard, watch

    if args.watch is not None:
        if args.watch <= 0:
            raise XltError(f"--watch {args.watch:g}: the interval must be > 0 seconds")
        watch(args.run_dir[0], args.out, every=args.watch, on_write=lambda p: print(p, flush=True))
        return 0
    print(main_dashboard(args.run_dir[0], args.out))
    return 0


def _publish(args) -> int:
    from xlt.dashboards.publish import publish

    print(f"xlt: published {args.run_dir} -> {publish(args.run_dir, args.to, study=args.study, shot=not args.no_screenshot)}")
    return 0


def _calibrate(args) -> int:
    from xlt.spec import load_spec

    spec = load_spec(args.study, args.overrides) if args.study else None
    if args.threads is not None and args.threads < 1 or args.steps < 1:
        raise XltError("xlt calibrate: --threads and --steps must be >= 1")
    from xlt.bench.calibrate import calibrate

    calibrate(spec, steps=args.steps, threads=args.threads)
    return 0


def _estimate(args) -> int:
    from xlt.spec import load_spec
    from xlt.study.estimate import estimate, format_estimate

    spec = load_spec(args.study, args.overrides)
    if args.against:
        from xlt.study.estimate_vs_run import against, format_against

        c = against(spec, Path(args.against))
        print(json.dumps(c) if args.json else format_against(c))
        return 0
    est = estimate(spec)
    print(json.dumps(est) if args.json else format_estimate(est))
    return 0


def _run(args) -> int:
    from xlt.spec import load_spec

    spec = load_spec(args.study, args.overrides)
    from xlt.dashboards.page import main_dashboard
    from xlt.study.runner import RunOptions, parse_driver_resource, run_study

    out = Path(args.out or f"runs/{spec.name}")
    if args.force and not args.resume:
        raise XltError("--force: only with --resume (it lets a changed study go on in its run directory)")
    opts = RunOptions(out=out, address=args.address, resume=args.resume, force=args.force,
                      driver_resource=parse_driver_resource(args.driver_resource), wait_resources=args.wait_resources,
                      page=lambda: main_dashboard(str(out), None))  # rewritten after every trial: a live page
    code = run_study(spec, opts)
    try:  # the study's results stand without the page
        print(f"xlt: dashboard: {main_dashboard(str(opts.out), None)}")
    except Exception as e:  # noqa: BLE001
        print(f"xlt: warning: dashboard not written: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
              file=sys.stderr)
    return code


def _status(args) -> int:
    from xlt.study.status import format_status, study_status

    st = study_status(Path(args.run_dir))
    print(json.dumps(st, indent=1, default=str) if args.json else format_status(st))
    return 0


def _bench(args) -> int:
    import dataclasses

    from xlt.bench import PARTS, format_table, full, quick, run_bench
    from xlt.bench.common import with_overrides

    cfg = quick() if args.quick else full()
    if args.parts:
        parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise XltError(f"--parts: unknown part(s) {', '.join(unknown)}; expected some of {', '.join(PARTS)}")
        cfg = dataclasses.replace(cfg, parts=parts)
    if args.grid:
        cfg = dataclasses.replace(cfg, search_grid=str(Path(args.grid).resolve()))
    cfg = with_overrides(cfg, args.overrides)
    out = run_bench(cfg)
    text = json.dumps(out, indent=1, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(format_table(out), file=sys.stderr)
    print(text)
    # nothing measured (e.g. `--parts search` without the recorded grid): a failed command
    return 2 if set(out["errors"]) >= set(cfg.parts) else 0


_COMMANDS = {"validate": _validate, "trial": _trial, "eval": _eval, "predict": _predict, "flops": _flops, "dashboard": _dashboard, "publish": _publish,
             "estimate": _estimate, "calibrate": _calibrate, "run": _run, "status": _status,
             "bench": _bench}


if __name__ == "__main__":
    sys.exit(main())
