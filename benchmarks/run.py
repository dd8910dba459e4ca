"""The benchmark suite of issue 7: ``python -m benchmarks [--quick] [--runs-dir DIR] [--out docs/benchmarks.md]``.

Runs every benchmark (peer and ours interleaved in this one process, see :mod:`benchmarks.harness`), prints the
table of ratios and writes it, with the command, the date and the machine, to ``docs/benchmarks.md`` (between the
markers, so the prose around it stays). ``--only`` picks sections (focal, train, infer, bf16, study).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import detector, focal, harness, study
from retinanet import atomic
from retinanet.engine import allocator
from retinanet.engine.evaluate import inference_memory_format
from retinanet.modeling import losses

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
SECTIONS = ("focal", "train", "infer", "bf16", "study")


@dataclass
class Row:
    """One line of the table."""

    threads: str
    benchmark: str
    setting: str
    peer: str
    ours: str
    ratio: str
    min_ratio: str
    spread: str
    target: str
    verdict: str


def _row(*fields: str) -> Row:
    """A row measured with the current torch thread count."""
    return Row(str(torch.get_num_threads()), *fields)


def _verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "**missed**"


def _timed_row(name: str, setting: str, t: harness.Timing, target: float | None, batch: int | None = None) -> Row:
    """A timing row: milliseconds per call, or images per second if ``batch`` (images per call) is given."""
    pr = t.pair_ratios
    if batch:
        peer, ours = (f"{batch / statistics.median(x):.3g} img/s" for x in (t.peer, t.ours))
    else:
        peer, ours = harness.ms(t.peer), harness.ms(t.ours)
    return _row(name, setting, peer, ours, f"{t.ratio:.2f}x", f"{t.min_ratio:.2f}x",
                f"{min(pr):.2f}-{max(pr):.2f} (n={len(pr)})",
               f">= {target}x" if target else "-", _verdict(t.ratio, target) if target else "-")


FOCAL_SIZE = (100_000, 80)


def bench_focal(reps: dict, log) -> list[Row]:
    r, k = FOCAL_SIZE
    logits, targets = focal.inputs(r, k)
    t = harness.interleaved(lambda: focal.step(focal.peer, logits, targets),
                            lambda: focal.step(focal.ours, logits, targets), warmup=1, repeats=reps["focal"])
    log(f"focal loss fwd+bwd {r}x{k}: {t.summary()}")
    rows = [_timed_row("focal loss fwd+bwd time", f"{r // 1000}k anchors x {k} classes, fp32", t, 5.0)]
    b = harness.interleaved(focal.one_pass_bound(logits, targets), lambda: focal.step(focal.ours, logits, targets),
                            warmup=1, repeats=reps["focal"])
    log(f"focal loss vs one-pass memory traffic: {b.summary()}")
    rows.append(_row("  ours against one pass of memory traffic", "copy logits and targets into two preallocated "
                     "arrays (peer column); ratio = fraction of that bound ours reaches", harness.ms(b.peer),
                     harness.ms(b.ours), f"{b.ratio:.2f}", f"{b.min_ratio:.2f}",
                     f"{min(b.pair_ratios):.2f}-{max(b.pair_ratios):.2f} (n={len(b.peer)})", "-", "-"))
    return rows


def machine_row() -> Row:
    """The CPU, the vector ISA ATen dispatches to, and which kernel computes the focal loss at paper size."""
    return _row("machine", f"{harness.cpu_model()}; ATen vector ISA {torch.backends.cpu.get_cpu_capability()}", "-",
                f"focal loss kernel: {losses.fused_kernel()}", "-", "-", "-", "-", "-")


def bench_focal_memory_and_values(log) -> list[Row]:
    r, k = FOCAL_SIZE
    rows = []
    threads = torch.get_num_threads()
    mem = {v: focal.peak_extra_memory(v, r, k, threads) for v in ("peer", "ours")}
    frac = mem["ours"] / mem["peer"]
    log(f"focal loss peak extra memory: peer {mem['peer'] / 2**20:.0f} MiB, ours {mem['ours'] / 2**20:.0f} MiB")
    rows.append(_row("focal loss fwd+bwd peak extra memory", "same; one fresh process each",
                    f"{mem['peer'] / 2**20:.0f} MiB", f"{mem['ours'] / 2**20:.0f} MiB", f"{frac:.2f} of peer", "-",
                    "-", "<= 0.33 of peer", _verdict(frac, 1 / 3, higher_is_better=False)))
    v = focal.compare_values(r, k)
    log(f"focal loss values: {v}")
    equal = v["loss_rel_diff"] < 1e-5 and v["grad_max_abs_diff"] < 1e-5 * max(1.0, v["grad_max_abs"])
    rows.append(_row("focal loss values", "summed loss; gradient where torchvision's is finite", "-", "-",
                    f"loss rel. diff {v['loss_rel_diff']:.1e}", "-", f"grad max abs diff {v['grad_max_abs_diff']:.1e}",
                    "equal (fp32 tolerance)", "met" if equal else "**missed**"))
    return rows


def bench_train(reps: dict, log) -> list[Row]:
    rows = []
    for s, target, n in ((detector.mini_setting(), 1.3, reps["train_mini"]),
                         (detector.r50_setting(512, 2), 1.0, reps["train_r50"])):
        ours, peer, cfg = detector.build_pair(s)
        images, targets = detector.make_batch(s)
        peer_step, our_step = detector.train_steps(ours, peer, cfg, images, targets)
        t = harness.interleaved(peer_step, our_step, warmup=1, repeats=n)
        log(f"train step {s.name}, batch {s.batch}: {t.summary()}")
        rows.append(_timed_row("train step throughput", f"{s.name}, batch {s.batch}", t, target, batch=s.batch))
        t = harness.interleaved(*detector.loss_calls(ours, peer, images, targets), warmup=1, repeats=max(3, n))
        log(f"  matching + losses + their backward {s.name}: {t.summary()}")
        rows.append(_timed_row("  of which: anchors, matching, losses, their backward", f"{s.name}, batch {s.batch}",
                               t, None))
        if s.norm == "frozen_bn" and s.freeze_at > 0:
            rows.append(_frozen_share_row(s, ours, our_step, images, max(3, n), log))
    return rows


def _frozen_share_row(s: detector.Setting, ours, step, images, repeats: int, log) -> Row:
    """The frozen stages' forward (peer column) against our whole training step (ours): the ratio is their share
    of the step, the most that caching their outputs (identical math) could save."""
    t = harness.interleaved(detector.frozen_forward(ours, images, s.freeze_at), step, warmup=1, repeats=repeats)
    log(f"  frozen stages' forward against the step {s.name}: {t.summary()}")
    frozen = " + ".join(("stem", "res2", "res3", "res4", "res5")[:s.freeze_at])
    return _row(f"  of which: the frozen {frozen} forward", f"{s.name}, batch {s.batch}; peer column: that "
                "forward, ours: the whole step; ratio = its share of the step (what caching it could save)",
                harness.ms(t.peer), harness.ms(t.ours), f"{t.ratio:.2f}", f"{t.min_ratio:.2f}",
                f"{min(t.pair_ratios):.2f}-{max(t.pair_ratios):.2f} (n={len(t.peer)})", "-", "-")


def bench_infer(reps: dict, log) -> list[Row]:
    rows = []
    for s, n in ((detector.mini_setting(batch=1), reps["infer_mini"]), (detector.r50_setting(512, 1),
                                                                        reps["infer_r50"])):
        ours, peer, cfg = detector.build_pair(s)
        detector.dense_scores(ours, peer)
        images, _ = detector.make_batch(s, batch=1)
        layout = inference_memory_format(cfg, torch.device("cpu"))  # what `evaluate` and `time` run in
        p, o = detector.infer_calls(ours, peer, images, ours_format=layout)
        t = harness.interleaved(p, o, warmup=2, repeats=n)
        log(f"inference batch 1 {s.name}: {t.summary()}")
        rows.append(_timed_row("inference incl. post-processing", f"{s.name}, batch 1, dense candidates", t, 1.2))
        # The same with the peer also in our layout: how much of the ratio is the layout (no target).
        p, o = detector.infer_calls(ours, peer, images, ours_format=layout, peer_format=layout)
        t = harness.interleaved(p, o, warmup=2, repeats=n)
        log(f"  peer also in {_layout_name(layout)} {s.name}: {t.summary()}")
        rows.append(_timed_row(f"  peer also in {_layout_name(layout)}", f"{s.name}, batch 1", t, None))
    return rows


def _layout_name(layout: torch.memory_format) -> str:
    return "channels-last" if layout == torch.channels_last else "NCHW"


def bench_bf16(reps: dict, log, runs_dir: Path | None) -> list[Row]:
    """Ours fp32 vs ours bf16 autocast + channels_last (the 'peer' column is ours in fp32)."""
    s = detector.mini_setting()
    rows = []
    fp32, _, cfg = detector.build_pair(s)
    bf16 = detector.build_pair(s)[0].to(memory_format=torch.channels_last)
    images, targets = detector.make_batch(s)
    # train_steps returns (peer-style, ours-style) closures; both models are ours here: use the ours-style ones
    a = detector.train_steps(fp32, fp32, cfg, images, targets)[1]
    b = detector.train_steps(bf16, bf16, cfg, images, targets, bf16=True, channels_last=True)[1]
    t = harness.interleaved(a, b, warmup=2, repeats=reps["bf16_train"])  # bf16 kernels are built on first use
    log(f"bf16+channels_last train step {s.name}: {t.summary()} (peer = ours fp32)")
    rows.append(_timed_row("bf16 autocast + channels_last: train step", f"{s.name}, batch {s.batch}; fp32 vs bf16", t,
                           None, batch=s.batch))
    s1 = detector.mini_setting(batch=1)
    image, _ = detector.make_batch(s1, batch=1)
    layout = inference_memory_format(cfg, torch.device("cpu"))  # fp32 inference as `evaluate` runs it
    fp32.eval().to(memory_format=layout)
    bf16.eval()
    sizes = [tuple(image.shape[-2:])]
    image_fp32 = image.contiguous(memory_format=layout)
    image_cl = image.contiguous(memory_format=torch.channels_last)

    def infer(model, x, on):
        def call():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=on):
                return model.predict(x, sizes)
        return call

    t = harness.interleaved(infer(fp32, image_fp32, False), infer(bf16, image_cl, True), warmup=2,
                            repeats=reps["infer_mini"])
    log(f"bf16+channels_last inference {s1.name}: {t.summary()} (peer = ours fp32)")
    rows.append(_timed_row("bf16 autocast + channels_last: inference", f"{s1.name}, batch 1; fp32 vs bf16", t, None))
    rows.append(_ap_row(runs_dir))
    return rows


def _ap_row(runs_dir: Path | None) -> Row:
    """AP of a bf16 run against the fp32 run of the same seed, from ``RUNS/{fp32,bf16}/metrics.json``."""
    name, setting = "bf16 autocast + channels_last: AP (from run outputs)", "mini, same seed"
    if runs_dir is None:
        return _row(name, setting, "not measured", "not measured", "-", "-", "-", "report",
                    "not measured (no --runs-dir)")
    try:
        ap = {v: json.loads((runs_dir / v / "metrics.json").read_text())["AP"] for v in ("fp32", "bf16")}
    except (OSError, KeyError, ValueError) as exc:
        return _row(name, setting, "not measured", "not measured", "-", "-", "-", "report",
                   f"not measured ({type(exc).__name__}: {exc})")
    return _row(name, f"{setting} ({runs_dir})", f"fp32 AP {ap['fp32']:.2f}", f"bf16 AP {ap['bf16']:.2f}",
               f"{ap['bf16'] - ap['fp32']:+.2f} AP", "-", "-", "report", "measured")


def bench_study(log) -> list[Row]:
    rows = []
    try:
        seconds, jobs = study.dry_run("config/paper.yaml")
        log(f"paper-scale dry run: {seconds:.1f} s, {jobs} jobs")
        rows.append(_row("study: paper-scale dry run", "snakemake -n --configfile config/paper.yaml", "-",
                        f"{seconds:.1f} s ({jobs} jobs)", "-", "-", "-", "report", "measured"))
    except (RuntimeError, OSError) as exc:
        rows.append(_row("study: paper-scale dry run", "snakemake -n --configfile config/paper.yaml", "-", "failed",
                        "-", "-", "-", "report", f"failed: {exc}"))
    directory = study.benchmark_dir("mini")
    wall = study.study_wall_time(directory)
    if wall is None:
        rows.append(_row("study: mini wall time", f"{directory.relative_to(ROOT)}/**/*.tsv", "-", "not run yet", "-",
                        "-", "-", "report", "not run yet"))
    else:
        parts = ", ".join(f"{k} {v / 3600:.2f} h" for k, v in wall.items() if k not in ("total", "jobs"))
        rows.append(_row("study: mini wall time (sum of job seconds)", f"{int(wall['jobs'])} jobs: {parts}", "-",
                        f"{wall['total'] / 3600:.2f} h", "-", "-", "-", "report", "measured"))
    return rows


def table(rows: list[Row]) -> str:
    head = ("| threads | benchmark | setting | peer | ours | ratio peer/ours (medians) | ratio of minimums | "
            "per-repetition ratios | target | verdict (on the medians) |\n|---|---|---|---|---|---|---|---|---|---|\n")
    return head + "".join(f"| {r.threads} | {r.benchmark} | {r.setting} | {r.peer} | {r.ours} | {r.ratio} | "
                          f"{r.min_ratio} | {r.spread} | {r.target} | {r.verdict} |\n" for r in rows)


def markers(cpu: str) -> tuple[str, str]:
    """The markers of ``cpu``'s block in the benchmarks document: one table per CPU model."""
    return f'<!-- benchmarks:begin cpu="{cpu}" -->', f'<!-- benchmarks:end cpu="{cpu}" -->'


