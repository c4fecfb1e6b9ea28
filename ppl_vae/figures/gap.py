"""Figures of the inference gap: the decomposition as bars, semi-amortized refinement curves, gaps over training."""
from __future__ import annotations

from pathlib import Path

from ppl_vae.gap.decomposition import FAMILY_NAMES, InferenceGap, _mean_se

from .figure import new_figure, save_figure

__all__ = ["plot_gap_bars", "plot_semi_amortized", "plot_gap_over_training"]




def plot_gap_bars(columns: dict[str, InferenceGap], path) -> Path:
    """One stacked bar per study: approximation gap (bottom) and amortization gap (top), which add up to the
    inference gap ``log p̂(x) - L[q]``; error bars are standard errors over data points."""
    fig, ax = new_figure((1.8 + 1.6 * len(columns), 4.5))
    names = list(columns)
    families = [FAMILY_NAMES[columns[name].encoder_family] for name in names]
    # the gaps are measured with q* of each study's encoder family: one family in the legend, or one per bar
    one = len(set(families)) == 1
    suffix = f" (q*_{families[0]})" if one and families else ""
    for i, name in enumerate(names):
        g = columns[name]
        approx, approx_se = _mean_se(g.approximation_gap())
        amort, amort_se = _mean_se(g.amortization_gap())
        ax.bar(i, approx, color="tab:blue", yerr=approx_se, capsize=4,
               label=f"approximation{suffix}" if i == 0 else None)
        ax.bar(i, amort, bottom=approx, color="tab:orange", yerr=amort_se, capsize=4,
               label=f"amortization{suffix}" if i == 0 else None)
        ax.text(i, approx + max(amort, 0) + amort_se, f"{approx + amort:.2f}", ha="center", va="bottom")
    ax.set_xticks(range(len(names)), names if one else [f"{n}\n(gaps with q*_{f})" for n, f in zip(names, families)])
    ax.set_ylabel("nats per data point")
    ax.set_title("Inference gap = approximation + amortization")
    ax.axhline(0, color="black", lw=0.8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return save_figure(fig, path)


def plot_semi_amortized(gap: InferenceGap, path) -> Path:
    """Mean ELBO after ``k`` steps of per-datapoint refinement started from the encoder, against ``k``.

    :raises ValueError: if the gap has no refinement curve.
    """
    if not gap.curve:
        raise ValueError("This InferenceGap has no refinement curve (record_steps was empty)")
    steps = sorted(gap.curve)
    means = [_mean_se(gap.curve[k])[0] for k in steps]
    fig, ax = new_figure((6, 4))
    ax.plot([max(k, 0.5) for k in steps], means, "o-", label=f"refined from the encoder (q*_{FAMILY_NAMES[gap.encoder_family]} family)")
    ax.axhline(_mean_se(gap.elbo_amortized)[0], color="tab:orange", ls="--", label="L[q] (encoder)")
    ax.axhline(_mean_se(gap.elbo_local[gap.encoder_family])[0], color="tab:green", ls="--", label="L[q*] (converged)")
    ax.axhline(_mean_se(gap.log_p_hat)[0], color="black", ls=":", label="log p̂(x)")
    ax.set_xscale("log")
    ax.set_xlabel("refinement steps (step 0 drawn at 0.5)")
    ax.set_ylabel("mean ELBO (nats)")
    ax.set_title("Semi-amortized inference")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_gap_over_training(epochs: list[int], gaps: list[InferenceGap], path) -> Path:
    """Approximation, amortization and inference gaps measured at checkpoints over training."""
    fig, ax = new_figure((6, 4))
    for label, fn, color in (("approximation", InferenceGap.approximation_gap, "tab:blue"),
                             ("amortization", InferenceGap.amortization_gap, "tab:orange"),
                             ("inference (total)", InferenceGap.inference_gap, "black")):
        stats = [_mean_se(fn(g)) for g in gaps]
        ax.errorbar(epochs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3, label=label, color=color)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per data point")
    ax.set_title("Gaps over training")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
