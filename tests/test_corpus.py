"""The bad-input corpus: every command over every case, and the CLI's promises checked on each run.

The cases are built by ``tests/corpus/cases.py`` (nothing is committed as
data); ``tests/corpus/exercise.py`` runs the commands that read each one;
``tests/corpus/harness.py`` checks every run: no traceback, a documented
exit code, every input accounted for, nothing written outside the output,
earlier outputs intact after a failure.  The session ends with the
corpus's summary line (``tests/conftest.py`` prints it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.corpus.cases import all_cases
from tests.corpus.exercise import Baseline, exercise, make_baseline

CASES = all_cases()


@pytest.fixture(scope="module")
def corpus_env(tmp_path_factory) -> Path:
    """One embedding cache for the whole corpus (its faces repeat), and crash logs kept apart."""
    root = tmp_path_factory.mktemp("corpus-env")
    patch = pytest.MonkeyPatch()
    patch.setenv("AUDIT_CACHE", str(root / "cache.sqlite"))
    patch.setenv("AUDIT_LOG_DIR", str(root / "crash-logs"))
    yield root
    patch.undo()


@pytest.fixture(scope="module")
def baseline(corpus_env, tmp_path_factory) -> Baseline:
    return make_baseline(tmp_path_factory.mktemp("corpus-baseline"))


def test_the_corpus_has_every_kind_of_case():
    names = {case.name for case in CASES}
    assert len(names) == len(CASES)
    for kind in ("image-", "manifest-", "dataset-", "labels-", "source-", "archive-", "attributes-", "policy-",
                 "results-", "cache-", "output-", "dataset-info-", "pairs-", "generator-", "option-"):
        assert any(name.startswith(kind) for name in names), kind


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_command_keeps_its_promises_on(case, baseline, tmp_path):
    problems = exercise(case, tmp_path / "case", baseline)
    assert problems == []
