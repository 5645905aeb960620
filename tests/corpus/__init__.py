"""The bad-input and fault corpus: generators of hostile and broken inputs.

Nothing here is committed as data: every case is built by a function, into
a temporary folder, from a real face scikit-image ships (or from nothing).
``images`` makes image files, ``datasets`` dataset folders and import
sources, ``files`` policies, results files and caches; ``harness`` runs the
CLI over them and checks its promises (``tests/test_corpus.py``).
"""
