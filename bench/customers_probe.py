"""In-process probe (no Ray) of typed VaDE / AE on a generated customer table: pipeline features,
AE pretraining (optionally with column dropout), k-means and GMM on the codes, then VaDE epochs.
Usage: python bench/customers_probe.py TABLE SEED HIDDEN LATENT PRETRAIN_EPOCHS VADE_EPOCHS [COLUMN_DROPOUT]
e.g.   python bench/customers_probe.py customers20k.parquet 0 "[128,128]" 6 10 10 0.5"""
import sys, time, numpy as np, torch, pyarrow.parquet as pq
from distclust.data.features import FeatureOptions, PipelineFitter
from distclust.metrics import cluster_scores
from distclust.models.base import Normalizer
from distclust.models.vade import VaDE, VaDEParams
torch.set_num_threads(1)
t = pq.read_table(sys.argv[1]); seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
y = t.column("segment").to_numpy()
feats = [c for c in t.schema.names if c not in ("customer_id", "segment")]
f = PipelineFitter(t.schema, feats, FeatureOptions(), "x"); f.update(t.select(feats)); pipe = f.result()
X = torch.from_numpy(pipe.transform(t)); d = X.shape[1]
torch.manual_seed(seed); np.random.seed(seed)
H = eval(sys.argv[3]) if len(sys.argv) > 3 else [256, 256]
L = int(sys.argv[4]) if len(sys.argv) > 4 else 10
PE = int(sys.argv[5]) if len(sys.argv) > 5 else 20
VE = int(sys.argv[6]) if len(sys.argv) > 6 else 20
CD = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
p = VaDEParams(n_clusters=6, latent_dim=L, hidden=H, recon="typed", pretrain_epochs=PE, epochs=VE, lr=2e-3, gmm_n_init=3, column_dropout=CD)
m = VaDE(d, p, Normalizer(d, pipe.to_dict()))
def run(stage, epochs, lr, params, bs=256):
    m.train()
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        perm = torch.randperm(len(X), generator=g); tot = 0
        for i in range(0, len(X), bs):
            out = m(X[perm[i:i+bs]], stage); opt.zero_grad(); out["loss"].backward(); opt.step(); tot += float(out["loss"])
    return tot / (len(X) / bs)
t0 = time.time()
print("pretrain loss", run("pretrain", PE, 1e-3, m.ae.parameters()), time.time() - t0)
with torch.no_grad(): Z = m.embed(X).numpy()
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
print("AE+kmeans", cluster_scores(KMeans(6, n_init=10, random_state=seed).fit_predict(Z), y)["acc"])
gmm = GaussianMixture(6, covariance_type="diag", random_state=seed, n_init=3).fit(Z)
print("AE+GMM", cluster_scores(gmm.predict(Z), y)["acc"])
with torch.no_grad():
    m.pi_logits.copy_(torch.log(torch.tensor(gmm.weights_)).float()); m.mu_c.copy_(torch.tensor(gmm.means_).float())
    m.logvar_c.copy_(torch.log(torch.tensor(gmm.covariances_)).float()); m.logvar_head.bias.fill_(float(np.log(gmm.covariances_.mean()/10)))
for k in range(VE // 5):
    run("vade", 5, 2e-3, m.parameters())
    with torch.no_grad(): pr = m.predict_proba(X).argmax(1).numpy()
    print("vade ep", (k+1)*5, cluster_scores(pr, y)["acc"], time.time() - t0, flush=True)
