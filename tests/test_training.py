"""Training loop: optimiser, EMA, data-parallel step (1 vs 8 devices), checkpoints, resume, loading."""

from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from memjax import data, training


# -- a tiny model and loss with the library's signatures --------------------------------------------
class TinyNet(nnx.Module):
    """eps-predictor: per-pixel MLP on (x, t) plus dropout (exercises the train/eval switch)."""

    def __init__(self, channels=1, hidden=16, *, rngs):
        self.l1 = nnx.Linear(channels + 1, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, channels, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)

    def __call__(self, x, t, y=None):
        tt = jnp.broadcast_to(t[:, None, None, None], x.shape[:3] + (1,))
        h = nnx.silu(self.l1(jnp.concatenate([x, tt], -1)))
        return self.l2(self.drop(h))


def eps_loss(sde):
    def loss_fn(model, batch, key):
        x0 = batch["image"]
        kt, kz = jax.random.split(key)
        t = jax.random.uniform(kt, (x0.shape[0],), minval=sde.t_min, maxval=sde.t_max)
        z = jax.random.normal(kz, x0.shape)
        tb = t[:, None, None, None]
        xt = sde.alpha(tb) * x0 + sde.sigma(tb) * z
        err = jnp.mean((model(xt, t) - z) ** 2, axis=(1, 2, 3))
        return jnp.mean(err), {"mse_max": jnp.max(err)}
    return loss_fn


def tiny_config(**training_overrides):
    c = training.default_config()
    c.data.num_train = 8
    c.data.flip = True
    c.model.image_size = 8
    c.model.channels = 1
    c.model.base_channels = 8
    c.model.channel_mults = (1,)
    c.model.attn_resolutions = ()
    c.model.num_res_blocks = 1
    c.training.batch_size = 8
    c.training.num_steps = 6
    c.training.log_every = 1
    c.training.checkpoint_every = 3
    c.training.sample_every = -1
    c.training.progress = False
    c.training.tensorboard = False
    c.training.update(training_overrides)
    return c


def tiny_model(config):
    return TinyNet(rngs=nnx.Rngs(config.seed))


_LOSS = eps_loss(training.make_sde(training.default_config()))   # one object: steps are reused


def run_tiny(config, workdir, **kw):
    return training.train(config, str(workdir), loss_fn=_LOSS, model_fn=tiny_model, **kw)


# -- optimiser and EMA -----------------------------------------------------------------------------
def test_warmup_schedule_and_clipping():
    c = training.default_config().optim
    c.warmup_steps = 10
    c.learning_rate = 1e-3
    sched = training.learning_rate_schedule(c, 100)
    np.testing.assert_allclose([sched(0), sched(5), sched(10), sched(50)],
                               [0, 5e-4, 1e-3, 1e-3], rtol=1e-6)
    c.schedule = "cosine"
    sched = training.learning_rate_schedule(c, 100)
    assert float(sched(10)) == pytest.approx(1e-3) and float(sched(100)) == pytest.approx(0, abs=1e-9)
    # clipping: an update from a huge gradient equals the update from the clipped gradient
    c = training.default_config().optim
    c.grad_clip = 1.0
    opt = training.make_optimizer(c, 10)
    ref = optax.adam(c.learning_rate, b1=c.beta1, b2=c.beta2, eps=c.eps)
    p = {"w": jnp.ones(3)}
    g = {"w": jnp.array([30.0, 40.0, 0.0])}          # norm 50
    u, _ = opt.update(g, opt.init(p), p)
    u_ref, _ = ref.update({"w": g["w"] / 50.0}, ref.init(p), p)
    np.testing.assert_allclose(u["w"], u_ref["w"], rtol=1e-5)


def test_ema_decay_warmup():
    assert float(training.ema_decay_at(0, 0.9999, True)) == pytest.approx(0.1)
    assert float(training.ema_decay_at(10**6, 0.9999, True)) == pytest.approx(0.9999)
    assert float(training.ema_decay_at(0, 0.99, False)) == pytest.approx(0.99)


