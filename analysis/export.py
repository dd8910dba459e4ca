"""``results/<scale>/study/``: the study's data that the notebooks and the report read, small enough to commit.

CLI::

    python -m analysis.export --study work/<scale>/study.json --out results/<scale>/study

The export holds the manifest (``study.json``) and, under the same relative paths as in the study's folder, every
file it names: each run's ``metrics.json``, Table 1e's timing files, the run configs, and from each run folder
``result.json`` (status, wall time), ``provenance.json`` (commit, packages, host, device) and ``log.jsonl`` (the
training curves). Figure 4's loss samples (megabytes) become their summary, ``fig4_cdf.json``
(:mod:`analysis.fig4_summary`). No checkpoints, detections or samples. Every path in the exported manifest is
relative to its folder, and the manifest says where it came from (``"export"``), which makes
:class:`analysis.study_io.Study` resolve its paths there.

Every file is parsed on the way: a missing or malformed one stops the export with an error naming it, as does a
file outside the study's folder or a path field that was not exported. The export is written to a temporary folder
beside ``--out`` and renamed into place, so an interrupted export leaves the previous one (or none), never a partial
folder that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisInputError
from analysis.study_io import Study, load_loss_samples, load_study, read_json, read_log, read_metrics, read_timing

EXPORT_DIR = "study"
"""The export's folder inside ``results/<scale>/``."""
MANIFEST = "study.json"
FIG4_SUMMARY = "fig4_cdf.json"
RUN_FILES = ("result.json", "provenance.json", "log.jsonl")
"""What is kept of a run folder (the rest: checkpoints, the final model, locks)."""
PATH_FIELDS = ("metrics", "timing", "result", "config", "dir", "samples")
"""Manifest fields that name files or folders (``metrics`` and ``timing``: one path or a mapping seed -> path)."""


def export_dir(results: str | Path) -> Path:
    """The export's folder of a results folder (``results/<scale>``)."""
    return Path(results) / EXPORT_DIR


def _check_result(path: Path) -> dict:
    data = read_json(path, "run result")
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        raise AnalysisInputError(f"{path}: run result must be a JSON object with a string 'status'")
    return data


def _check_provenance(path: Path) -> None:
    if not isinstance(read_json(path, "provenance file"), dict):
        raise AnalysisInputError(f"{path}: provenance file must hold a JSON object")


def _check_config(path: Path) -> None:
    from retinanet.config_parsing import read_yaml_mapping

    read_yaml_mapping(path, "run config", AnalysisInputError)


CHECKS = {"metrics": read_metrics, "timing": read_timing, "result": _check_result, "config": _check_config}
"""How each kind of file is checked before it is copied (a malformed one raises, naming it)."""


