r"""The evaluate job (``memjax-evaluate``): memorization and diversity of generated images.

Compares generated images (an ``.npz``, an image folder, or the config's known-answer demo set)
with a training set (any memjax dataset, or a saved split) and writes under the workdir:

* ``metrics.json``: nearest-neighbour similarity summaries and fractions in the named feature
  space (paper 002), AMS / UMS in that space's bands (paper 001 eqs. 14-15; SSCD bands only on
  SSCD features, :mod:`memjax.jobs.feature_space`), the Fréchet distance in that space (FID
  with Inception features), Carlini's normalized L2 and the extracted count (paper 000 eq. 7),
  diverse samples (paper 003), the demo's ground truth when used, and the run information;
* ``features_train.npz`` / ``features_generated.npz``: the cached feature stages;
* ``figures/best_similarity.png``, ``figures/normalized_l2.png``, ``figures/closest_pairs.png``,
  ``figures/tsne_hull.png``;
* ``generated.npz`` / ``train.npz``: the exact images that were compared.

See ``configs/evaluate_digits.py`` for every field. A single pass of pure functions.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import numpy as np

from memjax import workdir as wd

__all__ = ["validate_config", "load_training", "demo_generated", "load_generated",
           "cosine_metrics", "l2_metrics", "evaluate"]

FEATURES = ("pixels", "classifier")
GENERATED_SOURCES = ("demo", "npz", "folder")


# -- inputs ----------------------------------------------------------------------------------------
def validate_config(c) -> None:
    """Raises ``ValueError`` naming the config field at fault (before any heavy work)."""
    from memjax import _checks
    from memjax.data import validate_data_config

    from memjax.jobs import feature_space as fs

    _checks.check_choice("generated.source", c.generated.source, GENERATED_SOURCES)
    fs.check_spec(c.features, "features")
    fs.similarity_bands(c.features, c.memorization.get("bands"), field="memorization.bands")
    _checks.check_choice("memorization.match", c.memorization.match, ("best", "all"))
    _checks.check_choice("diverse.method", c.diverse.method, ("tsne_hull", "knn_support"))
    if c.generated.source in ("npz", "folder") and not c.generated.path:
        raise ValueError(f"generated.path: expected a file or folder for source "
                         f"{c.generated.source!r}")
    _checks.check_positive_int("memorization.n", c.memorization.n)
    _checks.check_positive("memorization.alpha", c.memorization.alpha)
    _checks.check_positive("memorization.delta", c.memorization.delta)
    for name in ("generated.limit", "memorization.block_size", "diverse.max_real"):
        v = c[name.split(".")[0]][name.split(".")[1]]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name}: expected a non-negative integer, got {v!r}")
    if not c.train_split:
        validate_data_config(c.data)


def load_training(c):
    """``(train, heldout)`` images from ``train_split`` or the ``data`` config."""
    from memjax import data

    if c.train_split:
        ds = data.load_split(c.train_split)
    else:
        ds = data.load_dataset(c.data)
    return np.asarray(ds.train, np.float32), np.asarray(ds.heldout, np.float32)


def demo_generated(train: np.ndarray, heldout: np.ndarray, c, seed: int):
    """The known-answer demo set: exact copies, near copies, held-out (novel) images and noise.

    Returns ``(images, truth)``; ``truth`` records which training image each copy came from."""
    g = c.generated
    rng = np.random.default_rng(seed)
    n_copy, n_near, n_novel, n_noise = (int(g.demo_copies), int(g.demo_near),
                                        int(g.demo_novel), int(g.demo_noise))
    if n_copy + n_near > len(train):
        raise ValueError(f"generated.demo_copies + demo_near: at most {len(train)} (the training "
                         f"images), got {n_copy + n_near}")
    if n_novel > len(heldout):
        raise ValueError(f"generated.demo_novel: at most {len(heldout)} (the held-out images), "
                         f"got {n_novel}")
    src = rng.choice(len(train), n_copy + n_near, replace=False)
    copies = train[src[:n_copy]]
    near = np.clip(train[src[n_copy:]] + float(g.demo_near_sigma) *
                   rng.normal(size=(n_near,) + train.shape[1:]), -1, 1).astype(np.float32)
    novel = heldout[rng.choice(len(heldout), n_novel, replace=False)]
    noise = rng.uniform(-1, 1, (n_noise,) + train.shape[1:]).astype(np.float32)
    images = np.concatenate([copies, near, novel, noise]).astype(np.float32)
    kind = np.array(["copy"] * n_copy + ["near"] * n_near + ["novel"] * n_novel +
                    ["noise"] * n_noise)
    truth = {"kind": kind, "source": np.concatenate([src, np.full(n_novel + n_noise, -1)]),
             "counts": {"copy": n_copy, "near": n_near, "novel": n_novel, "noise": n_noise}}
    return images, truth


def load_generated(c, train_shape: tuple) -> np.ndarray:
    """Generated images from an ``.npz`` or an image folder, shaped like the training images."""
    from memjax import data

    g = c.generated
    if g.source == "npz":
        if not os.path.isfile(g.path):
            raise ValueError(f"generated.path: no such file: {g.path!r}")
        with np.load(g.path) as f:
            keys = list(f.files)
            key = g.key if g.key in keys else (keys[0] if len(keys) == 1 else
                                               "samples" if "samples" in keys else None)
            if key is None:
                raise ValueError(f"generated.key: {g.key!r} is not in {g.path!r} (arrays: {keys})")
            images = f[key]
        if images.ndim == 3:
            images = images[..., None]
        images = data.to_unit_range(images, "generated images")
    else:
        cfg = data.data_config(source="folder", path=g.path, num_train=0, num_heldout=0,
                               label_key="", channels=int(train_shape[-1]),
                               image_size=int(train_shape[0]))
        images = data.load_dataset(cfg).train
    if tuple(images.shape[1:]) != tuple(train_shape):
        raise ValueError(f"generated images: expected shape [n, {', '.join(map(str, train_shape))}]"
                         f" (as the training images), got {images.shape}")
    return np.asarray(images, np.float32)


# -- the evaluation --------------------------------------------------------------------------------
def cosine_metrics(c, f_gen, f_train, block, feature_space: str | None = None
                   ) -> tuple[dict, np.ndarray, np.ndarray]:
    """Best cosine similarity of each generated feature vector to the training set (paper 002
    Tables 1, 5; paper 001 Table 4): summary, fractions above thresholds, AMS / UMS in the
    bands of the feature space (:func:`memjax.jobs.feature_space.similarity_bands`)."""
    from memjax import report
    from memjax.jobs import feature_space as fs
    from memjax.metrics import memorization as mem

    mc = c.memorization
    bands, origin = fs.similarity_bands(c.features, mc.get("bands"), field="memorization.bands",
                                        feature_space=feature_space)
    best_sim, best_idx = (np.asarray(a) for a in mem.best_match(f_gen, f_train, measure="cosine",
                                                                block_size=block))
    summ = mem.similarity_summary(best_sim)
    out = {
        "summary": report.to_jsonable(summ),
        "fractions_above": dict(zip([str(t) for t in mc.thresholds], np.asarray(
            mem.similarity_fractions(best_sim, list(mc.thresholds))).tolist())),
        "feature_space": feature_space or str(c.features), "bands_origin": origin,
        "ams_ums": {}}
    for name, band in bands.items():
        if mc.match == "best":   # one nearest-neighbour search serves every band
            r = mem.ams_ums_from_best(best_sim, best_idx, len(f_train), band=band)
        else:
            r = mem.ams_ums(f_gen, f_train, band=band, measure="cosine", match=mc.match,
                            block_size=block)
        out["ams_ums"][name] = {"band": list(band), "ams": float(r.ams), "ums": float(r.ums)}
    out["bands"] = {k: [b.lo, b.hi] for k, b in bands.items()}
    return out, best_sim, best_idx


def l2_metrics(c, gen, train, block) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel L2 and Carlini's normalized L2 (paper 000 eq. 7; paper 001 bands)."""
    from memjax import report
    from memjax.metrics import memorization as mem

    mc = c.memorization
    n = min(int(mc.n), len(train))
    out = {}
    # pixel-space L2 and Carlini's normalized L2 (paper 000 eq. 7; paper 001 bands)
    d1, _ = mem.nearest_neighbours(gen, train, k=1, metric="l2", block_size=block)
    nl2 = mem.normalized_l2(gen, train, n=n, alpha=float(mc.alpha), block_size=block)
    ratio, nl2_idx = np.asarray(nl2.ratio), np.asarray(nl2.index)
    ext = np.asarray(mem.extracted(ratio, float(mc.delta)))
    out["normalized_l2"] = {
        "n": n, "alpha": float(mc.alpha), "delta": float(mc.delta),
        "num_extracted": int(ext.sum()),
        "num_unique_extracted": int(len(np.unique(nl2_idx[ext]))),
        "extracted_fraction": float(ext.mean()),
        "summary": report.to_jsonable(mem.similarity_summary(ratio)), "ams_ums": {}}
    for name, band in list(mem.BANDS["normalized_l2"].items()) + [
            ("extracted", mem.Band(0.0, float(mc.delta), "left"))]:
        if mc.match == "best":
            r = mem.ams_ums_from_best(ratio, nl2_idx, len(train), band=band)
        else:
            r = mem.ams_ums(gen, train, band=band, measure="normalized_l2", n=n,
                            alpha=float(mc.alpha), match=mc.match, block_size=block)
        out["normalized_l2"]["ams_ums"][name] = {"band": list(band), "ams": float(r.ams),
                                                 "ums": float(r.ums)}
    out["l2"] = {"summary": report.to_jsonable(mem.similarity_summary(np.asarray(d1)[:, 0]))}
    return out, ratio, nl2_idx, ext