def write_doc(path: Path, block: str, cpu: str) -> None:
    """Replace ``cpu``'s block of ``path`` (between its markers) with ``block``, keeping every other CPU's block and
    the prose; a CPU without a block gets a new ``### <cpu>`` section after the last block. Atomic."""
    begin, end = markers(cpu)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin not in text or end not in text:
        section = f"### {cpu}\n\n{begin}\n{end}\n"
        last = text.rfind("<!-- benchmarks:end")
        if last < 0:
            text = text.rstrip() + f"\n\n{section}"
        else:
            cut = text.index("-->", last) + len("-->\n")
            text = f"{text[:cut]}\n{section}{text[cut:]}"
    before, rest = text.split(begin, 1)
    after = rest.split(end, 1)[1]
    atomic.write_text(path, f"{before}{begin}\n{block}{end}{after}")


REPS = {"focal": 15, "train_mini": 10, "train_r50": 5, "infer_mini": 30, "infer_r50": 6, "bf16_train": 8}
QUICK = {"focal": 2, "train_mini": 2, "train_r50": 1, "infer_mini": 2, "infer_r50": 1, "bf16_train": 1}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[2],
                    help="torch intra-op threads for both sides (default 2); several: the timed sections are repeated "
                         "for each, the rest runs with the first")
    ap.add_argument("--quick", action="store_true", help="1-2 repetitions each (checks the harness, not speed)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--runs-dir", type=Path, default=None,
                    help="DIR with fp32/metrics.json and bf16/metrics.json of two mini runs of one seed")
    ap.add_argument("--out", type=Path, default=DOC, help="markdown file to update (default docs/benchmarks.md)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads[0])
    torch.manual_seed(0)
    allocator.keep_freed_memory()  # as `python -m retinanet` does; process-wide, so the peer gets it too
    reps = QUICK if args.quick else REPS
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    log(f"machine: {harness.machine()}; torch threads {args.threads}")
    rows: list[Row] = [machine_row()]
    for threads in args.threads:
        torch.set_num_threads(threads)
        log(f"--- {threads} torch threads")
        if "focal" in args.only:
            rows += bench_focal(reps, log)
        if "train" in args.only:
            rows += bench_train(reps, log)
        if "infer" in args.only:
            rows += bench_infer(reps, log)
    torch.set_num_threads(args.threads[0])
    if "focal" in args.only:
        rows += bench_focal_memory_and_values(log)
    if "bf16" in args.only:
        rows += bench_bf16(reps, log, args.runs_dir)
    if "study" in args.only:
        rows += bench_study(log)
    text = table(rows)
    print(text)
    command = "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:])
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"Measured {now} in {time.perf_counter() - start:.0f} s with\n\n    {command.strip()}\n\n"
             f"on {harness.machine()}; torch threads {', '.join(map(str, args.threads))} (column 'threads'); "
             f"load average at the end {os.getloadavg()[0]:.1f} (other jobs shared the machine).\n\n{text}")
    if not args.no_write:
        write_doc(args.out, block, harness.cpu_model())
        log(f"wrote {args.out}")
    return 0