class _Exporter:
    """Copies the files a manifest names into ``dest`` (each once) and rewrites their paths."""

    def __init__(self, study: Study, dest: Path) -> None:
        self.study, self.dest = study, dest
        self.source = study.path.parent.resolve()
        self.copied: dict[Path, str] = {}
        self.files = self.bytes = 0

    def relative(self, value: Any, where: str) -> tuple[Path, str]:
        """A manifest path: the file it names and its path relative to the study's folder."""
        if not isinstance(value, str):
            raise AnalysisInputError(f"{self.study.path}: {where} must be a path, got {value!r}")
        src = self.study.resolve(value).resolve()
        if not src.is_relative_to(self.source):
            raise AnalysisInputError(f"{self.study.path}: {where} = {value} lies outside the study's folder "
                                     f"{self.source}; it cannot be exported")
        return src, src.relative_to(self.source).as_posix()

    def copy(self, src: Path, rel: str) -> str:
        if src not in self.copied:
            out = self.dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
            self.files, self.bytes = self.files + 1, self.bytes + out.stat().st_size
            self.copied[src] = rel
        return self.copied[src]

    def file(self, kind: str, value: Any, where: str) -> str:
        src, rel = self.relative(value, where)
        if src not in self.copied:
            CHECKS[kind](src)
        return self.copy(src, rel)

    def run_dir(self, value: Any, where: str) -> str:
        """The kept files of a run folder (:data:`RUN_FILES`); a completed run must have its training log."""
        src, rel = self.relative(value, where)
        if not src.is_dir():
            raise AnalysisInputError(f"{src}: run folder not found ({self.study.path}: {where})")
        status = _check_result(src / "result.json")["status"]
        _check_provenance(src / "provenance.json")
        log = src / "log.jsonl"
        if log.is_file() or status == "completed":  # a run that diverged before its first log step has none
            if not read_log(log):
                raise AnalysisInputError(f"{log}: training log of a {status} run is empty")
        for name in RUN_FILES:
            if (src / name).is_file():
                self.copy(src / name, f"{rel}/{name}")
        return rel

    def fig4(self, value: Any, where: str) -> str:
        from analysis.fig4_summary import summarize, summary_json

        src, _ = self.relative(value, where)
        out = self.dest / FIG4_SUMMARY
        out.write_text(json.dumps(summary_json(summarize(load_loss_samples(src))), separators=(",", ":")) + "\n")
        self.files, self.bytes = self.files + 1, self.bytes + out.stat().st_size
        return FIG4_SUMMARY

    def rewrite(self, node: Any, where: str) -> Any:
        """The manifest with every path field exported and rewritten (``samples`` becomes ``summary``)."""
        if isinstance(node, list):
            return [self.rewrite(v, f"{where}[{i}]") for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            at = f"{where}.{key}".lstrip(".")
            if key == "samples":
                out["summary"] = self.fig4(value, at)
            elif key == "dir":
                out[key] = self.run_dir(value, at)
            elif key in ("metrics", "timing") and isinstance(value, dict):
                out[key] = {seed: self.file(key, p, f"{at}.{seed}") for seed, p in value.items()}
            elif key in PATH_FIELDS:
                out[key] = self.file(key, value, at)
            else:
                out[key] = self.rewrite(value, at)
        return out


def _leftover_paths(node: Any, prefixes: tuple[str, ...], where: str = "") -> list[str]:
    """Fields of the exported manifest that still name a file of the study's folder (absolute, or under its
    relative prefix): a path field this module does not know, which a reader of the export would not find."""
    if isinstance(node, dict):
        return [w for k, v in node.items() for w in _leftover_paths(v, prefixes, f"{where}.{k}".lstrip("."))]
    if isinstance(node, list):
        return [w for i, v in enumerate(node) for w in _leftover_paths(v, prefixes, f"{where}[{i}]")]
    return [f"{where} = {node}"] if isinstance(node, str) and node.startswith(prefixes) else []


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` folder to ``out``, replacing a previous export (renamed away first, then
    removed): at every moment ``out`` is absent or complete."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-old-", dir=out.parent))
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old)


def export_study(manifest: str | Path, out: str | Path) -> tuple[Path, int, int]:
    """Export the study of ``manifest`` to the folder ``out`` (module docstring); returns the exported manifest's
    path, the number of files and their total size in bytes."""
    study = load_study(manifest)
    if study.exported:
        raise AnalysisInputError(f"{study.path}: already an exported study; export the DAG's manifest instead")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private; the export is not
    try:
        exporter = _Exporter(study, tmp)
        data = exporter.rewrite(study.data, "")
        prefixes = ("/",) if study.path.parent == Path(".") else ("/", f"{study.path.parent.as_posix()}/")
        leftover = _leftover_paths(data, prefixes)
        if leftover:
            raise AnalysisInputError(f"{study.path}: fields naming files that were not exported: "
                                     f"{'; '.join(leftover[:5])}")
        data["export"] = {"source": study.path.as_posix(), "files": exporter.files + 1}
        text = json.dumps(data, indent=1, allow_nan=False) + "\n"
        (tmp / MANIFEST).write_text(text)
        total = exporter.bytes + len(text.encode())
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / MANIFEST, data["export"]["files"], total


def main(argv: list[str] | None = None) -> int:
    import argparse

    from analysis.cli import run_cli

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, help="the DAG's manifest, work/<scale>/study.json")
    parser.add_argument("--out", required=True, help="the export's folder, results/<scale>/study")

    def run(args) -> None:
        path, files, size = export_study(args.study, args.out)
        print(f"exported {files} files ({size / 1024:.0f} KiB) to {path.parent}")

    return run_cli(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