def _figures(c, fig_dir, gen, train, best_sim, ratio, nl2_idx, cos) -> list:
    from memjax import report
    from memjax.metrics import memorization as mem

    mc = c.memorization
    # figures: histograms (in the feature space's own bands) and the closest pairs
    report.histogram(best_sim, _join(fig_dir, "best_similarity.png"),
                     title=f"best cosine similarity to the training set ({cos['feature_space']})",
                     xlabel=f"cosine similarity in {cos['feature_space']}",
                     thresholds=list(mc.thresholds),
                     bands={f"{k} ({cos['bands_origin'].split(' (')[0]})": tuple(b)
                            for k, b in cos["bands"].items()})
    report.histogram(ratio, _join(fig_dir, "normalized_l2.png"),
                     title="normalized L2 to the nearest training image (eq. 7)",
                     xlabel="normalized L2 (smaller = closer)", thresholds=[float(mc.delta)],
                     bands={k: (b.lo, min(b.hi, 1.0 / float(mc.alpha)))  # ratio <= 1/alpha
                            for k, b in mem.BANDS["normalized_l2"].items()})
    k = min(int(c.report.num_pairs), len(gen))
    order = np.argsort(ratio, kind="stable")[:k]
    report.pairs(gen[order], train[nl2_idx[order]], _join(fig_dir, "closest_pairs.png"),
                 labels=[f"#{nl2_idx[i]}\nnL2 {ratio[i]:.2f}" for i in order],
                 title="closest generated (top) / training (bottom) pairs")
    return [{"generated": int(i), "train": int(nl2_idx[i]), "normalized_l2": float(ratio[i]),
             "cosine": float(best_sim[i])} for i in order]


