"""distclust: distributed deep clustering on Ray Train, over sharded Parquet, with FAISS."""
__version__ = "0.1.0"

from .engine import ray_setup as _ray_setup  # noqa: F401,E402  (sets Ray env defaults before Ray loads)
from .artifact import FittedModel, load  # noqa: E402
from .estimator import Clusterer  # noqa: E402,F401  (scikit-learn style fit/predict)

__all__ = ["load", "FittedModel", "Clusterer", "__version__"]
