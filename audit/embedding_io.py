"""Writing embeddings out for other tools, keyed by the manifest's image ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from audit.embedding import EmbeddingSet
from audit.errors import InputError
from audit.outputs import replacing, writing


def export_embeddings(result: EmbeddingSet, path: Path) -> Path:
    """Write the ``ok`` vectors as NPZ (``image_id``, ``vectors``), CSV or Parquet (``image_id``, v0..vN).

    Images without a vector are left out of the file (their status is in
    the run's records); the export is for tools that need vectors.
    """
    path = Path(path)
    ok = result.ok
    ids = result.table.loc[ok, "image_id"].astype(str).to_numpy()
    vectors = result.vectors[ok]
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".csv", ".parquet"):
        raise InputError(f"unknown export format {suffix!r}; use .npz, .csv or .parquet.")
    with writing(path, what="the --export file", option="--export"):
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path, private=True) as tmp:   # whole or not at all; embeddings: the owner's alone
            _write(tmp, suffix, ids, vectors)
    return path


def _write(path: Path, suffix: str, ids: np.ndarray, vectors: np.ndarray) -> None:
    if suffix == ".npz":
        # fixed-width unicode, not objects: readable without allow_pickle
        with open(path, "wb") as fh:   # a file object: np.savez would add ".npz" to the temporary name
            np.savez(fh, image_id=np.asarray(ids, dtype=str), vectors=vectors)
        return
    frame = pd.DataFrame(vectors, columns=[f"v{i}" for i in range(vectors.shape[1])])
    frame.insert(0, "image_id", ids)
    if suffix == ".csv":
        frame.to_csv(path, index=False, float_format="%.8g")
    else:
        try:
            frame.to_parquet(path, index=False)
        except ImportError as exc:
            raise InputError("Parquet export needs pyarrow: pip install pyarrow") from exc
