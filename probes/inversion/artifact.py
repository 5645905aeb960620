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
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.json_model import FieldError, JSONFileError, Record, from_json, parse_json_file
from audit.outputs import private_folder, replacing
from audit.result_sections import EpochRecord, TrainingSetSummary
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


#: Columns of training_set.csv that the audit-overlap check reads.
TRAINING_SET_COLUMNS = ("content_hash", "identity", "origin", "has_identities")


@dataclass(kw_only=True)
class GeneratorTargetInfo(Record):
    """The target a generator learned: its fingerprint is what an audit's target is matched on."""

    name: str = ""
    fingerprint: str


@dataclass(kw_only=True)
class GeneratorInfo(Record):
    """generator.json's fields that an audit reads, each checked for its type when the folder is read."""

    format: str
    format_version: int
    complete: bool = False
    key: str | None = None
    target: GeneratorTargetInfo
    preprocessing: str | None = None
    settings: dict[str, Any]
    average_identities: bool = False
    training_set: TrainingSetSummary | None = None
    best_epoch: int | None = None
    best_val_mean_distance: float | None = None
    device: str | None = None
    training_seconds: float | None = None
    samples_per_second: float | None = None


@dataclass
class GeneratorArtifact:
    """A finished generator folder, read back and checked file by file (:func:`read_artifact`)."""

    folder: Path
    info: dict
    training_set: pd.DataFrame
    training_vectors: np.ndarray
    generator: InversionGenerator | None = field(default=None, repr=False)
    epochs: list[dict] = field(default_factory=list)

    @property
    def target_fingerprint(self) -> str:
        return str(self.info["target"]["fingerprint"])

    @property
    def config(self) -> TrainingConfig:
        return _training_config(self.info["settings"])

    def model(self) -> InversionGenerator:
        if self.generator is None:
            self.generator = load_generator(self.folder / BEST_CHECKPOINT)
        return self.generator

    def history(self) -> list[dict]:
        return list(self.epochs)


def _training_config(settings: dict) -> TrainingConfig:
    settings = dict(settings)
    if "betas" in settings and isinstance(settings["betas"], list):
        settings["betas"] = tuple(settings["betas"])
    return TrainingConfig(**settings)


def is_generator_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a generator.json of this tool (one written before folders were marked)."""
    try:
        info = json.loads((Path(folder) / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(info, dict) and info.get("format") == ARTIFACT_FORMAT


def is_complete(folder: Path) -> bool:
    """Whether ``generator.json`` says the folder is finished (an unreadable one: not finished)."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        return False
    try:
        info = parse_json_file(path)
    except JSONFileError:
        return False
    return isinstance(info, dict) and bool(info.get("complete"))


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


def retrain_advice(folder: Path) -> str:
    return (f"retrain it with 'audit generator train --target T --dataset CORPUS --out "
            f"{shlex.quote(str(folder))}' after deleting the folder, or use another --generator")


def _damaged(folder: Path, what: str, fix: str | None) -> InputError:
    return InputError(f"generator folder {str(folder)!r} is damaged ({what}); {fix or retrain_advice(folder)}.")


