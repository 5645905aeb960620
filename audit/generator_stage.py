"""Getting the inversion generators for an audit: reuse a saved one, or train on a corpus.

``audit run --train-dataset CORPUS`` and ``audit generator train`` share
this stage.  It loads the corpus, drops every image that shows an audit
image or person (:mod:`probes.inversion.training_set`), balances the rest
over the audit's groups, embeds what is left through the target (cached
like every embedding), splits off validation people, and then, for each
generator seed, either finds a finished generator for exactly that training
set and those settings in the generator cache, or trains one there
(resumable: a killed run resumes from its last epoch).  ``audit run
--generator GEN/`` skips all that and checks the saved generator instead:
same target, and no audit image or person among its training faces.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from audit import __version__
from audit.data.manifest import load_dataset
from audit.errors import InputError
from audit.outputs import check_own_folder, check_writable_folder, mark_own_folder, private_folder
from audit.pipeline import default_group_by, open_embedder, open_target
from audit.targets.base import STATUS_OK, Target
from probes.inversion.artifact import (GENERATOR_FOLDER_KIND, TRAINING_SET_COLUMNS, GeneratorArtifact,
                                       generator_cache_dir, generator_key, is_complete, is_generator_folder,
                                       read_artifact, write_artifact)
from probes.inversion.splits import SPLIT_TRAIN, SPLIT_VAL, split_identities
from probes.inversion.splits import average_identities as average_chips
from probes.inversion.training import TrainingConfig, train_generator
from probes.inversion.training_set import (BALANCE_GROUP_BY, MIN_TRAINING_IMAGES, REASON_BALANCE,
                                           REASON_NEAR_DUPLICATE, REASON_NO_FACE, REASON_NO_LABEL,
                                           balance_attributes, composition, corpus_origin,
                                           default_near_duplicate_distance, near_duplicate_mask,
                                           overlap_reasons, plan_balance, trim_to_balance)

log = logging.getLogger(__name__)

#: Validation people: this share of the training people, within these bounds.  Each
#: validation round embeds one reconstruction per validation person through the target.
DEFAULT_VAL_FRACTION = 0.05
MIN_VAL_PEOPLE = 20
MAX_VAL_PEOPLE = 500
#: Columns every side of the overlap check carries (a saved generator's training set among them).
KEY_COLUMNS = TRAINING_SET_COLUMNS


@dataclass(frozen=True)
class CorpusSettings:
    """How the training set is drawn from the corpus (``--train-*`` options)."""

    datasets: tuple[Path, ...]
    balance: str = BALANCE_GROUP_BY
    per_group: int | None = None
    near_duplicate_distance: float | None = None

    def __post_init__(self) -> None:
        if not self.datasets:
            raise InputError("a training corpus needs at least one dataset (--train-dataset DIR).")
        if self.per_group is not None and self.per_group < 1:
            raise InputError(f"--train-per-group {self.per_group!r}: must be at least 1.")
        if self.near_duplicate_distance is not None and not self.near_duplicate_distance >= 0:
            raise InputError(f"--near-duplicate-distance {self.near_duplicate_distance!r}: must be >= 0.")


@dataclass
class AuditSide:
    """The images the generator must never have seen: their keys and vectors."""

    table: pd.DataFrame          # KEY_COLUMNS
    vectors: np.ndarray

    @classmethod
    def empty(cls, dimension: int) -> "AuditSide":
        return cls(pd.DataFrame({c: pd.Series([], dtype=object) for c in KEY_COLUMNS}),
                   np.zeros((0, dimension), dtype=np.float32))


@dataclass
class TrainingSet:
    """Training and validation faces for the generator, with what was left out and why."""

    table: pd.DataFrame          # one row per kept image: KEY_COLUMNS, dataset, attributes, split
    vectors: np.ndarray
    chips: np.ndarray
    dropped: dict[str, int]
    balance_attributes: tuple[str, ...]
    per_group: int | None
    candidates: int
    composition: dict = field(default_factory=dict)

    def rows(self, split: str) -> np.ndarray:
        return (self.table["split"] == split).to_numpy()

    def summary(self) -> dict:
        train = self.table[self.rows(SPLIT_TRAIN)]
        return {"n_candidates": self.candidates, "n_train_images": int(len(train)),
                "n_train_people": int(train["identity"].nunique()),
                "n_val_people": int(self.rows(SPLIT_VAL).sum()), "dropped": dict(self.dropped),
                "balanced_over": list(self.balance_attributes), "per_group": self.per_group,
                "composition": self.composition,
                "datasets": sorted(set(self.table["dataset"].astype(str)))}


def dataset_keys(dataset, content_hashes: Sequence[str] | None = None) -> pd.DataFrame:
    """KEY_COLUMNS for every row of a loaded dataset's table."""
    table = dataset.table
    return pd.DataFrame({
        "content_hash": list(content_hashes) if content_hashes is not None else table["sha256"].astype(str).tolist(),
        "identity": table["identity"].astype(str).to_numpy(),
        "origin": corpus_origin(dataset.root, dataset.info),
        "has_identities": bool(dataset.has_identities),
    })


