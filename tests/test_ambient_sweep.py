"""memjax.jobs.ambient_sweep: aggregation over seeds, the Pareto front, config validation, and a
tiny end-to-end sweep (slow)."""

from __future__ import annotations

import json
import math
import os
import runpy

import numpy as np
import pytest

from memjax.jobs import ambient_sweep as sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sweep_config(variant: str = ""):
    return runpy.run_path(os.path.join(ROOT, "configs", "ambient_sweep.py"))["get_config"](variant)


def test_mean_sem_matches_the_textbook_formula():
    v = [0.2, 0.5, 0.35, 0.1]
    m, s = sweep.mean_sem(v)
    assert m == pytest.approx(0.2875)
    dev = [x - 0.2875 for x in v]
    assert s == pytest.approx(math.sqrt(sum(d * d for d in dev) / 3) / 2)
    m1, s1 = sweep.mean_sem([0.7])
    assert m1 == 0.7 and math.isnan(s1)
    with pytest.raises(ValueError, match="values"):
        sweep.mean_sem([])


def test_summarize_groups_conditions_over_seeds():
    rows = [{"objective": "standard", "sigma_tn": None, "seed": s, "memorized": m, "fd": f,
             "median_nn_l2": 1.0} for s, m, f in [(0, 0.6, 2.0), (1, 0.5, 2.2), (2, 0.7, 1.8)]]
    rows += [{"objective": "ambient", "sigma_tn": 0.447, "seed": s, "memorized": m, "fd": f,
              "median_nn_l2": 2.0} for s, m, f in [(0, 0.2, 2.1), (1, 0.3, 2.1)]]
    rows += [{"objective": "ambient", "sigma_tn": 0.9, "seed": 0, "memorized": 0.65, "fd": 3.0,
              "median_nn_l2": 2.5}]
    out = sweep.summarize(rows)
    assert [(r["objective"], r["sigma_tn"], r["n"]) for r in out] == [
        ("standard", None, 3), ("ambient", 0.447, 2), ("ambient", 0.9, 1)]
    assert out[0]["memorized_mean"] == pytest.approx(0.6)
    assert out[0]["memorized_sem"] == pytest.approx(0.1 / math.sqrt(3))
    assert out[1]["fd_mean"] == pytest.approx(2.1) and out[1]["fd_sem"] == pytest.approx(0.0)
    assert out[0]["seeds"] == [0, 1, 2]
    # (0.6, 2.0) and (0.25, 2.1) trade off; (0.65, 3.0) is dominated by both
    assert [r["pareto"] for r in out] == [True, True, False]


def test_pareto_front_on_constructed_points():
    pts = np.array([[0.1, 5.0], [0.2, 3.0], [0.3, 3.0], [0.5, 1.0], [0.4, 4.0], [0.2, 3.0]])
    # [0.3, 3] is dominated by [0.2, 3] (equal in one, lower in the other); [0.4, 4] by [0.2, 3];
    # the duplicate [0.2, 3] points do not dominate each other
    assert sweep.pareto_front(pts).tolist() == [True, True, False, True, False, True]
    assert sweep.pareto_front([[1.0, 1.0]]).tolist() == [True]
    # brute force on random points: on the front iff no point is <= everywhere and < somewhere
    rng = np.random.default_rng(0)
    p = rng.integers(0, 4, size=(40, 2)).astype(float)
    brute = [not any(np.all(q <= x) and np.any(q < x) for q in p) for x in p]
    assert sweep.pareto_front(p).tolist() == brute
    with pytest.raises(ValueError, match="points"):
        sweep.pareto_front(np.zeros((0, 2)))


def test_run_specs_pair_every_seed_and_skip_the_headline_in_the_sweep():
    c = sweep_config()
    c.sweep_sigma_tn = (0.2, c.sigma_tn, 0.9)
    c.sweep_seeds = (0, 5)
    specs = sweep.run_specs(c)
    assert [s.name for s in specs[:6]] == [
        "standard_seed0", "standard_seed1", "standard_seed2",
        "ambient_0.447_seed0", "ambient_0.447_seed1", "ambient_0.447_seed2"]
    assert [(s.sigma_tn, s.seed) for s in specs[6:]] == [(0.2, 0), (0.2, 5), (0.9, 0), (0.9, 5)]
    a = sweep.run_config(c, specs[3])
    assert (a.seed, a.objective.name, a.objective.noise_seed) == (0, "ambient", 0)
    assert a.objective.sigma_tn == pytest.approx(0.5 / math.sqrt(1.25))
    s = sweep.run_config(c, specs[1])
    assert (s.seed, s.objective.name, s.objective.sigma_tn) == (1, "standard", None)
    # the twins share everything but the objective fields and the seed
    assert s.data.to_dict() == a.data.to_dict() and s.model.to_dict() == a.model.to_dict()
    assert s.optim.to_dict() == a.optim.to_dict()