def test_train_step_matches_hand_computation():
    """One jitted step equals value_and_grad + optax + EMA written out by hand."""
    cfg = tiny_config()
    sde = training.make_sde(cfg)
    model = tiny_model(cfg)
    model.train()
    g, params, other = training.split_model(model)
    opt = training.make_optimizer(cfg.optim, 10)
    state = training.init_state(params, other, opt)
    loss_fn = eps_loss(sde)
    step = training.make_train_step(g, loss_fn, opt, seed=3, ema_decay=0.5, ema_warmup=False)
    ds = data.load_dataset(cfg.data)
    batch = {k: jnp.asarray(v) for k, v in data.make_batch(ds, np.arange(8)).items()}
    key = jax.random.fold_in(jax.random.key(3), 0)

    def obj(p):
        return loss_fn(training.merge_model(g, p, other), batch, key)[0]

    @jax.jit                                   # one program, not op-by-op dispatch
    def by_hand(params):
        loss, grads = jax.value_and_grad(obj)(params)
        upd, _ = opt.update(grads, opt.init(params), params)
        return loss, optax.apply_updates(params, upd)

    loss, want = by_hand(params)
    new, metrics = step(jax.tree.map(jnp.array, state), batch)   # copies: the step donates
    assert int(new["step"]) == 1
    np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 new["params"], want)
    jax.tree.map(lambda e, p0, p1: np.testing.assert_allclose(e, 0.5 * p0 + 0.5 * p1, rtol=1e-5,
                                                              atol=1e-7),
                 new["ema"], params, want)
    assert "mse_max" in metrics and "grad_norm" in metrics


def test_train_step_same_on_1_and_8_devices(on_devices):
    code = r"""
    import json, jax, jax.numpy as jnp, numpy as np, sys
    sys.path.insert(0, "tests")
    from test_training import tiny_config, tiny_model, eps_loss
    from memjax import data, training, parallel
    cfg = tiny_config()
    sde = training.make_sde(cfg)
    ds = data.load_dataset(cfg.data)
    out = {}
    for n in (1, 8):
        mesh = parallel.data_mesh(jax.devices()[:n])
        model = tiny_model(cfg); model.train()
        g, params, other = training.split_model(model)
        opt = training.make_optimizer(cfg.optim, 10)
        state = jax.device_put(training.init_state(params, other, opt), parallel.replicated(mesh))
        step = training.make_train_step(g, eps_loss(sde), opt, seed=0, ema_decay=0.9, mesh=mesh)
        losses = []
        for s in range(3):
            b = training.global_batch(ds, 16, 0, s, mesh)
            state, m = step(state, b)
            losses.append(float(m["loss"]))
        out[n] = (losses, [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(state["params"])])
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(out[1][1], out[8][1]))
    print(json.dumps({"ndev": len(jax.devices()), "l1": out[1][0], "l8": out[8][0], "diff": diff}))
    """
    res = on_devices(code, num_devices=8)
    assert res["ndev"] == 8
    np.testing.assert_allclose(res["l1"], res["l8"], rtol=1e-5)
    assert res["diff"] < 1e-5


# -- the loop, checkpoints, resume -------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One uninterrupted 6-step run, and one stopped after 4 steps (checkpoint at 3), resumed."""
    root = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(sample_every=6, num_samples=4, sample_steps=3, tensorboard=True)
    full = run_tiny(cfg, root / "full")
    run_tiny(cfg, root / "part", stop_after=4)
    part_ckpts = sorted(os.listdir(root / "part" / "checkpoints"))
    resumed = run_tiny(cfg, root / "part")
    return dict(cfg=cfg, root=root, full=full, resumed=resumed, part_ckpts=part_ckpts)


def _copy(runs, tmp_path, name="full"):
    dst = tmp_path / name
    shutil.copytree(runs["root"] / name, dst)
    return dst


