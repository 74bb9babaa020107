"""The small JSON file beside a sharded Parquet dataset that says what it holds."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import DataError

MANIFEST_NAME = "_manifest.json"  # "_" prefix: pyarrow/pandas readers of the folder skip it
FORMAT_VERSION = 1
ID, FEATURES, LABEL = "id", "features", "label"


@dataclass
class FeatureStats:
    """Per-feature statistics gathered while ingesting (for normalisation)."""

    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    # the fitted feature pipeline of a mixed-type table (data/features.py), None for numeric sources;
    # kept here because the engine hands ``stats`` to the model: the block layout travels with it
    pipeline: dict | None = None


@dataclass
class Manifest:
    rows: int
    dim: int
    dtype: str
    has_label: bool
    shards: list[dict]                     # [{"file": name, "rows": n}]
    stats: FeatureStats
    label_names: list[str] | None = None   # when labels were strings, code -> name
    n_classes: int | None = None
    source: str = ""
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def files(self, root: str | Path) -> list[str]:
        root = Path(root)
        return [str(root / s["file"]) for s in self.shards if s["rows"] > 0]

    def save(self, root: str | Path) -> None:
        Path(root, MANIFEST_NAME).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, root: str | Path) -> "Manifest":
        path = Path(root, MANIFEST_NAME)
        if not path.is_file():
            raise DataError(f"'{root}' is not a dataset made by 'distclust ingest' (no {MANIFEST_NAME})",
                            str(root), f"run 'distclust ingest SRC {root}' first, or pass the source file itself")
        try:
            raw = json.loads(path.read_text())
            raw["stats"] = FeatureStats(**raw["stats"])
            m = cls(**raw)
        except (ValueError, TypeError, KeyError) as e:
            raise DataError(f"the dataset manifest is unreadable ({e})", str(path),
                            "re-run 'distclust ingest' to rebuild the dataset") from None
        if m.format_version > FORMAT_VERSION:
            raise DataError(f"dataset format {m.format_version} is newer than this distclust understands",
                            str(path), "upgrade distclust or re-ingest the source with this version")
        return m


def is_dataset(path: str | Path) -> bool:
    return Path(path, MANIFEST_NAME).is_file()
