"""Shards of a study (``--points``, ``--shard``) and their merge (``ppl-vae merge-shards``): the merged report is
the report of one run on all the points."""
import json
import math

import pytest

from ppl_vae.cli import main
from ppl_vae.jobs import gap_run, json_bytes, load_gap_report, merge_evaluations, merge_gap_reports, point_range, shard_range
from ppl_vae.jobs.evaluate import Evaluation
from tests.fixtures_runs import default_float32, fake_idx_dataset, train_tiny

GAP = ["--families", "ffg", "--eval-samples", "10", "--max-steps", "10", "--local-samples", "2", "--ais",
       "--ais-steps", "3", "--ais-chains", "4", "--quiet"]
EVALUATE = ["--iwae", "20", "--ais", "--ais-steps", "3", "--ais-chains", "10", "--quiet"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("shards")
    return train_tiny(base / "run", fake_idx_dataset(base / "data"))


def _cli(*argv):
    with default_float32():
        assert main(list(argv)) == 0, argv


def assert_same_report(a, b, path="report"):
    """Equal structure, strings, integers and booleans; floats equal to float32 rounding (a point's q* starts from
    the encoder's output, whose matrix products BLAS rounds by batch shape: about one ulp, relative; a mean, standard
    error or gap of bounds near -550 nats inherits their absolute error, two ulps there = 1.22e-4 — measured on an
    AMD EPYC (AVX2) machine: a log p̂ standard error 6e-6 apart, 2.9e-6 relative)."""
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same_report(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same_report(u, v, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=2e-6, abs_tol=1.25e-4), (path, a, b)
    else:
        assert a == b and type(a) is type(b), (path, a, b)


def test_point_ranges_and_shards():
    assert point_range(100) == (0, 100) and point_range(100, 10) == (0, 10)
    assert point_range(100, points=(20, 30)) == (20, 30)
    assert [shard_range(0, 10, (i, 3)) for i in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert point_range(100, 10, shard=(1, 2)) == (5, 10)
    with pytest.raises(ValueError, match="either n or points"):
        point_range(100, 10, (0, 5))
    with pytest.raises(ValueError, match=r"0 <= a < b <= 100"):
        point_range(100, points=(50, 101))
    with pytest.raises(ValueError, match=r"shard \(i, K\) with 0 <= i < K"):
        shard_range(0, 10, (2, 2))
    with pytest.raises(ValueError, match="at least as many points as shards"):
        shard_range(0, 2, (0, 3))


def test_usage_errors_name_the_option(tiny_run, capsys):
    for argv, message in ((["--points", "5:3"], "--points: expected a range a:b"),
                          (["--shard", "2/2"], "--shard: expected a shard i/K"),
                          (["--points", "0:4", "--num-points", "4"], "--points: not with --num-points"),
                          (["--over-training", "--shard", "0/2"], "--shard: not with --over-training")):
        assert main(["gap", tiny_run, *argv]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_two_gap_shards_merged_are_the_report_of_one_run(tiny_run, tmp_path):
    _cli("gap", tiny_run, "--num-points", "6", "--out", str(tmp_path / "one"), *GAP)
    for shard in ("1/2", "0/2"):
        _cli("gap", tiny_run, "--num-points", "6", "--shard", shard, "--out", str(tmp_path / "shards"), *GAP)
    shards = sorted((tmp_path / "shards").glob("*.json"))
    assert [p.name for p in shards] == ["gap_test_points_0-3.json", "gap_test_points_3-6.json"]  # named by range
    _cli("merge-shards", *map(str, shards), "--out", str(tmp_path / "merged"), "--quiet")
    one, merged = tmp_path / "one", tmp_path / "merged"
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in merged.iterdir())
    assert (one / "gap_test.md").read_text() == (merged / "gap_test.md").read_text()
    assert_same_report(json.loads((one / "gap_test.json").read_text()), json.loads((merged / "gap_test.json").read_text()))
    assert json_bytes(load_gap_report(shards[0]).to_dict()) == shards[0].read_bytes()  # reads back exactly


@pytest.mark.slow
def test_merging_refuses_overlaps_holes_and_other_studies(tiny_run, tmp_path, capsys):
    options = dict(families=("ffg",), eval_samples=4, max_steps=2)
    with default_float32():
        a, b, c = (gap_run(tiny_run, points=p, **options) for p in ((0, 2), (1, 3), (3, 4)))
        other = gap_run(tiny_run, points=(2, 3), seed=1, **options)
    with pytest.raises(ValueError, match="0:2 and 1:3 overlap"):
        merge_gap_reports([b, a])
    with pytest.raises(ValueError, match="0:2 and 3:4 leave out"):
        merge_gap_reports([a, c])
    with pytest.raises(ValueError, match=r"the same settings, but \['seed'\] differ"):
        merge_gap_reports([a, other])
    a.meta["points"] = [0, 3]  # a shard file edited by hand (a tester's case): it claims a point it does not hold
    with pytest.raises(ValueError, match=r"Expected the shard of points 0:3 to hold 3 points, got \[2\]"):
        merge_gap_reports([a, c])
    a.meta["points"] = [0, 2]
    (tmp_path / "gap.json").write_bytes(json_bytes(a.to_dict()))
    _cli("evaluate", tiny_run, "--points", "0:2", "--out", str(tmp_path / "e.json"), "--quiet")
    assert main(["merge-shards", str(tmp_path / "gap.json"), str(tmp_path / "e_points_0-2.json")]) == 2
    assert "one kind" in capsys.readouterr().err


@pytest.mark.slow
def test_two_evaluate_shards_merged_are_the_evaluation_of_one_run(tiny_run, tmp_path):
    _cli("evaluate", tiny_run, "--num-points", "8", "--out", str(tmp_path / "one" / "evaluation_test.json"), *EVALUATE)
    for shard in ("0/2", "1/2"):
        _cli("evaluate", tiny_run, "--num-points", "8", "--shard", shard, "--out",
             str(tmp_path / "shards" / "evaluation_test.json"), *EVALUATE)
    shards = sorted((tmp_path / "shards").glob("*.json"))
    assert [p.name for p in shards] == ["evaluation_test_points_0-4.json", "evaluation_test_points_4-8.json"]
    _cli("merge-shards", *map(str, shards), "--out", str(tmp_path / "merged"), "--quiet")
    one = json.loads((tmp_path / "one" / "evaluation_test.json").read_text())
    merged = json.loads((tmp_path / "merged" / "evaluation_test.json").read_text())
    assert one["pilots"] and one["estimates"]["log_p_hat"]["from"] == merged["estimates"]["log_p_hat"]["from"]
    assert_same_report(one, merged)
    parts = [Evaluation.from_dict(json.loads(p.read_text())) for p in shards]
    assert merge_evaluations(parts[::-1]).to_dict() == merge_evaluations(parts).to_dict()  # any order
