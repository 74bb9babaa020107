"""Manifold clustering (N2D-style): autoencoder → UMAP → full-covariance Gaussian mixture, plus a
learned head so that assignment scales to millions of rows without UMAP.

Stages:

1. ``pretrain``: the autoencoder on reconstruction (AE+k-means' stage), or ``pretrained: PATH``
   (the ``ae.*`` weights of any autoencoder artifact, loaded by VaDE's loader; 0 epochs).
2. ``manifold`` (global step): AE embeddings of a seeded sample (``manifold_sample`` rows, plus
   ``holdout`` rows kept out of the fit) are gathered from every worker; rank 0 optionally picks
   ``n_neighbors`` with the label-free rule of :func:`select_n_neighbors`, fits
   umap-learn and scikit-learn's ``GaussianMixture(covariance_type="full")`` in UMAP space, and
   embeds the held-out rows with ``UMAP.transform``; everything is broadcast. The mixture lives in
   buffers (log weights, means, Cholesky factors of the precisions), so artifacts need no sklearn.
3. ``head`` (DDP epochs): an MLP from the AE embedding to the UMAP coordinates. Each step's loss is
   (a) regression on a seeded minibatch of the fitted sample (the exact UMAP coordinates), plus
   (a') the KL divergence between the mixture posteriors at the fitted point and at the head's point
   (``head_resp_weight``), so that small coordinate errors do not move rows across a tight component's
   edge, and (b) for the shard batch, regression on a k-NN target: the membership-weighted mean of the fitted
   coordinates of its ``head_knn`` nearest sample embeddings (FAISS) — how ``UMAP.transform``
   initialises a new point. (a) makes the head reproduce the fit; (b) trains it on every row of the
   data the loop streams, not only on the sample, which is what assigning unseen rows needs.
4. ``agreement`` (global step): on the held-out rows, the fraction whose cluster from the head
   equals the cluster from ``UMAP.transform`` (logged as ``head_umap_agreement``).

Assignment (``distclust assign``, ``predict``): encoder → head → mixture posterior
(``assign: proba``) or nearest component mean via FAISS (``assign: nearest``). UMAP is never used
at predict time, so a saved model loads and predicts without umap-learn installed.

The fitted sample is not stored in checkpoints (it would be ~``manifold_sample``·(latent+components)
floats in every artifact); a run resumed inside ``head`` rebuilds it with the same seeded fit.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import DataError
from ..validation import param, require
from .autoencoder import AEParams, AutoencoderModel
from .base import Stage
from .networks import mlp

if TYPE_CHECKING:
    from ..engine.context import WorkerContext


@dataclass
class ManifoldParams(AEParams):
    manifold_sample: int = 100_000     # rows (all workers) UMAP and the mixture are fitted on
    holdout: int = param(5000, ge=0)   # further rows kept out of the fit, to compare head vs UMAP.transform
    # UMAP dimensions (N2D: the number of clusters)
    n_components: int = param(10, ge=1, fix="use 1 or more UMAP dimensions, e.g. 10 (or 2 to draw the manifold "
                                            "as it is)")
    n_neighbors: int = param(20, ge=2)   # UMAP n_neighbors (used when select_n_neighbors is empty)
    # UMAP min_dist (0 packs clusters tightly: N2D's choice)
    min_dist: float = param(0.0, ge=0, le=1, fix="use a value in [0, 1] (UMAP needs min_dist ≤ spread = 1), e.g. 0")
    # UMAP n_epochs (null: umap-learn's default, 200 above 10k rows)
    umap_epochs: int | None = param(None, ge=1, fix="use null (umap-learn's default) or 1 or more")
    # candidates for the label-free rule
    select_n_neighbors: list[int] = param(factory=list, ge=2, fix="list candidates of 2 or more neighbours, e.g. "
                                                                  "[5, 10, 20, 40], or [] to use n_neighbors")
    select_sample: int = 10_000        # rows the rule fits on (a seeded subset of the sample)
    # UMAP+GMM seeds per candidate
    select_seeds: int = param(2, ge=1, fix="use 1 or more seeds (2 lets the rule see instability)")
    gmm_n_init: int = param(1, ge=1)
    gmm_reg_covar: float = param(1e-6, gt=0)
    # the head's widths: three layers of 512 reproduce the fitted assignments where two of 256 lose ~3
    # points of agreement on MNIST (docs/benchmarks.md, "Manifold clustering")
    head_hidden: list[int] = param(factory=lambda: [512, 512, 512], ge=1,
                                   fix="use positive layer widths, e.g. [512, 512, 512] ([] = a linear head)")
    head_epochs: int = param(30, ge=1, fix="use 1 or more epochs: assignment goes through the head")
    head_lr: float = param(3e-3, gt=0)      # decayed by a cosine to 1 % over head_epochs
    # neighbours of the k-NN target (0: regression on the sample only)
    head_knn: int = param(10, ge=0)
    # weight of KL(mixture posterior at the fitted point ‖ at the head's point); off by default: with
    # UMAP's tight components (min_dist 0) its gradients swamp the regression (R² −0.23 on MNIST at 1.0)
    head_resp_weight: float = param(0.0, ge=0)
    # proba: mixture posterior | nearest: nearest component mean (FAISS)
    assign: str = param("proba", choices=("proba", "nearest"))

    def check(self, s: str) -> None:
        super().check(s)
        biggest = max([self.n_neighbors, *self.select_n_neighbors])
        need = max(self.n_clusters, biggest + 1, self.n_components + 2)
        require(self.manifold_sample >= need, f"{s}.manifold_sample",
                f"'{s}.manifold_sample' ({self.manifold_sample}) is too small for n_clusters={self.n_clusters}, "
                f"n_neighbors up to {biggest} and n_components={self.n_components}",
                f"use at least {need} rows, e.g. 100000")
        require(not self.select_n_neighbors or self.select_sample >= need, f"{s}.select_sample",
                f"'{s}.select_sample' ({self.select_sample}) is below {need}", f"use at least {need} rows")


def gmm_log_resp(y: torch.Tensor, log_w: torch.Tensor, means: torch.Tensor, prec_chol: torch.Tensor) -> torch.Tensor:
    """log p(k | y) of a full-covariance Gaussian mixture, from scikit-learn's ``precisions_cholesky_``.

    Computed in y's dtype (float32 at assign time: half the cost of float64, same argmax but for ties);
    the buffers stay float64."""
    log_w, means, prec_chol = log_w.to(y.dtype), means.to(y.dtype), prec_chol.to(y.dtype)
    d = y.shape[1]
    # ‖(y − μ_k) L_k‖², L_k the Cholesky factor of the precision (as sklearn's _estimate_log_gaussian_prob)
    proj = torch.einsum("nd,kde->nke", y, prec_chol) - torch.einsum("kd,kde->ke", means, prec_chol)[None]
    log_det = torch.log(torch.diagonal(prec_chol, dim1=1, dim2=2)).sum(1)
    log_prob = -0.5 * (d * math.log(2 * math.pi) + (proj ** 2).sum(2)) + log_det[None]
    return torch.log_softmax(log_prob + log_w[None], dim=1)


def fit_umap(z: np.ndarray, n_neighbors: int, p: ManifoldParams, seed: int):
    """umap-learn, seeded (single-threaded: umap-learn's price for reproducibility)."""
    import warnings

    import umap

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        return umap.UMAP(n_neighbors=n_neighbors, n_components=p.n_components, min_dist=p.min_dist,
                         n_epochs=p.umap_epochs, random_state=seed, n_jobs=1).fit(z)


def fit_gmm(y: np.ndarray, p: ManifoldParams, seed: int):
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(p.n_clusters, covariance_type="full", random_state=seed, n_init=p.gmm_n_init,
                           reg_covar=p.gmm_reg_covar, max_iter=300).fit(y)


def select_n_neighbors(z: np.ndarray, candidates: list[int], p: ManifoldParams, seed: int,
                       rank: int = 0, world: int = 1, table_only: bool = False, table=None):
    """Label-free choice of UMAP's ``n_neighbors``: the candidate whose partitions agree most with all others.

    For each candidate and each of ``select_seeds`` seeds, UMAP + the mixture are fitted on a seeded
    subset (``select_sample`` rows) and give a partition. A candidate's score is the mean adjusted Rand
    index between its partitions and every other partition (other seeds of itself: stability; other
    candidates: consensus). A setting that breaks the structure — fragments it (too few neighbours),
    merges clusters (too many), or lands in a different optimum with each seed — disagrees with the
    rest and scores low. Ties go to the smaller candidate.

    In training the fits are dealt to the workers: each returns its rows of the (runs, rows) label
    table (``table_only``), the sum over workers is scored (``table=``); wall time ~runs/world fits.
    """
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(seed + 29)
    sub = z if len(z) <= p.select_sample else z[np.sort(rng.choice(len(z), p.select_sample, replace=False))]
    cands = sorted(set(candidates))
    runs = [(c, s) for c in cands for s in range(p.select_seeds)]
    if table is None:
        table = np.zeros((len(runs), len(sub)), dtype=np.int64)
        for i, (c, s) in enumerate(runs):
            if i % world == rank:
                y = fit_umap(sub, min(c, len(sub) - 1), p, seed + 1000 * s).embedding_.astype(np.float64)
                table[i] = fit_gmm(y, p, seed + 1000 * s).predict(y)
        if table_only:
            return table
    parts = dict(zip(runs, table))
    scores, stability = {}, {}
    for c in cands:
        mine = [a for a in runs if a[0] == c]
        scores[c] = float(np.mean([adjusted_rand_score(parts[a], parts[b]) for a in mine for b in runs if b != a]))
        own = [adjusted_rand_score(parts[a], parts[b]) for a in mine for b in mine if a < b]
        stability[c] = float(np.mean(own)) if own else float("nan")
    best = max(cands, key=lambda c: (round(scores[c], 6), -c))
    return {"best": best, "scores": scores, "stability": stability, "partitions": parts, "rows": len(sub)}


def run_with_heartbeat(ctx: "WorkerContext", fn, poll_s: float = 2.0):
    """``fn()`` in a thread on this rank (``fn=None``: nothing) while every rank all-reduces a count of
    finished ranks every ``poll_s`` seconds, until all are done; returns fn's result.

    A rank that waited in one collective for rank 0's UMAP fit would hit the process group's timeout
    (Ray Train: 30 min) on a large sample; many short collectives never do. umap-learn's numba loops
    hand the GIL back between epochs, so the heartbeat keeps running."""
    import threading

    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # re-raised below, on this rank
            out["error"] = e

    th = threading.Thread(target=run, daemon=True) if fn is not None else None
    if th is not None:
        th.start()
    while True:
        if th is not None:
            th.join(timeout=poll_s)
        mine = 0.0 if th is not None and th.is_alive() else 1.0
        if float(ctx.all_reduce(torch.tensor([mine], device=ctx.device))) >= ctx.world_size:
            break
        if th is None:
            time.sleep(poll_s)
    if "error" in out:
        raise out["error"]
    return out.get("value")


def knn_targets(dist2: torch.Tensor, idx: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Membership-weighted mean of the neighbours' coordinates: w_j = exp(−(d_j − d_1) / σ), σ the mean
    excess distance (a cheap stand-in for UMAP's smooth-kNN weights, which ``UMAP.transform`` uses to
    initialise a new point)."""
    d = dist2.clamp_min(0).sqrt()
    excess = d - d[:, :1]
    sigma = excess.mean(1, keepdim=True).clamp_min(1e-8)
    w = torch.softmax(-excess / sigma, dim=1)
    return (w.unsqueeze(2) * coords[idx]).sum(1)


class Manifold(AutoencoderModel):
    """Autoencoder → UMAP → Gaussian mixture, served by a learned embedding → UMAP head."""

    name = "manifold"
    Params = ManifoldParams
    find_unused_parameters = True      # the head stage leaves the autoencoder out of its loss

    def __init__(self, input_dim, params: ManifoldParams, normalizer=None):
        super().__init__(input_dim, params, normalizer)
        d, c, k = params.latent_dim, params.n_components, params.n_clusters
        self.assign_by = "proba" if params.assign == "proba" else "prototype"
        # the run report draws transform() (the learned UMAP coordinates) as they are when 2-D, else by a 2-D UMAP
        self.report_projection = "umap" if params.n_components > 2 else "pca"
        self.head = mlp([d, *params.head_hidden, c], params.activation)
        for name, shape in (("z_shift", (d,)), ("z_scale", (d,)), ("y_shift", (c,)), ("y_scale", (c,))):
            self.register_buffer(name, torch.zeros(shape) if "shift" in name else torch.ones(shape))
        self.register_buffer("gmm_log_w", torch.full((k,), -math.log(k), dtype=torch.float64))
        self.register_buffer("gmm_means", torch.zeros(k, c, dtype=torch.float64))
        self.register_buffer("gmm_prec_chol", torch.eye(c, dtype=torch.float64).repeat(k, 1, 1))
        self.register_buffer("n_neighbors_used", torch.zeros((), dtype=torch.long))
        self._fit: dict | None = None     # the fitted sample (not saved: rebuilt on resume)
        self._index = None

    # -- networks -----------------------------------------------------------------------
    def ae_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.ae.encoder(self.normalizer(x))

    def head_std(self, z: torch.Tensor) -> torch.Tensor:
        """The head in standardised units (input z and output coordinates both standardised)."""
        return self.head((z - self.z_shift) / self.z_scale)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The learned UMAP coordinates of raw rows (``transform``)."""
        return self.head_std(self.ae_embed(x)) * self.y_scale + self.y_shift

    def predict_proba(self, x):
        return gmm_log_resp(self.embed(x), self.gmm_log_w, self.gmm_means, self.gmm_prec_chol).exp()

    def prototypes(self):
        return self.gmm_means.float()

    # -- stages ---------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        p = self.params
        pre = self.pretrain_stage()

        def on_step(ctx, step):
            if self._fit is None:   # resumed inside the head stage: rebuild the seeded fit
                self.fit_manifold(ctx)
            return None

        def on_epoch_end(ctx, epoch):
            self.is_fitted.fill_(True)
            return None

        def agreement(ctx):
            if self._fit is None:
                self.fit_manifold(ctx)
            return self.agreement(ctx)

        return [pre, Stage("manifold", 0, 0.0, on_start=self.fit_manifold),
                Stage("head", p.head_epochs, p.head_lr, parameters=self.head.parameters, on_step=on_step,
                      on_epoch_end=on_epoch_end, lr_cosine=True),
                Stage("agreement", 0, 0.0, on_start=agreement)]

    @torch.no_grad()
    def fit_manifold(self, ctx: "WorkerContext") -> dict:
        """Gather, fit UMAP + mixture on rank 0, broadcast the sample's coordinates and the mixture."""
        p, dev = self.params, ctx.device
        t0 = time.time()
        z_all = ctx.gather_sample(lambda b: self.ae_embed(b["features"]), p.manifold_sample + p.holdout)
        n = len(z_all)
        n_hold = min(p.holdout, n // 5)
        need = max(self.n_clusters, p.n_neighbors + 1, p.n_components + 2)
        if n - n_hold < need:
            raise DataError(f"only {n - n_hold} rows reached the manifold fit; n_clusters={self.n_clusters}, "
                            f"n_neighbors={p.n_neighbors} and n_components={p.n_components} need {need}",
                            "model.manifold_sample", "train on more rows, or lower n_neighbors / n_clusters")
        perm = torch.from_numpy(np.random.default_rng(ctx.seed + 17).permutation(n)).to(z_all.device)
        z, z_hold = z_all[perm[n_hold:]], z_all[perm[:n_hold]]
        k, c = self.n_clusters, p.n_components
        y = torch.zeros(len(z), c, device=dev)
        y_hold = torch.zeros(n_hold, c, device=dev)
        head = torch.zeros(4, dtype=torch.float64)   # n_neighbors, fit seconds, loglik/row, bic
        mix = torch.zeros(k + k * c + k * c * c, dtype=torch.float64)
        cands = sorted(set(p.select_n_neighbors))
        zn = z.cpu().double().numpy()
        nn_, scores = p.n_neighbors, {}
        if cands:   # every rank fits its share of the rule's runs; every rank then scores them alike
            table = run_with_heartbeat(ctx, lambda: select_n_neighbors(zn, cands, p, ctx.seed, ctx.rank,
                                                                       ctx.world_size, table_only=True))
            sel = select_n_neighbors(zn, cands, p, ctx.seed, table=ctx.all_reduce(
                torch.from_numpy(table).to(dev)).cpu().numpy())
            nn_, scores = sel["best"], sel["scores"]

        def fit():
            t1 = time.time()
            um = fit_umap(zn, nn_, p, ctx.seed)
            yn = um.embedding_.astype(np.float64)
            fit_s = time.time() - t1
            gmm = fit_gmm(yn, p, ctx.seed)
            yh = um.transform(z_hold.cpu().double().numpy()) if n_hold else None
            return um, yn, fit_s, gmm, yh

        res = run_with_heartbeat(ctx, fit if ctx.rank == 0 else None)
        if ctx.rank == 0:
            um, yn, fit_s, gmm, yh = res
            head[0], head[1], head[2], head[3] = nn_, fit_s, gmm.score(yn), gmm.bic(yn)
            mix = torch.cat([torch.log(torch.as_tensor(gmm.weights_)), torch.as_tensor(gmm.means_).reshape(-1),
                             torch.as_tensor(gmm.precisions_cholesky_).reshape(-1)])
            y = torch.as_tensor(yn, dtype=torch.float32)
            if n_hold:
                y_hold = torch.as_tensor(yh, dtype=torch.float32)
        head, mix = ctx.broadcast(head.to(dev)).cpu(), ctx.broadcast(mix.to(dev)).cpu()
        y, y_hold = ctx.broadcast(y.to(dev)), ctx.broadcast(y_hold.to(dev))
        self.gmm_log_w.copy_(mix[:k])
        self.gmm_means.copy_(mix[k:k + k * c].reshape(k, c))
        self.gmm_prec_chol.copy_(mix[k + k * c:].reshape(k, c, c))
        self.n_neighbors_used.fill_(int(head[0]))
        self.z_shift.copy_(z.mean(0))
        self.z_scale.copy_(z.std(0).clamp_min(1e-6))
        self.y_shift.copy_(y.mean(0))
        self.y_scale.copy_(y.std(0).clamp_min(1e-6))
        log_r = gmm_log_resp(y, self.gmm_log_w, self.gmm_means, self.gmm_prec_chol)
        self._fit = {"z": z.to(dev), "y": y, "z_hold": z_hold.to(dev), "y_hold": y_hold, "log_r": log_r}
        self._index = None
        out = {"manifold_rows": float(len(z)), "holdout_rows": float(n_hold), "n_neighbors": float(head[0]),
               "umap_fit_s": float(head[1]), "gmm_loglik": float(head[2]), "gmm_bic": float(head[3]),
               "manifold_s": time.time() - t0}
        out.update({f"select_score_nn{c_}": float(v) for c_, v in scores.items()})
        return out

    # -- the head's loss --------------------------------------------------------------------
    def knn_index(self):
        if self._index is None:
            from ..faiss_ops import NearestPrototype

            zs = (self._fit["z"] - self.z_shift) / self.z_scale
            self._index = NearestPrototype(zs.cpu().numpy(), use_gpu=False)
        return self._index

    def forward(self, x, stage):
        if stage != "head":
            return super().forward(x, stage)
        f, p = self._fit, self.params
        ys_all = (f["y"] - self.y_shift) / self.y_scale
        g = torch.Generator().manual_seed(int(self.train_step) * 7919 + int(torch.initial_seed() % 1_000_003))
        pick = torch.randint(0, len(f["z"]), (x.shape[0],), generator=g).to(x.device)
        pred = self.head_std(f["z"][pick])
        fit_mse = ((pred - ys_all[pick]) ** 2).mean()
        out = {"fit_mse": fit_mse.detach()}
        loss = fit_mse
        if p.head_resp_weight:
            # keep each sample row's cluster posterior: coordinates alone can cross a tight component's edge
            log_r = f["log_r"][pick]
            log_q = gmm_log_resp(pred * self.y_scale + self.y_shift, self.gmm_log_w, self.gmm_means,
                                 self.gmm_prec_chol)
            kl = (log_r.exp() * (log_r - log_q)).sum(1).float()
            out["resp_kl"] = kl.mean().detach()
            # only rows already near their fitted point (KL < 10 nats) feel it: far from a tight component
            # the KL grows like a squared Mahalanobis distance (10^4 nats on Fashion-MNIST at the start) and
            # swamped the coordinate regression (R² 0.61 after 3 epochs); the regression brings them close
            loss = loss + p.head_resp_weight * kl.clamp_max(10.0).mean()
        if p.head_knn:
            with torch.no_grad():
                z = self.ae_embed(x)
                zs = (z - self.z_shift) / self.z_scale
                kk = min(p.head_knn, len(f["z"]))
                idx, d2 = self.knn_index().search(zs.cpu().numpy(), kk)
                d2, idx = torch.as_tensor(d2).reshape(len(z), kk), torch.as_tensor(idx).reshape(len(z), kk)
                target = knn_targets(d2.to(x.device), idx.to(x.device), ys_all)
            knn_mse = ((self.head(zs) - target) ** 2).mean()
            out["knn_mse"] = knn_mse.detach()
            loss = loss + knn_mse
        out["loss"] = loss
        return out

    # -- head vs UMAP.transform ----------------------------------------------------------------
    @torch.no_grad()
    def agreement(self, ctx: "WorkerContext") -> dict:
        """On the held-out rows: clusters from the head vs clusters from UMAP.transform (same mixture)."""
        f = self._fit
        out = {}
        sample_pred = self.head_std(f["z"]) * self.y_scale + self.y_shift
        out["head_r2_sample"] = float(1 - ((sample_pred - f["y"]) ** 2).sum() / ((f["y"] - f["y"].mean(0)) ** 2).sum())
        lr = lambda y: gmm_log_resp(y, self.gmm_log_w, self.gmm_means, self.gmm_prec_chol).argmax(1)  # noqa: E731
        out["head_agreement_sample"] = float((lr(sample_pred) == lr(f["y"])).float().mean())
        if len(f["z_hold"]):
            hold_pred = self.head_std(f["z_hold"]) * self.y_scale + self.y_shift
            out["head_umap_agreement"] = float((lr(hold_pred) == lr(f["y_hold"])).float().mean())
            yh = f["y_hold"]
            out["head_r2_holdout"] = float(1 - ((hold_pred - yh) ** 2).sum() / ((yh - yh.mean(0)) ** 2).sum())
        return out
