"""The inference gap as a report: Markdown tables in the layout of Cremer, Li & Duvenaud (2018)'s Table 2, and the
JSON a report is saved as. Text only; the figures are :mod:`ppl_vae.figures.gap`'s and the files are written by
:mod:`ppl_vae.jobs.gap`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .decomposition import FAMILY_NAMES, InferenceGap

__all__ = ["GapReport", "GapOverTraining", "markdown_table"]


def markdown_table(columns: dict[str, InferenceGap]) -> str:
    """A Markdown table with one column per study (e.g. per training guide or per split), rows as in
    Cremer et al.'s Table 2, cells ``mean ± s.e.``; last rows name the q* family each column's gaps use and the
    share of points whose q* of each fitted family hit the step cap (did not meet its stopping rule).

    :param dict columns: column title -> :class:`~ppl_vae.gap.InferenceGap`.
    :returns: the table.
    :raises ValueError: if ``columns`` is empty.
    """
    if not columns:
        raise ValueError("Expected at least one column, got none")
    names = list(columns)
    rows = list(dict.fromkeys(r[0] for g in columns.values() for r in g.rows()))
    values = {c: {r[0]: r for r in g.rows()} for c, g in columns.items()}
    lines = ["| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for row in rows:
        cells = []
        for c in names:
            r = values[c].get(row)
            cells.append("" if r is None else f"{r[1]:.2f} ± {r[2]:.2f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    families = [columns[c].encoder_family for c in names]
    lines.append("| gaps measured with | " + " | ".join("—" if f is None else f"q*_{FAMILY_NAMES[f]}" for f in families)
                 + " |")
    for family in FAMILY_NAMES:  # per fitted family: the share of points whose q* stopped at the cap, not converged
        if any(family in columns[c].converged for c in names):
            caps = [columns[c].hit_cap(family) if family in columns[c].converged else float("nan") for c in names]
            lines.append(f"| q*_{FAMILY_NAMES[family]} hit the step cap | "
                         + " | ".join("—" if math.isnan(v) else f"{100 * v:.0f} %" for v in caps) + " |")
    return "\n".join(lines)


@dataclass
class GapReport:
    """Gaps of one model measured on several sets of points (one column each).

    :ivar dict columns: column title (e.g. ``"test (1000 points)"``) -> :class:`~ppl_vae.gap.InferenceGap`.
    :ivar str description: a paragraph saying what was measured and how, written above the table.
    :ivar dict meta: what was measured (e.g. the run and its epoch), written first in :meth:`to_dict`.
    """

    columns: dict[str, InferenceGap]
    description: str = ""
    meta: dict = field(default_factory=dict)

    def table(self) -> str:
        """The Markdown table (:func:`markdown_table`).

        :returns: the table.
        """
        return markdown_table(self.columns)

    def markdown(self) -> str:
        """The description and the table.

        :returns: Markdown text ending with a newline.
        """
        return (f"{self.description}\n\n" if self.description else "") + self.table() + "\n"

    def to_dict(self, per_point: bool = True) -> dict:
        """``meta``, the description and, per column, :meth:`InferenceGap.to_dict`.

        :param bool per_point: include every point's bounds.
        :returns: a JSON-serializable dict.
        """
        return {**self.meta, "description": self.description,
                "columns": {k: g.to_dict(per_point) for k, g in self.columns.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> GapReport:
        """The report :meth:`to_dict` wrote with its per-point values (a saved report's JSON, loaded), exactly.

        :param dict data: :meth:`to_dict`'s output.
        :returns: the report.
        :raises ValueError: if ``data`` is not a gap report with per-point values.
        """
        if not isinstance(data, dict) or not isinstance(data.get("columns"), dict):
            raise ValueError(f"Expected a gap report (a dict with 'columns'), got {type(data).__name__}"
                             f"{' with keys ' + str(sorted(data)) if isinstance(data, dict) else ''}")
        meta = {k: v for k, v in data.items() if k not in ("columns", "description")}
        columns = {k: InferenceGap.from_dict(v) for k, v in data["columns"].items()}
        return cls(columns, data.get("description", ""), meta)


@dataclass
class GapOverTraining:
    """Gaps of the same points measured at checkpoints kept over training.

    :ivar list epochs: the checkpoints' epochs.
    :ivar list gaps: one :class:`~ppl_vae.gap.InferenceGap` per epoch.
    :ivar dict meta: what was measured, written first in :meth:`to_dict`.
    """

    epochs: list[int]
    gaps: list[InferenceGap]
    meta: dict = field(default_factory=dict)

    def table(self) -> str:
        """The Markdown table with one column per epoch.

        :returns: the table.
        """
        return markdown_table({f"epoch {e}": g for e, g in zip(self.epochs, self.gaps)})

    def to_dict(self) -> dict:
        """``meta``, the epochs and each epoch's summary (no per-point values).

        :returns: a JSON-serializable dict.
        """
        return {**self.meta, "epochs": list(self.epochs), "gaps": [g.to_dict(per_point=False) for g in self.gaps]}