def test_train_writes_workdir_and_resumes_exactly(runs):
    root, full, resumed = runs["root"], runs["full"], runs["resumed"]
    ref = [r["loss"] for r in training.read_metrics(str(root / "full"))]
    assert len(ref) == 6 and full.start_step == 0 and int(full.state["step"]) == 6
    assert sorted(os.listdir(root / "full" / "checkpoints")) == ["3", "6"]
    for f in ("data_split.npz", "config.json", "metrics.jsonl"):
        assert (root / "full" / f).exists()
    # the interrupted run had a checkpoint at 3 and logged step 4; it resumed from 3
    assert runs["part_ckpts"] == ["3"] and resumed.start_step == 3
    recs = training.read_metrics(str(root / "part"))
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal([r["loss"] for r in recs], ref)
    jax.tree.map(np.testing.assert_array_equal, full.state["params"], resumed.state["params"])
    jax.tree.map(np.testing.assert_array_equal, full.state["ema"], resumed.state["ema"])
    jax.tree.map(np.testing.assert_array_equal, full.state["opt_state"],
                 resumed.state["opt_state"])


def test_extending_num_steps_continues_the_run(runs, tmp_path):
    wd = _copy(runs, tmp_path)
    cfg = runs["cfg"].copy_and_resolve_references()
    cfg.training.num_steps = 7
    cfg.training.sample_every = -1
    res = run_tiny(cfg, wd)
    assert res.start_step == 6 and int(res.state["step"]) == 7
    assert [r["step"] for r in training.read_metrics(str(wd))] == list(range(1, 8))


def test_partial_checkpoint_raises_and_is_untouched(runs, tmp_path):
    wd = _copy(runs, tmp_path)
    os.makedirs(wd / "checkpoints" / "9")          # a step directory never committed
    with pytest.raises(training.CheckpointError, match="partial or corrupt"):
        run_tiny(runs["cfg"], wd)
    assert os.listdir(wd / "checkpoints" / "9") == []
    assert sorted(os.listdir(wd / "checkpoints")) == ["3", "6", "9"]


def test_corrupt_checkpoint_raises(runs, tmp_path):
    wd = _copy(runs, tmp_path)
    for root, _, files in os.walk(wd / "checkpoints" / "6"):
        for f in files:
            if f not in training.Checkpointer.COMMIT_MARKERS and "METADATA" not in f:
                os.remove(os.path.join(root, f))
    with pytest.raises(training.CheckpointError, match="could not be restored"):
        run_tiny(runs["cfg"], wd)
    with pytest.raises(training.CheckpointError, match="could not be restored"):
        training.load_trained(str(wd), model_fn=tiny_model)
    assert sorted(os.listdir(wd / "checkpoints")) == ["3", "6"]


def test_orbax_temporary_directory_is_ignored(runs, tmp_path):
    wd = _copy(runs, tmp_path)
    os.makedirs(wd / "checkpoints" / "9.orbax-checkpoint-tmp-1234")
    assert run_tiny(runs["cfg"], wd).start_step == 6


def test_resume_with_another_config_is_refused(runs, tmp_path):
    wd = _copy(runs, tmp_path)
    other = runs["cfg"].copy_and_resolve_references()
    other.optim.learning_rate = 1e-3
    with pytest.raises(training.CheckpointError, match=r"optim\.learning_rate"):
        run_tiny(other, wd)


def test_sample_grid_and_tensorboard(runs):
    wd = runs["root"] / "full"
    s = np.load(wd / "samples" / "step_00000006.npz")["samples"]
    assert s.shape == (4, 8, 8, 1) and np.all(np.isfinite(s))
    assert (wd / "samples" / "step_00000006.png").exists()
    assert any(f.startswith("events") for f in os.listdir(wd / "tensorboard"))
    rec = training.read_metrics(str(wd))[-1]
    assert {"loss", "grad_norm", "learning_rate", "steps_per_sec", "images_per_sec",
            "mse_max"} <= set(rec)


