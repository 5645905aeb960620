"""Datasets: the manifest format, importers, description and balancing.

``load_dataset(folder)`` is the one way every other layer reads a dataset;
see :mod:`audit.data.manifest` and ``datasets/README.md``.
"""

from audit.data.manifest import Dataset, load_dataset, write_manifest

__all__ = ["Dataset", "load_dataset", "write_manifest"]