def _corpus_table(corpora: Sequence) -> pd.DataFrame:
    frames = []
    for dataset in corpora:
        frame = dataset.table.copy()
        keys = dataset_keys(dataset)
        for column in KEY_COLUMNS:
            frame[column] = keys[column].to_numpy()
        frame["dataset"] = str(dataset.root)
        frame["_corpus"] = len(frames)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True).fillna("")
    return table


#: What to do about a corpus that is all audit set, by command.
FIX_RUN = ("train on another corpus (--train-dataset OTHER: e.g. all of UTKFace or LFW when the audit set is "
           "drawn from one of them, it is left out automatically), or use a finished generator (--generator GEN)")
FIX_TRAIN = ("train on another corpus (--dataset OTHER), or exclude ('--exclude') only the datasets you "
             "will audit with this generator")


def check_corpus_not_all_audit(corpora: Sequence, audit: pd.DataFrame, *, fix: str = FIX_RUN) -> None:
    """Refuse, before any image is embedded, a corpus whose every image is an audit image or person.

    The overlap that needs no model (the same file, by its manifest hash, or
    the same person of the same source) is what :func:`build_training_set`
    drops first; when it drops everything there is nothing to train on
    (``--dataset C --train-dataset C``), and that is known from the manifests alone.
    """
    if not corpora:
        return
    audit = audit[audit["content_hash"].astype(str) != ""]     # a hash not yet known matches nothing
    table = _corpus_table(corpora)
    reasons = overlap_reasons(table, audit)
    if len(table) and (reasons != "").all():
        _refuse_empty_corpus(corpora, {r: int((reasons == r).sum()) for r in sorted(set(reasons))}, fix)


def _refuse_empty_corpus(corpora: Sequence, dropped: dict[str, int], fix: str) -> None:
    names = ", ".join(repr(str(d.root)) for d in corpora)
    raise InputError(f"the training corpus {names} leaves no image to train the generator on: every one of its "
                     f"images is an audit image or shows an audited person ({_dropped_text(dropped)}), and a "
                     f"generator must never have seen the faces it reconstructs. Fix: {fix}.")


