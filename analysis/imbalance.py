"""The imbalance the paper is about, as one number beside COCO's: the positive rate per classification output.

``python -m retinanet anchor-stats --out FILE`` measures it for a dataset under a run's anchors and matcher: fg
anchors / (anchors x K), the mean over images of each image's rate (section 3's "extreme foreground-background
class imbalance"; issue 18). This module reads such files and states a dataset's rate beside COCO's: COCO's is measured
by the same command on COCO's annotations where a file is given (the paper scale's own data, or ``data/coco`` when
present), else it is the published value :data:`retinanet.tools.anchor_stats.COCO_PUBLISHED`, cited as such. The
report's imbalance section, the calibration table and the regime table (:mod:`analysis.regime`) use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analysis.errors import AnalysisInputError
from analysis.study_io import read_json
from retinanet.tools.anchor_stats import COCO_PUBLISHED


@dataclass(frozen=True)
class Rate:
    """A positive rate per classification output: ``value`` is the mean over images of fg / (anchors x K),
    ``pooled`` the sum of fg over the sum of anchors x K (None for a published value); ``what`` says where it comes
    from."""

    value: float
    pooled: float | None
    what: str

    @property
    def published(self) -> bool:
        """A value from the literature, not measured here."""
        return self.pooled is None

    def format(self) -> str:
        """``9.4e-04``: two significant digits, as the rates are quoted everywhere."""
        return f"{self.value:.1e}"


def load_rate(path: str | Path) -> Rate:
    """The rate per output of an ``anchor-stats --out`` file; AnalysisInputError naming the file if it is missing or
    was written without the positive rates (an older anchor-stats: rerun it)."""
    stats = read_json(path, "anchor statistics")
    try:
        per_output = stats["positive_rate"]["per_output"]
        value, pooled = float(per_output["mean_over_images"]), float(per_output["pooled"])
        what = (f"measured: {stats['images']} images of {stats['annotation_file']} ({stats['split']} split), "
                f"K = {stats['num_classes']}, {stats['anchors_per_image']:.0f} anchors and "
                f"{stats['foreground_per_image']:.1f} foreground anchors per image")
    except (KeyError, TypeError, ValueError) as exc:
        raise AnalysisInputError(f"{path}: anchor statistics without the positive rate per output ({exc}); rerun "
                                 f"python -m retinanet anchor-stats --out {path}") from None
    return Rate(value, pooled, what)


def coco_rate(path: str | Path | None) -> Rate:
    """COCO's rate: measured (``path``, an ``anchor-stats`` file of COCO's annotations) or, without one, the
    published value with its source."""
    if path is not None:
        return load_rate(path)
    return Rate(COCO_PUBLISHED.value, None, f"published, not measured here: {COCO_PUBLISHED.source}")


def beside_coco(rate: Rate, coco: Rate) -> str:
    """``9.4e-04 (pooled 9.4e-04), 94x COCO's ~1.0e-05``: a rate against COCO's in one phrase."""
    pooled = "" if rate.published else f" (pooled {rate.pooled:.1e})"
    times = f"{rate.value / coco.value:.3g}x" if coco.value > 0 else "-"
    return f"{rate.format()}{pooled}, {times} COCO's {'~' if coco.published else ''}{coco.format()}"


def report_section(scale: str, stats: str | Path, coco_stats: str | Path | None = None) -> str:
    """The report's section: this scale's rate per classification output beside COCO's, with both sources."""
    rate, coco = load_rate(stats), coco_rate(coco_stats)
    return "\n".join([
        "## Imbalance: the positive rate per classification output", "",
        "The focal loss addresses the extreme foreground-background imbalance of dense detectors (sections 1 and 3). "
        "Its size is the positive rate per classification output: foreground anchors / (anchors x K classes) per "
        "image, averaged over the images of the training split (`python -m retinanet anchor-stats`).", "",
        "| data | positive rate per output | source |", "|---|---|---|",
        f"| scale `{scale}` | {beside_coco(rate, coco)} | {rate.what} |",
        f"| COCO, RetinaNet | {coco.format()} | {coco.what} |", "",
    ])
