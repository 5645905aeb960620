"""Simulated groups for the coverage of the attributes probe's intervals (``probes.attribute_estimates``).

Each simulated person has one label of three classes (shares 50%, 30%, 20%)
and 1-3 images.  The reader reads each class with a known recall (90%, 80%,
70%), and people differ: a person's chance of being read correctly is drawn
from a Beta distribution with the class's recall as mean and an intra-person
correlation of 0.2, so a person's images are read right or wrong together.
The truth of the balanced accuracy is the mean of the three recalls.

Fidelity: one reconstruction per person (one generator), read correctly
with probability 0.75 where the person's real embedding is read correctly
and 0.3 where it is not (the two are paired and correlated, as in a run);
the real read's probability is the person's as above.  The truth is
``P(recon correct) / P(real correct)`` over the class mix.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from probes.attribute_estimates import balanced_accuracy_estimate, fidelity_estimate

CLASS_SHARES = np.array([0.5, 0.3, 0.2])
RECALLS = np.array([0.9, 0.8, 0.7])
ICC = 0.2
#: A reconstruction is read as its source's label with these probabilities, given the real read.
RECON_IF_REAL_RIGHT, RECON_IF_REAL_WRONG = 0.75, 0.3
CONFIDENCE = 0.95


def _person_probabilities(rng: np.random.Generator, means: np.ndarray) -> np.ndarray:
    """Each person's chance of a correct read: Beta with mean ``means`` and intra-person correlation ICC."""
    strength = (1 - ICC) / ICC
    return rng.beta(means * strength, (1 - means) * strength)


def _people(rng: np.random.Generator, n_people: int) -> tuple[np.ndarray, np.ndarray]:
    classes = rng.choice(len(CLASS_SHARES), size=n_people, p=CLASS_SHARES)
    return classes, _person_probabilities(rng, RECALLS[classes])


def balanced_accuracy_case() -> Callable:
    def run(rng, n_people, seed):
        classes, p = _people(rng, n_people)
        images = rng.integers(1, 4, size=n_people)
        person = np.repeat(np.arange(n_people), images)
        correct = (rng.random(len(person)) < p[person]).astype(float)
        low, high = balanced_accuracy_estimate(correct, classes[person], person).interval(CONFIDENCE)
        return float(RECALLS.mean()), low, high
    return run


def fidelity_truth() -> float:
    real = float(np.sum(CLASS_SHARES * RECALLS))
    recon = real * RECON_IF_REAL_RIGHT + (1 - real) * RECON_IF_REAL_WRONG
    return recon / real


def fidelity_case() -> Callable:
    truth = fidelity_truth()

    def run(rng, n_people, seed):
        _, p = _people(rng, n_people)
        real = rng.random(n_people) < p
        recon = rng.random(n_people) < np.where(real, RECON_IF_REAL_RIGHT, RECON_IF_REAL_WRONG)
        low, high = fidelity_estimate(recon.astype(float), real.astype(float), np.arange(n_people)).interval(CONFIDENCE)
        return truth, low, high
    return run