def build_training_set(embedder, corpora: Sequence, audit: AuditSide, *, group_by: Sequence[str],
                       settings: CorpusSettings, chip_size: int, seed: int = 0, fix: str = FIX_RUN) -> TrainingSet:
    """The corpus minus the audit set, balanced, embedded, split into train and validation people."""
    target: Target = embedder.target
    table = _corpus_table(corpora)
    candidates = len(table)
    dropped: dict[str, int] = {}

    def drop(reason: str, n: int) -> None:
        if n:
            dropped[reason] = dropped.get(reason, 0) + int(n)

    reasons = overlap_reasons(table, audit.table)
    for reason in sorted(set(reasons) - {""}):
        drop(reason, (reasons == reason).sum())
    table = table[reasons == ""].reset_index(drop=True)
    if table.empty:
        _refuse_empty_corpus(corpora, dropped, fix)

    attributes = balance_attributes(table, settings.balance, group_by)
    plan = plan_balance(table, attributes, per_group=settings.per_group, seed=seed)
    drop(REASON_NO_LABEL, len(plan.dropped_no_label))
    drop(REASON_BALANCE, len(table) - len(plan.selected) - len(plan.dropped_no_label))
    chosen = table.iloc[plan.selected].reset_index(drop=True)
    if chosen.empty:
        raise InputError(f"the training corpus ({', '.join(str(d.root) for d in corpora)}) leaves no image to embed "
                         f"after removing the audit set and balancing over {', '.join(attributes)} "
                         f"({_dropped_text(dropped)}): give a corpus with those labels, or --train-balance none.")

    embset = _embed_rows(embedder, corpora, chosen, chip_size)
    usable = embset.ok & (embset.table["chip_status"].to_numpy() == STATUS_OK)
    drop(REASON_NO_FACE, (~usable).sum())
    max_distance = (settings.near_duplicate_distance if settings.near_duplicate_distance is not None
                    else default_near_duplicate_distance(target.default_threshold))
    near = near_duplicate_mask(embset.vectors, audit.vectors, metric=target.metric, max_distance=max_distance)
    near &= usable
    drop(REASON_NEAR_DUPLICATE, near.sum())
    usable &= ~near
    if attributes:
        keep = trim_to_balance(plan.cells, usable, plan.per_group)
        drop(REASON_BALANCE, (usable & ~keep).sum())
    else:
        keep = usable
    if keep.sum() < 2:
        raise InputError(f"the training corpus ({', '.join(str(d.root) for d in corpora)}) leaves {int(keep.sum())} "
                         f"usable image(s) after removing the audit set and balancing ({_dropped_text(dropped)}): "
                         "give a larger corpus, or --train-balance none.")
    kept = chosen[keep].reset_index(drop=True)
    kept["content_hash"] = embset.table["content_hash"].to_numpy()[keep]
    vectors = embset.vectors[keep]
    chips = embset.chips[keep]
    split = _split_train_val(kept, attributes, seed)
    kept["split"] = split.to_numpy()
    in_use = kept["split"].isin([SPLIT_TRAIN, SPLIT_VAL]).to_numpy()
    drop("other_images_of_validation_people", (~in_use).sum())
    kept, vectors, chips = kept[in_use].reset_index(drop=True), vectors[in_use], chips[in_use]
    columns = [*KEY_COLUMNS, "dataset", "image_id", *[a for a in group_by if a in kept.columns],
               *[a for a in attributes if a not in group_by], "split"]
    kept = kept.loc[:, list(dict.fromkeys(columns))]
    train = kept[kept["split"] == SPLIT_TRAIN]
    return TrainingSet(kept, vectors, chips, dropped, attributes, plan.per_group, candidates,
                       composition(train, list(dict.fromkeys([*attributes, *[a for a in group_by if a in train.columns]]))))


def _embed_rows(embedder, corpora: Sequence, rows: pd.DataFrame, chip_size: int):
    """Embed the chosen corpus rows (cached), each through its own dataset folder."""
    parts, order = [], []
    for index, dataset in enumerate(corpora):
        mine = np.flatnonzero(rows["_corpus"].to_numpy() == index)
        if not len(mine):
            continue
        subset = dataclasses.replace(dataset, table=dataset.table.set_index("image_id").loc[
            rows["image_id"].iloc[mine]].reset_index())
        parts.append(embedder.embed_dataset(subset, chip_size=chip_size))
        order.append(mine)
    position = np.argsort(np.concatenate(order)) if order else np.zeros(0, int)
    table = pd.concat([p.table for p in parts], ignore_index=True).iloc[position].reset_index(drop=True)
    vectors = np.concatenate([p.vectors for p in parts])[position]
    chips = np.concatenate([p.chips for p in parts])[position]
    return dataclasses.replace(parts[0], table=table, vectors=vectors, chips=chips)


def _split_train_val(table: pd.DataFrame, attributes: Sequence[str], seed: int) -> pd.Series:
    n_people = table["identity"].nunique()
    n_val = min(MAX_VAL_PEOPLE, max(MIN_VAL_PEOPLE, int(round(DEFAULT_VAL_FRACTION * n_people))))
    fraction = min(0.5, n_val / max(n_people, 1))
    stratify = [a for a in attributes if a in table.columns]
    return split_identities(table, person="identity", stratify=stratify, val_fraction=fraction,
                            test_fraction=0.0, seed=seed)


def _dropped_text(dropped: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in dropped.items()) or "nothing dropped"