def test_load_trained_returns_ema_model_and_split(runs):
    wd, full = runs["root"] / "full", runs["full"]
    tr = training.load_trained(str(wd), model_fn=tiny_model)
    assert tr.step == 6 and tr.model.drop.deterministic
    np.testing.assert_array_equal(tr.dataset.train, full.dataset.train)
    _, p, _ = training.split_model(tr.model)
    jax.tree.map(np.testing.assert_array_equal, p, full.state["ema"])
    raw = training.load_trained(str(wd), step=3, ema=False, model_fn=tiny_model)
    assert raw.step == 3
    score = training.trained_score_fn(tr)
    x, t = tr.dataset.train[0], 0.5
    eps = tr.model(x[None], jnp.array([t]))[0]
    np.testing.assert_allclose(score(x, t), -eps / tr.sde.sigma(t), rtol=1e-5)
    with pytest.raises(ValueError, match="step"):
        training.load_trained(str(wd), step=4, model_fn=tiny_model)


def test_pf_euler_sample_on_gaussian_data():
    """With the exact eps of N(0, s^2 I) data the sampler's output has variance ~ s^2."""
    sde = training.make_sde(training.default_config())
    s2 = 0.25

    def apply(x, t, y):
        tb = t[:, None]
        var = sde.alpha(tb) ** 2 * s2 + sde.variance(tb)
        score = -x / var
        return -sde.sigma(tb) * score          # eps = -sigma * score

    z = jax.random.normal(jax.random.key(0), (4000, 2))
    x = training.pf_euler_sample(apply, sde, z, num_steps=500)
    np.testing.assert_allclose(np.var(np.asarray(x), axis=0), [s2, s2], rtol=0.08)


# -- config validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("path,value,field", [
    ("training.bach_size", 4, "training.bach_size"),
    ("optimizer", "adam", "optimizer"),
    ("training.batch_size", 0, "training.batch_size"),
    ("optim.optimizer", "sgd", "optim.optimizer"),
    ("model.image_size", 16, "model.image_size"),
    ("model.attn_resolutions", (3,), "model.attn_resolutions"),
    ("sde.t_min", 2.0, "sde.t_min"),
    ("data.source", "web", "data.source"),
    ("training.ema_decay", 1.0, "training.ema_decay"),
])
def test_invalid_config_names_the_field(path, value, field):
    cfg = tiny_config()
    *parents, leaf = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    with node.unlocked(), node.ignore_type():
        node[leaf] = value
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        training.validate_config(cfg)


def test_invalid_ambient_t_n_names_the_field():
    cfg = tiny_config()
    cfg.objective.name = "ambient"
    cfg.objective.t_n = 1.5
    with pytest.raises(ValueError, match=r"objective\.t_n"):
        training.validate_config(cfg)
    cfg.objective.t_n = 0.3
    training.validate_config(cfg)


def test_steps_per_dispatch_gives_the_same_run_and_resumes_exactly(runs, tmp_path):
    """k steps per dispatch (lax.scan) computes the steps of k = 1: same losses and weights
    (to float rounding of the fused program), and an interrupted k = 4 run resumes exactly."""
    ref = training.read_metrics(str(runs["root"] / "full"))
    cfg = tiny_config(steps_per_dispatch=4, log_every=4, checkpoint_every=4, sample_every=-1)
    full = run_tiny(cfg, tmp_path / "scan")
    got = training.read_metrics(str(tmp_path / "scan"))
    assert [r["step"] for r in got] == [4, 6]
    ref_loss = [r["loss"] for r in ref]
    np.testing.assert_allclose([r["loss"] for r in got],
                               [np.mean(ref_loss[:4]), np.mean(ref_loss[4:])], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 full.state["params"], runs["full"].state["params"])
    part = tmp_path / "scan_part"
    run_tiny(cfg, part, stop_after=5)                  # checkpoint at 4, stopped after 5
    assert sorted(os.listdir(part / "checkpoints")) == ["4"]
    resumed = run_tiny(cfg, part)
    assert resumed.start_step == 4
    jax.tree.map(np.testing.assert_array_equal, full.state["params"], resumed.state["params"])
    np.testing.assert_array_equal([r["loss"] for r in training.read_metrics(str(part))],
                                  [r["loss"] for r in got])
