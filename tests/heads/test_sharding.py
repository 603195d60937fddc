"""Every head gives the single-process loss and gradients with classes split over 2 and 3 gloo ranks;
matmul_logsumexp over shards and the heads' batch statistics in data parallel equal one process."""
from __future__ import annotations

import pytest
from _helpers_heads import all_cases, missing_kwargs_message
from _helpers_sharding import run_sharded

CASES = all_cases()
TOL = 1e-5


@pytest.fixture(scope="module", params=[2, 3], ids=["world2", "world3"])
def sharded_results(request, tmp_path_factory):
    runnable = [c for c in CASES if c[2] is not None]
    return request.param, run_sharded(request.param, runnable, str(tmp_path_factory.mktemp(f"w{request.param}")))


@pytest.mark.parametrize("mode", ["full", "sampled"])
@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_sharded_equals_single_process(sharded_results, case_id, mode):
    kwargs = {c[0]: c[2] for c in CASES}[case_id]
    if kwargs is None:
        pytest.fail(missing_kwargs_message(case_id))
    world, results = sharded_results
    diff = results[f"{case_id}|{mode}"]
    assert diff["scale"] > 1e-3, "degenerate problem: nothing to compare"
    for key in ("loss", "grad_z", "grad_w"):
        assert diff[key] <= TOL, (world, case_id, mode, key, diff)


@pytest.mark.parametrize("mode", ["full", "sampled"])
def test_matmul_logsumexp_over_shards_equals_single_process(sharded_results, mode):
    world, results = sharded_results
    diff = results[f"matmul_logsumexp|{mode}"]
    assert diff["scale"] > 1.0
    for key in ("value", "grad_a", "grad_b"):
        assert diff[key] <= 1e-12, (world, mode, key, diff)


@pytest.mark.parametrize("name", ["adaface", "curricularface", "magface"])
def test_batch_statistics_are_global_in_data_parallel(sharded_results, name):
    world, results = sharded_results
    diff = results[f"data_parallel|{name}"]
    for key in ("logits", "state", "stats"):
        assert diff[key] <= 1e-5, (world, name, key, diff)
    assert diff["buffers"] == {"adaface": 3, "curricularface": 1, "magface": 0}[name]
