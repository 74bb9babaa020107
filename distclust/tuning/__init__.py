"""``distclust tune``: Ray Tune sweeps of job specs, with label-free model selection.

Each trial is a real Ray Train run (a function trainable that builds the same
``TorchTrainer`` as ``distclust train`` and forwards its per-epoch reports with
``TuneReportCallback``). After training, the trial scores its artifact on a
seeded sample of the data with the sweep's *unsupervised* criterion; labels
(when present) are reported beside it and used for selection only if the spec
says so.

Sweep spec (``tune/*.yaml``)::

    name: digits-k
    base: ../jobs/digits-ae-kmeans.yaml     # relative to the sweep file
    overrides: {model.pretrain_epochs: 20}  # fixed changes to the base job
    search:                                 # dotted job keys → domains
      model.n_clusters: {grid: [6, 8, 10, 12, 14]}
      model.pretrain_lr: {loguniform: [1.0e-4, 1.0e-2]}
    algorithm: grid                         # grid | random | optuna
    num_samples: 1                          # grid: repeats of the grid; random/optuna: trials
    metric: choose_k                        # choose_k (default when model.n_clusters is searched: estimate K by
                                            #   stability + gap + DP mixture in one space, docs/choosing-k.md) |
                                            #   silhouette | davies_bouldin | bic | loss | stability | acc | nmi | ari
    score_space: embedding                  # where silhouette / Davies-Bouldin / BIC are computed:
                                            #   embedding (each trial's own), pretrained (the base job's
                                            #   model.pretrained, the same for all trials), features (input)
    require_all_clusters: true              # a trial that leaves some of its K clusters empty ranks after
                                            #   every trial that uses them all (partition scores reward
                                            #   fewer, bigger clusters)
    scheduler: asha                         # asha | none (ASHA stops poor trials on the training loss)
    max_concurrent_trials: 1

Modules: ``spec`` (the sweep spec and its search space), ``scoring`` (a trial's model scored on a
sample), ``run`` (the trial and the driver). The sample itself comes from ``data/sample.py``, the
plots from ``report/plots.py``.
"""
from .run import run_sweep
from .scoring import score_model
from .spec import LABEL_METRICS, METRIC_MODES, SCORE_SPACES, SweepSpec, check_objective, load_sweep, param_space

__all__ = ["run_sweep", "score_model", "load_sweep", "check_objective", "param_space", "SweepSpec",
           "METRIC_MODES", "LABEL_METRICS", "SCORE_SPACES"]
