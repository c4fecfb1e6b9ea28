"""The main jobs of ``ppl-vae`` as library functions: each command only parses its arguments and calls one of
these (training is :func:`ppl_vae.runs.train_run`). A job takes a :class:`~ppl_vae.runs.Run` or its directory,
checks every argument before it starts, returns a result object, and writes its files all or none.

Layering: these functions sit above :mod:`ppl_vae.runs` and below :mod:`ppl_vae.cli`.
"""
from ppl_vae.gap import GapReport

from .evaluate import STRONG_ESTIMATORS, Evaluation, evaluate, evaluate_run, load_evaluation, log_p_hat, merge_evaluations
from .gap import (
    FAMILIES,
    gap_over_training,
    gap_report_name,
    gap_run,
    load_gap_report,
    merge_gap_reports,
    save_gap_over_training,
    save_gap_report,
)
from .inputs import SPLITS, as_run, first_points, point_range, require_vae, select_points, shard_range, split_data
from .outputs import check_output_dir, check_output_file, json_bytes, json_safe, staged_directory, write_json
from .plot import plot_run
from .posterior import DIAGNOSTICS_COLUMNS, SAMPLERS, PosteriorReport, diagnostics_markdown, posterior_run

__all__ = [
    "DIAGNOSTICS_COLUMNS", "Evaluation", "FAMILIES", "GapReport", "PosteriorReport", "SAMPLERS", "SPLITS", "STRONG_ESTIMATORS",
    "as_run", "check_output_dir", "check_output_file", "diagnostics_markdown", "evaluate", "evaluate_run",
    "first_points", "gap_over_training", "gap_report_name", "gap_run", "json_bytes", "json_safe", "load_evaluation",
    "load_gap_report", "log_p_hat", "merge_evaluations", "merge_gap_reports", "plot_run", "point_range",
    "posterior_run", "require_vae", "save_gap_over_training", "save_gap_report", "select_points", "shard_range",
    "split_data", "staged_directory", "write_json",
]
