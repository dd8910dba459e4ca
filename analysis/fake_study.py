"""A fake study for tests and for trying the notebooks without training: smoke-like run outputs
(metrics.json, result.json, provenance.json, log.jsonl, timing.json, a loss-samples .npz) and their ``study.json``.

The numbers are made up (half the paper's AP plus seed noise; CE with the plain init and α = .10 diverge); nothing
here is a result. CLI: ``python -m analysis.fake_study --out DIR`` -> DIR/study.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from analysis.paper_values import load_paper_values

ALPHAS_1B = (0.25, 0.5, 0.75)
FIG7_GRID = [(g, b) for g in (1.0, 2.0, 4.0) for b in (-1.0, 0.0, 1.0)]
DIVERGED = {("1a", "alpha=0.1"), ("5.1", "init=zero")}


def _run(root: Path, name: str, seed: int, ap: dict | None, *, timing: float | None = None) -> dict:
    """Write one fake run (``ap`` None: diverged); return its paths."""
    d = root / "runs" / f"{name}-s{seed}"
    d.mkdir(parents=True, exist_ok=True)
    diverged = ap is None
    iters = 20
    log = [{"iteration": i, "loss_cls": 1.2 / (1 + 0.2 * i), "loss_box": 0.5 / (1 + 0.1 * i),
            "loss": 1.2 / (1 + 0.2 * i) + 0.5 / (1 + 0.1 * i), "lr": 0.01} for i in range(1, iters + 1, 2)]
    (d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    (d / "result.json").write_text(json.dumps({"status": "diverged" if diverged else "completed",
                                               "iteration": 7 if diverged else iters, "wall_s": 3.0 + seed}))
    (d / "provenance.json").write_text(json.dumps({"git": {"commit": "fake", "dirty": False},
                                                   "device": {"type": "cpu", "name": "fake CPU"}}))
    cols = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    metrics = {c: 0.0 for c in cols} if diverged else {c: ap.get(c) for c in cols}
    metrics.update(status="diverged" if diverged else "completed", num_images=8)
    (d / "metrics.json").write_text(json.dumps(metrics))
    out = {"dir": str(d), "metrics": str(d / "metrics.json")}
    if timing is not None:
        (d / "timing.json").write_text(json.dumps({
            "status": "diverged" if diverged else "completed",
            "ms_per_image_median": None if diverged else timing, "device": {"name": "fake CPU"}}))
        out["timing"] = str(d / "timing.json")
    return out


def _ap(paper_row, rng: np.random.Generator, shift: float = 0.0) -> dict:
    return {c: max(0.0, 0.5 * (v or 0.0) + shift + float(rng.normal(0, 0.3))) if c not in ("APs",) else None
            for c, v in paper_row.values.items() if c != "time"}


def write_fake_study(root: str | Path, seeds=(0, 1), scale: str = "smoke") -> Path:
    """Write the fake study under ``root``; return the path of its ``study.json``."""
    root = Path(root)
    rng = np.random.default_rng(0)
    pv = load_paper_values()
    runs: dict[str, dict] = {}
    tables: dict[str, list] = {}

    def entry(tid: str, key: str, name: str, ap_fn, timing=None) -> dict:
        paths = {}
        for s in seeds:
            ap = None if (tid, key) in DIVERGED else ap_fn()
            r = _run(root, name, s, ap, timing=None if timing is None else timing * (1 + 0.02 * s))
            runs[f"{name}-s{s}"] = {"dir": r["dir"], "result": r["dir"] + "/result.json", "metrics": r["metrics"]}
            paths[s] = r
        e = {"key": key, "run": name, "seeds": list(seeds), "metrics": {str(s): p["metrics"] for s, p in paths.items()}}
        if timing is not None:
            e["timing"] = {str(s): p["timing"] for s, p in paths.items()}
        return e

    for tid, t in pv.tables.items():
        if tid == "1b":
            tables[tid] = []
            for row in t.rows:
                cands = []
                for a in ALPHAS_1B:
                    name = f"fake-1b-{row.key}-a{a:g}"
                    e = entry(tid, row.key, name, lambda row=row, a=a: _ap(row, rng, -4 * abs(a - row.extra["alpha"])))
                    cands.append({"alpha": a, "run": name, "metrics": e["metrics"]})
                tables[tid].append({"key": row.key, "candidates": cands})
            continue
        tables[tid] = [entry(tid, row.key, f"fake-{tid}-{row.key}", lambda row=row: _ap(row, rng),
                             timing=row.values.get("time") / 10 if tid == "1e" else None)
                       for row in t.rows if row.values.get("AP") is not None or row.status == "diverged"]
    fig7 = []
    for g, b in FIG7_GRID:
        name = f"fake-fl*-g{g:g}-b{b:g}"
        paths = {}
        for s in seeds:
            ap = None if b < 0 and g >= 4 else {"AP": 14.0 + g - abs(b) + 0.2 * s, "AP50": 20.0, "AP75": 9.0}
            paths[str(s)] = _run(root, name, s, ap)["metrics"]
        fig7.append({"gamma": g, "beta": b, "run": name, "metrics": paths})
    samples = root / "fig4_samples.npz"
    np.savez(samples, pos_logits=rng.normal(1.5, 1.5, 400).astype(np.float32),
             neg_logits=rng.normal(-5.0, 2.0, 20000).astype(np.float32), num_images=np.asarray(8),
             num_neg_total=np.asarray(50000))
    study = {"scale": scale, "seeds": list(seeds),
             "deviations": [{"field": "solver.iterations", "paper": 90000, "ours": 20, "reason": "fake study"}],
             "hardware": "fake CPU", "tables": tables,
             "figures": {"fig4": {"run": "fake-1d-method=FL", "samples": str(samples)}, "fig7": fig7,
                         "fig2": {"table": "1e"}},
             "runs": runs}
    path = root / "study.json"
    path.write_text(json.dumps(study, indent=1))
    return path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the fake study into")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    print(write_fake_study(parser.parse_args().out, tuple(parser.parse_args().seeds)))
