"""Multi-process jobs: 2 processes x 2 CPU devices give the numbers of 1 process x 4 devices.

Each process is a fresh Python with ``--xla_force_host_platform_device_count=2`` joined through
:func:`memjax.parallel.initialize` and a localhost coordinator (gloo collectives on CPU).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs ease_of_reproduction, nearest_neighbours, a sampler and 20 train steps on the mesh of
# every device of the job; prints the results as one JSON line.
_WORK = r"""
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
from memjax import parallel
if len(sys.argv) > 1:
    multi = parallel.initialize(f"localhost:{sys.argv[1]}", 2, int(sys.argv[2]),
                                initialization_timeout=60)
    assert multi and jax.process_count() == 2
import jax.numpy as jnp, numpy as np
import memjax as mj
from memjax import data, sampling, training
from memjax.metrics import memorization
sys.path.insert(0, "tests")
from test_training import eps_loss, tiny_config, tiny_model

sde = mj.VPSDE()
digits = data.load_digits()
score = mj.scores.empirical(jnp.asarray(digits[200:248]), sde)
rows = parallel.local_rows(16, parallel.data_mesh())
out = {"devices": jax.device_count(), "local": jax.local_device_count(),
       "rows": [rows.start, rows.stop]}
ease = mj.volume.ease_of_reproduction(score, sde, digits[:13], num_axes=2, steps=2,
                                      batch_size=5, key=jax.random.key(7))
out["ease"] = np.asarray(ease, np.float64).tolist()
queries = digits[:37] + 0.05 * np.random.default_rng(0).standard_normal(digits[:37].shape)
dist, idx = memorization.nearest_neighbours(queries, digits[40:240], k=3)
out["knn_dist"], out["knn_idx"] = np.asarray(dist).tolist(), np.asarray(idx).tolist()
kept, _ = memorization.nearest_neighbours(queries, digits[40:240], k=3, gather=False)
assert kept.is_fully_addressable == (jax.process_count() == 1)     # a global array, on request
np.testing.assert_array_equal(parallel.fetch(kept), np.asarray(dist))
sampler = sampling.make_sampler(score, sde, digits.shape[1:], sampler="sde", num_steps=8,
                                batch_size=6)
out["samples"] = np.asarray(sampler(jax.random.key(3), 13)).ravel().tolist()

cfg = tiny_config()
cfg.data.num_train = 64
mesh = parallel.data_mesh()
ds = data.load_dataset(cfg.data)
model = tiny_model(cfg)
model.train()
g, params, other = training.split_model(model)
opt = training.make_optimizer(cfg.optim, 20)
state = parallel.replicate(training.init_state(params, other, opt), mesh)
step = training.make_train_step(g, eps_loss(training.make_sde(cfg)), opt, seed=0, ema_decay=0.9,
                                mesh=mesh)
losses = []
for s in range(20):
    state, m = step(state, training.global_batch(ds, 16, 0, s, mesh))
    losses.append(float(m["loss"]))
out["losses"] = losses
out["params"] = np.concatenate([np.ravel(a) for a in
                                jax.tree.leaves(parallel.fetch(state["params"]))]).tolist()
print(json.dumps(out))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(num_devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=_ROOT)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={num_devices}").strip()
    return env


def _spawn(code: str, args: list, num_devices: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                            cwd=_ROOT, env=_env(num_devices), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen, timeout: int = 600) -> dict:
    return _results([proc], timeout)[0]


def _first_error(err: str) -> str:
    """The first Python traceback in ``err`` (else its end): JAX's shutdown errors that
    follow a process's own error are long."""
    start = err.find("Traceback (most recent call last)")
    return err[start:start + 4000] if start >= 0 else err[-3000:]


def _results(procs: list, timeout: int = 600) -> list[dict]:
    """The JSON line of every process of a job; on a failure, every process's stderr (the
    first error is often in another process than the one that failed last)."""
    done = []
    for proc in procs:
        try:
            done.append(proc.communicate(timeout=timeout))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    errors = [f"process {i} failed ({p.returncode}):\n{_first_error(err)}"
              for i, (p, (_, err)) in enumerate(zip(procs, done)) if p.returncode != 0]
    assert not errors, "\n".join(errors)
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in done]


@pytest.mark.slow
def test_two_processes_match_one_process():
    port = _free_port()
    multi = _results([_spawn(_WORK, [port, i], 2) for i in range(2)])
    single = _result(_spawn(_WORK, [], 4))
    assert single["devices"] == 4 and single["local"] == 4 and single["rows"] == [0, 16]
    assert [res["rows"] for res in multi] == [[0, 8], [8, 16]]   # each loads only its rows
    for res in multi:
        assert res["devices"] == 4 and res["local"] == 2
        assert res["knn_idx"] == single["knn_idx"]
        for key in ("ease", "knn_dist", "samples", "losses", "params"):
            np.testing.assert_allclose(res[key], single[key], rtol=1e-5, atol=1e-5, err_msg=key)
    del multi[0]["rows"], multi[1]["rows"]
    assert multi[0] == multi[1]                   # every process holds the whole result


# -- start-up errors -------------------------------------------------------------------------------
_CLUSTER_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID",
                 "OMPI_MCA_orte_hnp_uri", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES")