@pytest.mark.parametrize("field,value", [
    ("sigma_tn", 0.0), ("sigma_tn", 1.5), ("sigma_tn", float("nan")),
    ("sweep_sigma_tn", (0.3, 1.0)), ("sweep_sigma_tn", (0.3, -0.1)),
    ("seeds", (0, 0)), ("seeds", (0, -1)), ("seeds", (0.5,)),
    ("sweep_seeds", (True,)), ("num_samples", 1), ("radius", 0.0)])
def test_bad_config_names_the_field(field, value):
    c = sweep_config()
    with c.unlocked():
        c[field] = value
    with pytest.raises(ValueError, match=field):
        sweep.validate_config(c)


def test_empty_seeds_runs_exactly_the_sweep_points():
    c = sweep_config()
    c.seeds, c.sweep_seeds = (), (1, 2)
    c.sweep_sigma_tn = (0.2, c.sigma_tn, 0.9)
    sweep.validate_config(c)
    assert [(s.objective, s.sigma_tn, s.seed) for s in sweep.run_specs(c)] == [
        ("ambient", 0.2, 1), ("ambient", 0.2, 2), ("ambient", 0.9, 1), ("ambient", 0.9, 2)]
    for field, value in [("sweep_seeds", ()), ("sweep_sigma_tn", (c.sigma_tn,))]:
        d = c.copy_and_resolve_references()
        d[field] = value
        with pytest.raises(ValueError, match="seeds: expected at least one run"):
            sweep.validate_config(d)


def test_objectives_picks_the_arms_of_the_headline_pair():
    c = sweep_config()
    c.seeds, c.sweep_seeds = (0, 3), ()
    c.objectives = ("standard",)
    sweep.validate_config(c)
    assert [s.name for s in sweep.run_specs(c)] == ["standard_seed0", "standard_seed3"]
    c.objectives = ("ambient",)
    assert [(s.objective, s.seed) for s in sweep.run_specs(c)] == [("ambient", 0), ("ambient", 3)]
    c.objectives = ("ambient", "standard")
    assert len(sweep.run_specs(c)) == 4
    for value in [(), ("standard", "standard"), ("ddpm",)]:
        d = c.copy_and_resolve_references()
        with d.unlocked():
            d.objectives = value
        with pytest.raises(ValueError, match="objectives"):
            sweep.validate_config(d)


def test_bad_training_field_is_caught_before_any_run():
    c = sweep_config()
    c.train.training.batch_size = 0
    with pytest.raises(ValueError, match="batch_size"):
        sweep.validate_config(c)
    sweep.validate_config(sweep_config())
    sweep.validate_config(sweep_config("tiny"))


def test_shipped_ambient_configs_are_thin_over_the_builder():
    for tag, n in [("300", 300), ("1k", 1000), ("3k", 3000)]:
        path = os.path.join(ROOT, "configs", f"ambient_{tag}.py")
        amb = runpy.run_path(path)["get_config"]()
        std = runpy.run_path(path)["get_config"]("standard")
        assert amb.data.num_train == std.data.num_train == n
        assert (amb.objective.name, std.objective.name) == ("ambient", "standard")
        assert amb.model.to_dict() == std.model.to_dict()


@pytest.mark.slow
def test_tiny_sweep_end_to_end_and_resume(tmp_path):
    """The ``:tiny`` sweep trains, evaluates and reports; a second call reuses every run."""
    c = sweep_config("tiny")
    out = sweep.run(c, str(tmp_path), log=lambda s: None)
    assert [r["name"] for r in out["runs"]] == ["standard_seed0", "ambient_0.447_seed0",
                                                "ambient_0.707_seed0"]
    for r in out["runs"]:
        assert 0.0 <= r["memorized"] <= 1.0 and np.isfinite(r["fd"]) and r["fd"] >= 0.0
        assert r["step"] == c.train.training.num_steps
    assert len(out["summary"]) == 3 and any(r["pareto"] for r in out["summary"])
    assert 0.0 <= out["reference"]["heldout_memorized"] <= 1.0
    for f in ("runs.json", "summary.json", "summary.md", "pareto.png"):
        assert (tmp_path / f).exists()
    assert json.loads((tmp_path / "runs.json").read_text())[0]["name"] == "standard_seed0"
    again = sweep.run(c, str(tmp_path), log=lambda s: None)
    assert [r["fd"] for r in again["runs"]] == [r["fd"] for r in out["runs"]]
    assert all("train_s" not in r for r in again["runs"])   # nothing retrained or re-evaluated


@pytest.mark.parametrize("shard,num_shards", [(3, 3), (-1, 2), (0, 0)])
def test_bad_shard_names_the_arguments(tmp_path, shard, num_shards):
    with pytest.raises(ValueError, match="shard"):
        sweep.run(sweep_config("tiny"), str(tmp_path), shard=shard, num_shards=num_shards)
    assert not (tmp_path / "runs").exists()   # rejected before anything is trained
