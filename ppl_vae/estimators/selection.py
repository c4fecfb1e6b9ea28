"""log p̂(x) from several estimators without breaking the lower bound: choose with a pilot, report a fresh estimate.

Each estimator in use here (IWAE with any proposal, AIS) is, per data point, a *stochastic lower bound*:
:math:`\\mathbb{E}[\\log \\hat p(x)] \\le \\log p(x)` (Jensen on an unbiased estimate of :math:`p(x)`). The per-point
maximum over several such estimates is not: it keeps the luckiest draw, and a heavy-tailed proposal's IWAE can land
above :math:`\\log p(x)` (Cremer et al. 2018 took that maximum). Here the choice of estimator for each point is made
on an independent *pilot* run (its own random numbers, a fraction of the budget); the reported value is the chosen
estimator's full-budget estimate, whose randomness the choice never saw. Conditionally on the choice it is still a
stochastic lower bound, so :math:`\\log\\hat p(x)` is one too, per point.
"""
from __future__ import annotations

import torch

__all__ = ["select_by_pilot"]


def select_by_pilot(full: dict[str, torch.Tensor], pilot: dict[str, torch.Tensor],
                    pilot_khat: dict[str, torch.Tensor] | None = None, khat_threshold: float = 0.7,
                    ) -> tuple[torch.Tensor, list[str]]:
    """Per point, the full-budget estimate of the candidate whose pilot estimate is highest, among the candidates
    whose pilot Pareto k̂ (if given) is below ``khat_threshold`` (all of them where none is).

    Screening by the pilot's k̂ keeps heavy-tailed proposals — whose single estimates scatter widely, above
    log p(x) too — out of the choice; it uses only the pilot's random numbers, so the reported value keeps its
    lower-bound property.

    :param full: ``{name: (N,)}`` full-budget estimates (nats), each a stochastic lower bound of ``log p(x)``.
    :param pilot: ``{name: (N,)}`` estimates of the same candidates from independent random numbers.
    :param pilot_khat: ``{name: (N,)}`` Pareto k̂ of the pilot's importance weights, for the candidates that have
        weights (IWAE); candidates without an entry are never screened out.
    :param float khat_threshold: the k̂ above which a candidate is left out of the choice.
    :returns: ``(log_p_hat (N,), chosen)`` with ``chosen[n]`` the name of the candidate used for point ``n``.
    :raises ValueError: if the dicts do not name the same candidates, or shapes differ.
    """
    if not full or set(full) != set(pilot):
        raise ValueError(f"Expected pilot estimates for exactly the candidates {sorted(full)}, got {sorted(pilot)}")
    names = list(full)
    shapes = {tuple(full[k].shape) for k in names} | {tuple(pilot[k].shape) for k in names}
    if len(shapes) != 1:
        raise ValueError(f"Expected every estimate to have the same (N,) shape, got {sorted(shapes)}")
    if len(names) == 1:
        return full[names[0]], [names[0]] * full[names[0]].numel()
    device = full[names[0]].device
    pilots = torch.stack([pilot[k].to(device) for k in names])
    pilots = torch.where(torch.isnan(pilots), torch.full_like(pilots, -torch.inf), pilots)
    if pilot_khat:
        heavy = torch.stack([pilot_khat[k].to(device) >= khat_threshold if k in pilot_khat else
                             torch.zeros_like(pilots[0], dtype=torch.bool) for k in names])
        heavy = heavy & ~heavy.all(0, keepdim=True)  # where every candidate is heavy-tailed, keep them all
        pilots = torch.where(heavy, torch.full_like(pilots, -torch.inf), pilots)
    choice = pilots.argmax(0)
    values = torch.stack([full[k] for k in names]).gather(0, choice[None]).squeeze(0)
    return values, [names[i] for i in choice.tolist()]
