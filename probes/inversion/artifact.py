"""A trained generator as a folder: trained once per target, reused by every audit of it.

Training an inverter is the costly part of an audit (hours on a CPU, and a
cloud target's validation rounds are paid calls), and it does not depend on
the audit set: only on the target, the training faces and the settings.  So
a generator is an artifact of its own::

    GEN/
      generator.json      what it is: format, target fingerprint, settings, training
                          set composition, what was dropped and why, best epoch
      best.pt             the chosen weights (read weights-only)
      last.pt             the last epoch, with optimiser state (resume)
      history.json        loss and validation distance per epoch
      training_set.csv    one row per training image: content hash, identity, origin,
                          attributes (to refuse an audit of the same people)
      training_vectors.npy  their embeddings (float16), for the near-duplicate check

``audit generator train`` writes one; ``audit run --generator GEN/`` reads
it, refusing a generator made for another target (fingerprints differ) or
one that saw any audit image or person.  ``audit run --train-dataset``
keeps one per training set and settings in the cache folder
(:func:`generator_cache_dir`), keyed by :func:`generator_key`, so a second
audit of the same target with the same training faces trains nothing.
A folder is complete only once ``generator.json`` says so: a killed training
leaves ``last.pt`` and resumes; it is never read as a finished generator.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.outputs import private_folder, replacing
from audit.results import write_json_atomic
from probes.inversion.generator import InversionGenerator
from probes.inversion.training import BEST_CHECKPOINT, HISTORY_FILE, TrainingConfig, load_generator

ARTIFACT_FORMAT = "face-bias-audit-generator"
#: The marker's kind in a generator folder (audit.outputs.OWNER_MARKER).
GENERATOR_FOLDER_KIND = "generator"
ARTIFACT_VERSION = 1
INFO_FILE = "generator.json"
TRAINING_SET_FILE = "training_set.csv"
TRAINING_VECTORS_FILE = "training_vectors.npy"
GENERATORS_FOLDER = "generators"
#: Settings that do not change what is learned (left out of the key).
_NOT_IN_KEY = ("device", "eval_batch_size", "amp")


def generator_cache_dir(cache_path: Path) -> Path:
    """Where keyed generators live: a ``generators`` folder beside the embedding cache file."""
    return Path(cache_path).expanduser().parent / GENERATORS_FOLDER


def generator_key(*, target_fingerprint: str, preprocessing: str, train_hashes: Sequence[str],
                  val_hashes: Sequence[str], config: TrainingConfig, average_identities: bool) -> str:
    """sha256 of what decides the weights: target, chips, training faces (in order), settings."""
    settings = {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_KEY}
    payload = json.dumps({"format": ARTIFACT_VERSION, "target": target_fingerprint, "preprocessing": preprocessing,
                          "train": list(map(str, train_hashes)), "val": list(map(str, val_hashes)),
                          "settings": settings, "average_identities": bool(average_identities)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class GeneratorArtifact:
    """A finished generator folder, read back."""

    folder: Path
    info: dict
    training_set: pd.DataFrame
    training_vectors: np.ndarray

    @property
    def target_fingerprint(self) -> str:
        return str(self.info["target"]["fingerprint"])

    @property
    def config(self) -> TrainingConfig:
        settings = dict(self.info["settings"])
        settings["betas"] = tuple(settings["betas"])
        return TrainingConfig(**settings)

    def model(self) -> InversionGenerator:
        return load_generator(self.folder / BEST_CHECKPOINT)

    def history(self) -> list[dict]:
        path = self.folder / HISTORY_FILE
        return json.loads(path.read_text(encoding="utf-8")).get("history", []) if path.is_file() else []


def is_generator_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a generator.json of this tool (one written before folders were marked)."""
    try:
        info = json.loads((Path(folder) / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(info, dict) and info.get("format") == ARTIFACT_FORMAT


def is_complete(folder: Path) -> bool:
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        return False
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("complete"))
    except ValueError:
        return False


def write_artifact(folder: Path, *, info: dict[str, Any], training_set: pd.DataFrame,
                   training_vectors: np.ndarray) -> None:
    """Write the description and training set beside the checkpoints; ``generator.json`` last."""
    folder = private_folder(folder)   # embeddings of real people, and weights that reconstruct faces
    with replacing(folder / TRAINING_SET_FILE, private=True) as tmp:
        training_set.to_csv(tmp, index=False)
    with replacing(folder / TRAINING_VECTORS_FILE, private=True) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(training_vectors, dtype=np.float16))
    write_json_atomic(folder / INFO_FILE, {"format": ARTIFACT_FORMAT, "format_version": ARTIFACT_VERSION,
                                           **info, "complete": True}, private=True)


def read_artifact(folder: Path) -> GeneratorArtifact:
    """Read a finished generator folder, or say plainly what is wrong with it."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"--generator {str(folder)!r}: no such folder. Make one with 'audit generator train "
                         "--target T --dataset CORPUS --out GEN/'.")
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        raise InputError(f"--generator {str(folder)!r} has no {INFO_FILE}: it is not a finished generator "
                         "(a training that was stopped resumes with the same 'audit generator train' command).")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{str(info_path)!r} cannot be read ({exc}); retrain the generator.") from exc
    if info.get("format") != ARTIFACT_FORMAT or info.get("format_version") != ARTIFACT_VERSION:
        raise InputError(f"{str(info_path)!r} is not a generator of this tool's format "
                         f"({ARTIFACT_FORMAT} v{ARTIFACT_VERSION}); retrain it with this version.")
    if not info.get("complete"):
        raise InputError(f"--generator {str(folder)!r} is not finished; rerun its training command to resume.")
    for name in (BEST_CHECKPOINT, TRAINING_SET_FILE, TRAINING_VECTORS_FILE):
        if not (folder / name).is_file():
            raise InputError(f"--generator {str(folder)!r} lacks {name}; retrain the generator.")
    table = pd.read_csv(folder / TRAINING_SET_FILE, dtype=str, keep_default_na=False)
    vectors = np.load(folder / TRAINING_VECTORS_FILE, allow_pickle=False)
    if len(vectors) != len(table):
        raise InputError(f"--generator {str(folder)!r}: {TRAINING_SET_FILE} has {len(table)} rows but "
                         f"{TRAINING_VECTORS_FILE} {len(vectors)}; the folder is damaged, retrain it.")
    return GeneratorArtifact(folder, info, table, vectors)


def check_target(artifact: GeneratorArtifact, *, fingerprint: str, preprocessing: str) -> None:
    """Refuse a generator trained against another model (or other chips)."""
    if artifact.target_fingerprint != fingerprint:
        raise InputError(
            f"--generator {str(artifact.folder)!r} was trained against target "
            f"{artifact.info['target'].get('name')!r} with fingerprint {artifact.target_fingerprint!r}, but "
            f"this audit's target has fingerprint {fingerprint!r}. A generator learns one model's "
            "embeddings: train one for this target with 'audit generator train --target ...'.")
    if artifact.info.get("preprocessing") not in (None, preprocessing):
        raise InputError(f"--generator {str(artifact.folder)!r} was trained on chips aligned with "
                         f"{artifact.info.get('preprocessing')!r}, this audit uses {preprocessing!r} "
                         "(--detector/--upsample/--min-score): use the same face settings or retrain.")
