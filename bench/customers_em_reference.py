"""Reference: a mixed-type mixture (diagonal Gaussian numbers, Bernoulli indicators, categorical blocks)
fitted by EM on the pipeline features; restart 0 starts from the TRUE segments (an oracle start),
the others from k-means. Shows where the likelihood optimum lies. Usage: python bench/customers_em_reference.py TABLE RESTARTS"""
import sys, time, numpy as np, pyarrow.parquet as pq
from distclust.data.features import FeatureOptions, PipelineFitter
from distclust.metrics import cluster_scores
from sklearn.cluster import KMeans
t = pq.read_table(sys.argv[1]); y = t.column("segment").to_numpy()
feats = [c for c in t.schema.names if c not in ("customer_id", "segment")]
f = PipelineFitter(t.schema, feats, FeatureOptions(), "x"); f.update(t.select(feats)); pipe = f.result()
X = pipe.transform(t).astype(np.float64); K = 6
num = [b["start"] for b in pipe.blocks if b["kind"] == "numeric"]
cats = [(b["start"], b["end"]) for b in pipe.blocks if b["kind"] == "categorical"]
ind = [b["start"] for b in pipe.blocks if b["kind"] == "indicator"]
Xn = X[:, num]; Xc = X[:, [j for s, e in cats for j in range(s, e)]]; Xi = X[:, ind]
def em(R, iters=100):
    for it in range(iters):
        Nk = R.sum(0) + 1e-9; pi = Nk / Nk.sum()
        mu = R.T @ Xn / Nk[:, None]; var = (R.T @ Xn**2) / Nk[:, None] - mu**2 + 1e-3
        ll = np.log(pi)[None] - 0.5 * ((Xn**2) @ (1 / var).T - 2 * Xn @ (mu / var).T + (mu**2 / var).sum(1)[None] + np.log(var).sum(1)[None])
        P = R.T @ Xc + 0.5; off = 0
        for s, e in cats:
            w = e - s; P[:, off:off + w] /= P[:, off:off + w].sum(1, keepdims=True); off += w
        ll += Xc @ np.log(P).T
        q = (R.T @ Xi + 1) / (Nk[:, None] + 2); ll += Xi @ np.log(q).T + (1 - Xi) @ np.log(1 - q).T
        m = ll.max(1, keepdims=True); lse = m[:, 0] + np.log(np.exp(ll - m).sum(1)); R = np.exp(ll - lse[:, None])
    return R, lse.sum()
best = None
for seed in range(int(sys.argv[2]) if len(sys.argv) > 2 else 4):
    t0 = time.time()
    lab = y if seed == 0 else KMeans(K, n_init=1, random_state=seed).fit_predict(X)
    R = np.eye(K)[lab] * 0.9 + 0.1 / K
    R, L = em(R)
    acc = cluster_scores(R.argmax(1), y)["acc"]
    print(seed, round(L, 1), round(acc, 4), round(time.time() - t0, 1), flush=True)
    if best is None or L > best[0]: best = (L, acc)
print("best-loglik acc", best[1])