@pytest.fixture
def no_cluster(monkeypatch):
    for name in _CLUSTER_VARS:
        monkeypatch.delenv(name, raising=False)


_BAD = r"""
import json, sys
from absl import flags
from memjax.scripts import distributed
flags.FLAGS([sys.argv[0], f"--coordinator_address=localhost:{sys.argv[1]}", "--num_processes=2",
             "--process_id=1", "--initialization_timeout=2"])
try:
    distributed.initialize_from_flags()
    import jax
    print(json.dumps({"error": None, "processes": jax.process_count()}))
except RuntimeError as e:
    import jax
    print(json.dumps({"error": str(e), "initialized": jax.distributed.is_initialized()}))
"""


def test_unreachable_coordinator_fails_with_what_to_set():
    """A worker whose coordinator never answers stops with an error; it never runs alone."""
    res = _result(_spawn(_BAD, [_free_port()], 2), timeout=120)
    assert res["error"] is not None and not res["initialized"]
    for words in ("coordinator_address", "no coordinator answered within 2", "--num_processes",
                  "JAX_COORDINATOR_ADDRESS"):
        assert words in res["error"]


def test_initialize_argument_errors(no_cluster):
    import jax
    from memjax import parallel

    with pytest.raises(ValueError, match="coordinator_address: expected HOST:PORT"):
        parallel.initialize("localhost", 2, 1)
    with pytest.raises(ValueError, match=r"process_id: expected an integer in \[0, 1\]"):
        parallel.initialize("localhost:1234", 2, 2)
    with pytest.raises(ValueError, match="num_processes, process_id: expected a value"):
        parallel.initialize("localhost:1234")
    with pytest.raises(RuntimeError, match="cannot resolve 'no-such-host.invalid'"):
        parallel.initialize("no-such-host.invalid:1234", 2, 1, initialization_timeout=1)
    with socket.socket() as busy:                    # process 0 must be able to listen there
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"cannot listen on port {port}"):
            parallel.initialize(f"localhost:{port}", 2, 0)
        jax.devices()                                # too late: the backend is running
        with pytest.raises(RuntimeError, match="must run first thing in main"):
            parallel.initialize(f"localhost:{port}", 2, 1)


def test_initialize_is_a_no_op_on_one_process(no_cluster, monkeypatch):
    import jax
    from memjax import parallel

    assert parallel.initialize() is False
    assert parallel.initialize("localhost:1234", 1, 0) is False
    monkeypatch.setenv("SLURM_JOB_ID", "7")          # a one-task SLURM job is one process
    for name, value in (("SLURM_STEP_NODELIST", "node1"), ("SLURM_NTASKS", "1"),
                        ("SLURM_PROCID", "0"), ("SLURM_LOCALID", "0")):
        monkeypatch.setenv(name, value)
    assert parallel.initialize() is False
    assert not jax.distributed.is_initialized()


# -- resuming on another topology ------------------------------------------------------------------
_TRAIN = r"""
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
from memjax import parallel
workdir, stop = sys.argv[1], int(sys.argv[2])
if len(sys.argv) > 3:
    assert parallel.initialize(f"localhost:{sys.argv[3]}", 2, int(sys.argv[4]),
                               initialization_timeout=120)
import numpy as np
from memjax import training
sys.path.insert(0, "tests")
from test_training import run_tiny, tiny_config, tiny_model

cfg = tiny_config(checkpoint_every=3)            # 6 steps of 8 images, checkpoint at 3 and 6
out = {"processes": jax.process_count(), "devices": jax.device_count()}
if stop == 0:                                    # resume: first the abstract-template restore
    back = training.load_trained(workdir, step=3, model_fn=tiny_model)
    out["restored_step"] = back.step
res = run_tiny(cfg, workdir, stop_after=stop or None)
out["start"] = res.start_step
out["losses"] = [r["loss"] for r in training.read_metrics(workdir)]
out["params"] = np.concatenate([np.ravel(a) for a in
                                jax.tree.leaves(parallel.fetch(res.state["params"]))]).tolist()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_checkpoint_of_two_processes_resumes_on_one(tmp_path):
    """Stopped after 4 steps on 2 processes x 2 devices (checkpoint at 3, written by both), the
    run resumes on 1 process x 2 devices and logs the losses of an uninterrupted 1-process run
    on 4 devices (1e-5); the checkpoint also restores into an abstract template there."""
    port, shared = _free_port(), str(tmp_path / "shared")
    part = _results([_spawn(_TRAIN, [shared, 4, port, i], 2) for i in range(2)])
    assert [r["processes"] for r in part] == [2, 2] and part[0]["start"] == 0
    assert sorted(os.listdir(os.path.join(shared, "checkpoints"))) == ["3"]
    resumed = _result(_spawn(_TRAIN, [shared, 0], 2))
    full = _result(_spawn(_TRAIN, [str(tmp_path / "full"), 6], 4))
    assert (resumed["processes"], resumed["devices"], resumed["start"]) == (1, 2, 3)
    assert resumed["restored_step"] == 3 and full["devices"] == 4
    assert len(resumed["losses"]) == len(full["losses"]) == 6
    np.testing.assert_allclose(resumed["losses"], full["losses"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resumed["params"], full["params"], rtol=1e-5, atol=1e-6)