def _join(a, b):
    return f"{a}/{b}"


def _inputs(c, log):
    train, heldout = load_training(c)
    truth = None
    if c.generated.source == "demo":
        gen, truth = demo_generated(train, heldout, c, int(c.seed))
    else:
        gen = load_generated(c, train.shape[1:])
    if c.generated.limit:
        gen = gen[:int(c.generated.limit)]
        if truth is not None:
            truth = dict(truth, kind=truth["kind"][:len(gen)], source=truth["source"][:len(gen)])
    log(f"[evaluate] {len(gen)} generated vs {len(train)} training images of shape "
        f"{train.shape[1:]}")
    return train, gen, truth


def evaluate(c, workdir: str, *, log: Callable[[str], None] = print) -> dict:
    """Runs the evaluation ``c`` describes and writes its outputs under ``workdir``; returns
    the content of ``metrics.json``."""
    from memjax.jobs import run_info

    validate_config(c)
    t_start = time.perf_counter()
    workdir = str(workdir)
    fig_dir = f"{workdir}/figures"
    train, gen, truth = _inputs(c, log)
    wd.save_npz(f"{workdir}/generated.npz", image=gen)
    wd.save_npz(f"{workdir}/train.npz", image=train)
    block = int(c.memorization.block_size) or None
    f_train, f_gen, space = _features(c, train, gen, workdir, log)
    out: dict[str, Any] = {"num_generated": int(len(gen)), "num_train": int(len(train)),
                           "image_shape": list(train.shape[1:]), "features": c.features,
                           "feature_space": space}
    out["cosine"], best_sim, best_idx = cosine_metrics(c, f_gen, f_train, block, space)
    out["frechet"] = _frechet(c, f_train, f_gen, space)
    l2, ratio, nl2_idx, ext = l2_metrics(c, gen, train, block)
    out.update(l2)
    if truth is not None:
        out["demo"] = _demo_check(truth, ext, nl2_idx, best_idx)
    out["closest"] = _figures(c, fig_dir, gen, train, best_sim, ratio, nl2_idx, out["cosine"])

    # diverse samples (paper 003), once memjax.metrics.diverse is available
    if c.diverse.enabled:
        out["diverse"] = dict(_diverse(c, f_train, f_gen, fig_dir, log), feature_space=space)
    out["seconds"] = round(time.perf_counter() - t_start, 2)
    out["run_info"] = run_info()
    wd.save_json(f"{workdir}/metrics.json", {"config": c.to_dict(), **out}, indent=2)
    log(f"[evaluate] cosine mean {out['cosine']['summary']['mean']:.3f} in {space}, extracted "
        f"{out['normalized_l2']['num_extracted']}/{len(gen)}; wrote {workdir}/metrics.json "
        f"({out['seconds']} s)")
    return out