def read_artifact(folder: Path, *, fix: str | None = None) -> GeneratorArtifact:
    """Read a finished generator folder, every file checked, or say plainly what is wrong with it and where.

    Each file is read the safe way (JSON through one reader, the vectors
    without pickles, the checkpoint weights-only) and checked for what an
    audit will ask of it, so that a damaged folder is refused before the
    target's first call, never with a KeyError halfway through a run.
    ``fix`` replaces the advice to retrain (a cached generator is deleted instead).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"--generator {str(folder)!r}: no such folder. Make one with 'audit generator train "
                         "--target T --dataset CORPUS --out GEN/'.")
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        raise InputError(f"--generator {str(folder)!r} has no {INFO_FILE}: it is not a finished generator "
                         "(a training that was stopped resumes with the same 'audit generator train' command).")
    info = _read_json(folder, INFO_FILE, fix)
    if not isinstance(info, dict):
        raise _damaged(folder, f"{INFO_FILE} holds {type(info).__name__} {info!r:.40}, not an object", fix)
    if info.get("format") != ARTIFACT_FORMAT or info.get("format_version") != ARTIFACT_VERSION:
        raise InputError(f"{str(info_path)!r} is not a generator of this tool's format "
                         f"({ARTIFACT_FORMAT} v{ARTIFACT_VERSION}); retrain it with this version.")
    if not info.get("complete"):
        raise InputError(f"--generator {str(folder)!r} is not finished; rerun its training command to resume.")
    try:
        from_json(GeneratorInfo, info, INFO_FILE)
    except FieldError as exc:
        raise _damaged(folder, _field_problem(INFO_FILE, exc), fix) from None
    try:
        _training_config(info["settings"])
    except (TypeError, ValueError, InputError) as exc:
        raise _damaged(folder, f"{INFO_FILE}: settings {exc}", fix) from None
    for name in (BEST_CHECKPOINT, TRAINING_SET_FILE, TRAINING_VECTORS_FILE):
        if not (folder / name).is_file():
            raise InputError(f"--generator {str(folder)!r} lacks {name}; retrain the generator.")
    table = _read_training_set(folder, fix)
    vectors = _read_training_vectors(folder, fix)
    if len(vectors) != len(table):
        raise _damaged(folder, f"{TRAINING_SET_FILE} has {len(table)} rows but {TRAINING_VECTORS_FILE} "
                               f"{len(vectors)}", fix)
    epochs = _read_history(folder, fix)
    try:
        model = load_generator(folder / BEST_CHECKPOINT)
    except InputError as exc:
        raise _damaged(folder, f"{BEST_CHECKPOINT}: {str(exc).rstrip('.')}", fix) from None
    if vectors.shape[1] != model.embedding_dim:
        raise _damaged(folder, f"{TRAINING_VECTORS_FILE} holds {vectors.shape[1]}-dimensional vectors, "
                               f"{BEST_CHECKPOINT} a network for {model.embedding_dim}", fix)
    return GeneratorArtifact(folder, info, table, vectors, generator=model, epochs=epochs)


def _read_json(folder: Path, name: str, fix: str | None) -> Any:
    try:
        return parse_json_file(folder / name)
    except JSONFileError as exc:
        if exc.unreadable:
            raise InputError(f"{exc} Make it readable (chmod u+r).") from None
        raise _damaged(folder, f"{name} {exc.problem}", fix) from None


def _read_training_set(folder: Path, fix: str | None) -> pd.DataFrame:
    path = folder / TRAINING_SET_FILE
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        # EmptyDataError and ParserError are ValueErrors; named here for the reader
        raise _damaged(folder, f"{TRAINING_SET_FILE}: {' '.join(str(exc).split())[:160]}", fix) from None
    missing = [c for c in TRAINING_SET_COLUMNS if c not in table.columns]
    if missing:
        raise _damaged(folder, f"{TRAINING_SET_FILE} has no column {', '.join(map(repr, missing))}", fix)
    flags = table["has_identities"].str.lower()
    bad = ~flags.isin(["true", "false"])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise _damaged(folder, f"{TRAINING_SET_FILE} line {row + 2}: has_identities is "
                               f"{table['has_identities'].iloc[row]!r:.40}, not True or False", fix)
    return table


def _read_training_vectors(folder: Path, fix: str | None) -> np.ndarray:
    path = folder / TRAINING_VECTORS_FILE
    try:
        vectors = np.load(path, allow_pickle=False)   # never unpickles: an object array is refused
    except (ValueError, EOFError, OSError) as exc:
        raise _damaged(folder, f"{TRAINING_VECTORS_FILE}: not a numeric .npy array "
                               f"({' '.join(str(exc).split())[:160]})", fix) from None
    if not isinstance(vectors, np.ndarray):       # an .npz archive
        raise _damaged(folder, f"{TRAINING_VECTORS_FILE} is an archive of arrays, not one array", fix)
    if vectors.dtype.kind not in "fiu" or vectors.ndim != 2:
        raise _damaged(folder, f"{TRAINING_VECTORS_FILE} holds a {vectors.dtype} array of shape "
                               f"{vectors.shape}, not one vector of numbers per training image", fix)
    return vectors


def _read_history(folder: Path, fix: str | None) -> list[dict]:
    path = folder / HISTORY_FILE
    if not path.is_file():
        return []
    data = _read_json(folder, HISTORY_FILE, fix)
    if not isinstance(data, dict):
        raise _damaged(folder, f"{HISTORY_FILE} holds {type(data).__name__} {data!r:.40}, not an object", fix)
    try:
        from_json(list[EpochRecord], data.get("history", []), f"{HISTORY_FILE}.history")
    except FieldError as exc:
        raise _damaged(folder, _field_problem(HISTORY_FILE, exc), fix) from None
    return list(data.get("history", []))


def _field_problem(file: str, exc: FieldError) -> str:
    """``generator.json: target lacks 'fingerprint'`` from a FieldError whose path starts with the file's name."""
    inside = exc.where[len(file):].lstrip(". ") if exc.where.startswith(file) else exc.where
    return f"{file}: {inside + ' ' if inside else ''}{exc.problem}"


def check_target(artifact: GeneratorArtifact, *, fingerprint: str, preprocessing: str,
                 dimension: int | None = None) -> None:
    """Refuse a generator trained against another model (or other chips), or one whose network
    does not take this target's vectors."""
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
    if dimension is not None and artifact.model().embedding_dim != dimension:
        raise _damaged(artifact.folder, f"its network takes {artifact.model().embedding_dim}-dimensional "
                                        f"embeddings, the target's have {dimension}", None)
