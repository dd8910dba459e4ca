"""Figures 1, 5, 6 math (analysis/analytic.py): the losses against the paper's formulas and statements, and the
derivatives by autograd against Appendix B (eq. 9-11); Figure 4's per-sample losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import analytic
from analysis.analytic import FIG5_SPECS, LossSpec

X = torch.linspace(-12.0, 12.0, 481, dtype=torch.float64)


def test_fig1_curves_match_eq_1_and_4():
    p_t = torch.tensor([0.01, 0.1, 0.5, 0.9, 0.99], dtype=torch.float64)
    ce = analytic.loss_vs_pt(0.0, p_t)
    torch.testing.assert_close(ce, -torch.log(p_t))
    for gamma in (0.5, 1.0, 2.0, 5.0):
        torch.testing.assert_close(analytic.loss_vs_pt(gamma, p_t), -((1 - p_t) ** gamma) * torch.log(p_t))


def test_paper_statements_about_fl_gamma_2():
    """§3.2: with gamma = 2, p_t = 0.9 has 100x lower loss than CE and p_t ~ 0.968 1000x lower; for p_t <= .5 the
    loss is scaled down by at most 4x."""
    ratio = analytic.loss_vs_pt(0.0, torch.tensor([0.9, 0.968])) / analytic.loss_vs_pt(2.0, torch.tensor([0.9, 0.968]))
    assert float(ratio[0]) == pytest.approx(100.0, rel=1e-6)
    assert float(ratio[1]) == pytest.approx(1000.0, rel=0.03)  # "p_t ~ 0.968": 1 / 0.032^2 = 977
    p = torch.linspace(0.01, 0.5, 50, dtype=torch.float64)
    assert float((analytic.loss_vs_pt(0.0, p) / analytic.loss_vs_pt(2.0, p)).max()) == pytest.approx(4.0, rel=1e-6)


def test_fig5_curves_match_eq_6_to_8():
    x_t = torch.tensor([-3.0, -0.5, 0.0, 0.7, 4.0], dtype=torch.float64)
    ce, fl, fls21, fls40 = (analytic.loss_vs_xt(s, x_t) for s in FIG5_SPECS)
    p_t = torch.sigmoid(x_t)
    torch.testing.assert_close(ce, -torch.log(p_t))
    torch.testing.assert_close(fl, -((1 - p_t) ** 2) * torch.log(p_t))
    torch.testing.assert_close(fls21, -torch.log(torch.sigmoid(2 * x_t + 1)) / 2)
    torch.testing.assert_close(fls40, -torch.log(torch.sigmoid(4 * x_t)) / 4)
    assert (fl <= ce).all()  # FL <= CE everywhere


@pytest.mark.parametrize("spec", [*FIG5_SPECS, LossSpec("FL", 0.5), LossSpec("FL", 5.0), LossSpec("FL*", 1.0, -1.0)],
                         ids=lambda s: s.label)
def test_autograd_matches_eq_9_to_11_at_both_labels(spec):
    for label in (0.0, 1.0):
        y = torch.full_like(X, label)
        auto = analytic.autograd_derivative(spec, X, y)
        torch.testing.assert_close(auto, analytic.paper_derivative(spec, X, y), atol=1e-7, rtol=1e-6)


def test_eq_9_to_11_against_finite_differences():
    """The reference formulas themselves, independent of retinanet.modeling.losses: central differences of eq. 1,
    4, 8."""
    x = torch.linspace(-6, 6, 121, dtype=torch.float64)
    h = 1e-6

    def ce(v, y):
        return -torch.nn.functional.logsigmoid((2 * y - 1) * v)

    def fl(v, y):
        xt = (2 * y - 1) * v
        return -((1 - torch.sigmoid(xt)) ** 2) * torch.nn.functional.logsigmoid(xt)

    def fls(v, y):
        return -torch.nn.functional.logsigmoid(4 * (2 * y - 1) * v + 0.5) / 4

    for f, spec in ((ce, LossSpec("FL", 0.0)), (fl, LossSpec("FL", 2.0)), (fls, LossSpec("FL*", 4.0, 0.5))):
        for label in (0.0, 1.0):
            y = torch.full_like(x, label)
            numeric = (f(x + h, y) - f(x - h, y)) / (2 * h)
            torch.testing.assert_close(analytic.paper_derivative(spec, x, y), numeric, atol=1e-6, rtol=1e-5)


def test_derivative_limits_of_appendix_b():
    """'the derivative tends to -1 or 0 for high-confidence predictions' (y = +1, x_t -> -inf / +inf)."""
    for spec in FIG5_SPECS:
        d = analytic.derivative_vs_xt(spec, torch.tensor([-30.0, 30.0], dtype=torch.float64))
        assert float(d[0]) == pytest.approx(-1.0, abs=1e-6) and float(d[1]) == pytest.approx(0.0, abs=1e-6)


def test_check_derivatives_fails_loudly_on_a_disagreement(monkeypatch):
    assert analytic.check_derivatives(FIG5_SPECS, X) < 1e-7
    monkeypatch.setattr(analytic, "paper_derivative", lambda spec, x, y: torch.zeros_like(torch.as_tensor(x)))
    with pytest.raises(analytic.DerivativeMismatch, match=r"eq\. 9"):
        analytic.check_derivatives(FIG5_SPECS, X)


def test_fig4_sample_losses_are_focal_losses():
    from analysis.fig4_data import half_loss_fractions, sample_losses

    logits = np.array([-2.0, 0.0, 3.0])
    p = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(sample_losses(logits, True, 2.0), -((1 - p) ** 2) * np.log(p), rtol=1e-10)
    np.testing.assert_allclose(sample_losses(logits, False, 0.0), -np.log(1 - p), rtol=1e-10)
    rng = np.random.default_rng(0)
    half = half_loss_fractions(rng.normal(1, 1, 2000), rng.normal(-4, 1.5, 20000))
    assert half["neg"][2.0] < half["neg"][0.0] / 2  # focusing concentrates the negatives' loss
    assert all(0 < f <= 0.5 for f in half["pos"].values())


def test_figure_scripts_write_png_and_pdf(tmp_path):
    from analysis import fig1, fig5, fig6

    for module in (fig1, fig5, fig6):
        png, pdf = tmp_path / f"{module.__name__}.png", tmp_path / f"{module.__name__}.pdf"
        assert module.main(["--out", str(png), str(pdf)]) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files left