# --------------------------------------------------------------------------- generators

@dataclass
class GeneratorRequest:
    """Everything that decides a generator's weights, and where it is kept."""

    target: Target
    preprocessing: str
    config: TrainingConfig
    average_identities: bool = False
    identity_model: object | None = None
    progress: bool = True


def obtain_generator(request: GeneratorRequest, training: TrainingSet, *, embed_fn, folder: Path | None,
                     cache_path: Path | None) -> GeneratorArtifact:
    """A finished generator for ``training``: from ``folder`` or the cache if done, else trained there."""
    train = training.rows(SPLIT_TRAIN)
    val = training.rows(SPLIT_VAL)
    hashes = training.table["content_hash"].astype(str).to_numpy()
    key = generator_key(target_fingerprint=request.target.fingerprint(), preprocessing=request.preprocessing,
                        train_hashes=hashes[train], val_hashes=hashes[val], config=request.config,
                        average_identities=request.average_identities)
    request_folder = folder is not None
    if folder is None:
        if cache_path is None:
            raise InputError("no folder for the generator: pass --out GEN/ or use the cache.")
        folder = private_folder(generator_cache_dir(cache_path)) / key[:32]
    folder = Path(folder)
    if is_complete(folder):
        artifact = read_artifact(folder, fix=f"delete {str(folder)!r} and run the same command again to train "
                                             "it anew" if cache_path is not None and not request_folder else None)
        if artifact.info.get("key") == key:
            log.info("reusing the generator in %s", folder)
            return artifact
        raise InputError(f"{str(folder)!r} holds a finished generator for other training data or settings; "
                         "choose another --out folder (or delete that one).")
    chips = training.chips[train]
    if request.average_identities:
        chips = average_chips(chips, training.table["identity"].to_numpy()[train])
    private_folder(folder)
    mark_own_folder(folder, kind=GENERATOR_FOLDER_KIND)   # before the first checkpoint: a rerun resumes here
    started = time.monotonic()
    result = train_generator(training.vectors[train], chips, training.vectors[val], training.chips[val],
                             embed_fn=embed_fn, metric=request.target.metric, config=request.config,
                             checkpoint_dir=folder, progress=request.progress,
                             identity_model=request.identity_model)
    info = {
        "key": key,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tool_version": __version__,
        "target": request.target.info().to_dict(),
        "preprocessing": request.preprocessing,
        "settings": request.config.to_dict(),
        "average_identities": request.average_identities,
        "training_set": training.summary(),
        "best_epoch": result.best_epoch,
        "best_val_mean_distance": result.best_val_mean_distance,
        "device": result.device,
        "training_seconds": round(time.monotonic() - started, 1),
        "samples_per_second": result.samples_per_second,
    }
    info["target"]["fingerprint"] = request.target.fingerprint()
    write_artifact(folder, info=info, training_set=training.table, training_vectors=training.vectors)
    return read_artifact(folder)


def check_artifact_against_audit(artifact: GeneratorArtifact, audit: AuditSide, *, metric: str,
                                 max_distance: float) -> None:
    """Refuse a saved generator that trained on any audit image or person."""
    reasons = overlap_reasons(artifact.training_set.assign(
        has_identities=artifact.training_set["has_identities"].astype(str).str.lower() == "true"), audit.table)
    near = near_duplicate_mask(artifact.training_vectors.astype(np.float32), audit.vectors, metric=metric,
                               max_distance=max_distance)
    counts = {r: int((reasons == r).sum()) for r in sorted(set(reasons) - {""})}
    n_near = int((near & (reasons == "")).sum())
    if n_near:
        counts[REASON_NEAR_DUPLICATE] = n_near
    if counts:
        raise InputError(
            f"--generator {str(artifact.folder)!r} was trained on faces of this audit set "
            f"({_dropped_text(counts)} training images), so its reconstructions of them would be "
            "recalled, not inverted. Train a generator without them: 'audit generator train ... --exclude "
            "AUDIT_DATASET', or audit with --train-dataset CORPUS (the overlap is removed automatically).")


