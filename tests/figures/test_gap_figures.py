"""The gap bars name the family each study's gaps are measured with."""
import matplotlib
import torch

from ppl_vae.figures.gap import plot_gap_bars
from ppl_vae.gap import InferenceGap


def _gap(family):
    n = 3
    return InferenceGap(log_p_hat=torch.full((n,), -10.0), elbo_amortized=torch.full((n,), -13.0),
                        elbo_local={"ffg": torch.full((n,), -12.0), "flow": torch.full((n,), -11.0)},
                        encoder_family=family)


def test_columns_of_different_encoder_families_are_labelled_by_bar(tmp_path, monkeypatch):
    seen = {}
    original = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):
        ax = fig.axes[0]
        seen["ticks"] = [t.get_text() for t in ax.get_xticklabels()]
        seen["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        seen["heights"] = [round(p.get_height(), 6) for p in ax.patches]
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    plot_gap_bars({"FFG encoder": _gap("ffg"), "Flow encoder": _gap("flow")}, tmp_path / "two.png")
    assert seen["ticks"] == ["FFG encoder\n(gaps with q*_FFG)", "Flow encoder\n(gaps with q*_Flow)"]
    assert seen["legend"] == ["approximation", "amortization"]
    assert seen["heights"] == [2.0, 1.0, 1.0, 2.0]  # approximation, amortization of each: with its own q*
    plot_gap_bars({"a": _gap("ffg"), "b": _gap("ffg")}, tmp_path / "one.png")
    assert seen["ticks"] == ["a", "b"] and seen["legend"] == ["approximation (q*_FFG)", "amortization (q*_FFG)"]