def _features(c, train, gen, workdir, log) -> tuple[np.ndarray, np.ndarray, str]:
    """Features of the training and generated images (cached stages ``features_*.npz``, keyed
    by the feature spec, its weights' content and the images) and the feature space's name."""
    from memjax.jobs import feature_space as fs

    embed, space = fs.embedder(c.features, workdir, field="features", train=train,
                               seed=int(c.seed), log=log)
    return embed(train, "train"), embed(gen, "generated"), space


def _frechet(c, f_train, f_gen, space: str) -> dict:
    """The Fréchet distance of the two feature sets: FID for Inception features, otherwise
    named after its feature space (pytorch-fid's formula in any space)."""
    from memjax.features import fid
    from memjax.jobs import feature_space as fs

    label = fs.frechet_label(c.features, space)
    if min(len(f_train), len(f_gen)) < 2:
        return {"name": label, "feature_space": space, "value": None,
                "skipped": "needs at least 2 images on each side"}
    return {"name": label, "feature_space": space, "value": float(fid(f_train, f_gen))}


def _demo_check(truth, extracted, nl2_idx, cos_idx) -> dict:
    kind = truth["kind"]
    copies = np.isin(kind, ["copy", "near"])
    return {"counts": truth["counts"],
            "extracted_are_copies": bool(np.array_equal(extracted, copies)),
            "copies_extracted": int(extracted[copies].sum()),
            "others_extracted": int(extracted[~copies].sum()),
            "copies_matched_to_source_l2": int(np.sum(nl2_idx[copies] ==
                                                      truth["source"][copies])),
            "copies_matched_to_source_cosine": int(np.sum(cos_idx[copies] ==
                                                          truth["source"][copies]))}


def _diverse(c, f_train, f_gen, fig_dir, log) -> dict:
    import jax

    from memjax import report

    try:
        from memjax.metrics import diverse as dv
    except ImportError as e:  # pragma: no cover - the diverse module is a separate part
        log(f"[evaluate] diverse samples skipped: {e}")
        return {"skipped": str(e)}
    dc = c.diverse
    rng = np.random.default_rng(int(c.seed))
    real = f_train
    if dc.max_real and len(real) > int(dc.max_real):
        real = real[np.sort(rng.choice(len(real), int(dc.max_real), replace=False))]
    res: dict[str, Any] = {"method": dc.method, "num_real": int(len(real))}
    if dc.method == "tsne_hull":
        th = dv.tsne_hull(real, f_gen, key=jax.random.key(int(c.seed)), joint=bool(dc.joint),
                          perplexity=float(dc.perplexity), num_iters=int(dc.num_iters))
        mask = np.asarray(th.diverse)
        hull = np.asarray(th.hull.polygon)[np.asarray(th.hull.mask)]
        report.scatter_hull(np.asarray(th.real_embedding), np.asarray(th.generated_embedding),
                            f"{fig_dir}/tsne_hull.png", hull=hull, marked=mask,
                            title=f"t-SNE ({'joint' if dc.joint else 'separate'}), hull of real")
        res["joint"] = bool(dc.joint)
    else:
        mask = np.asarray(dv.knn_support(real, f_gen, k=int(dc.k)).diverse)
        res["k"] = int(dc.k)
    res["num_diverse"] = int(mask.sum())
    res["fraction_diverse"] = float(mask.mean())
    res["diverse_indices"] = np.flatnonzero(mask).tolist()
    return res