def identity_model_for(target: Target, identity_loss: float):
    """The target's differentiable network when ``--identity-loss`` asks for one (checked before any embedding)."""
    if identity_loss <= 0:
        return None
    model = target.differentiable_model()
    if model is None:
        raise InputError(f"--identity-loss needs a white-box target whose network runs in PyTorch "
                         f"(dlib); {target.name!r} is a black box to this tool.")
    return model


def training_size_warning(n_train: int) -> str | None:
    if n_train >= MIN_TRAINING_IMAGES:
        return None
    return (f"the generator trains on {n_train} images: an inverter needs thousands (the method used "
            f"~12,700) and below {MIN_TRAINING_IMAGES:,} it may not learn identity at all. Train it on a "
            "large corpus with --train-dataset (e.g. all of UTKFace or LFW) and audit this set as test data.")


def seeded_configs(config: TrainingConfig, n_seeds: int) -> list[TrainingConfig]:
    """One training config per generator seed: ``seed``, ``seed + 1``, ..."""
    if n_seeds < 1:
        raise InputError(f"--generator-seeds {n_seeds!r}: must be at least 1.")
    return [dataclasses.replace(config, seed=config.seed + k) for k in range(n_seeds)]


def train_generator_artifact(*, target_spec: str, target_options: Sequence[str], datasets: Sequence[Path],
                             excluded: Sequence[Path], out_dir: Path, group_by: Sequence[str] | None,
                             epochs: int, image_size: int, batch_size: int, lr: float, validate_every: int,
                             average_identities: bool, generator_channels: int, train_balance: str,
                             train_per_group: int | None, near_duplicate_distance: float | None,
                             identity_loss: float, device: str, seed: int, cache_path: Path | None,
                             use_cache: bool, face_config, workers: int | None,
                             show_progress: bool, scheduler: str | None = None,
                             overwrite: bool = False) -> GeneratorArtifact:
    """``audit generator train``: every setting checked first, then corpus, exclusions, training."""
    check_writable_folder(Path(out_dir), what="the generator folder", option="--out")
    check_own_folder(Path(out_dir), kind=GENERATOR_FOLDER_KIND, option="--out", overwrite=overwrite,
                     written_before=is_generator_folder)
    config = TrainingConfig(epochs=epochs, batch_size=batch_size, lr=lr, validate_every=validate_every, seed=seed,
                            device=device, image_size=image_size, base_channels=generator_channels,
                            identity_weight=identity_loss)
    settings = CorpusSettings(tuple(datasets), balance=train_balance, per_group=train_per_group,
                              near_duplicate_distance=near_duplicate_distance)
    corpora = [load_dataset(path) for path in datasets]
    audited = [load_dataset(path) for path in excluded]
    if audited:
        check_corpus_not_all_audit(corpora, pd.concat([dataset_keys(d) for d in audited], ignore_index=True),
                                   fix=FIX_TRAIN)
    group_by = tuple(group_by) if group_by else default_group_by(corpora[0])
    target = open_target(target_spec, target_options)
    identity_model = identity_model_for(target, identity_loss)
    with open_embedder(target, face_config=face_config, cache_path=cache_path, use_cache=use_cache,
                        workers=workers, show_progress=show_progress, scheduler=scheduler) as embedder:
        audit = AuditSide.empty(target.dimension)
        if audited:
            sides = []
            for dataset in audited:
                embset = embedder.embed_dataset(dataset, chip_size=None)
                sides.append(AuditSide(dataset_keys(dataset, embset.table["content_hash"].astype(str).tolist()),
                                       embset.vectors[embset.ok]))
            audit = AuditSide(pd.concat([a.table for a in sides], ignore_index=True),
                              np.concatenate([a.vectors for a in sides]))
        training = build_training_set(embedder, corpora, audit, group_by=group_by, settings=settings,
                                      chip_size=image_size, seed=seed, fix=FIX_TRAIN)
        warning = training_size_warning(int(training.rows(SPLIT_TRAIN).sum()))
        if warning:
            log.warning(warning)
        embed_fn = embedder.embed_arrays if embedder.reembedding_target is not None else None
        request = GeneratorRequest(target, embedder.preprocessing, config, average_identities=average_identities,
                                   identity_model=identity_model, progress=show_progress)
        return obtain_generator(request, training, embed_fn=embed_fn, folder=out_dir, cache_path=None)
