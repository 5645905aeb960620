"""What ``audit run`` is asked to do: its settings, checked before anything is embedded.

Importable without torch: the command line builds a :class:`RunConfig`
(and so refuses every bad setting) before it loads the runner.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from audit.errors import InputError
from audit.faces import FaceConfig
from audit.probe_registry import BUILT_IN_NAMES, check_probe_selection, needed_inputs
from audit.results import CORRECTIONS
from probes.inversion.config import TrainingConfig
from probes.inversion.defaults import (DEFAULT_BASE_CHANNELS, DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_IMAGE_SIZE,
                                       DEFAULT_LR, DEFAULT_VALIDATE_EVERY, MAX_SEED)

#: The built-in probes (a plugin's or a registered probe's name is accepted too: audit.probe_registry).
PROBES = BUILT_IN_NAMES
DEFAULT_PROBES = PROBES
DEFAULT_SEED = 0
DEFAULT_N_RESAMPLES = 1000
#: Resamples behind an interval: 100x the default, past which a run's bootstrap takes hours.
MAX_N_RESAMPLES = 100_000
#: Generators trained with different seeds (each is a whole training).
MAX_GENERATOR_SEEDS = 100
#: A cloud target's request budget: a whole number well inside 64 bits.
MAX_REQUESTS = 10 ** 12
#: How findings are chosen among the disparities (--correction).
DEFAULT_CORRECTION = "holm"

@dataclass(frozen=True)
class RunConfig:
    """Everything ``audit run`` needs, validated at construction."""

    dataset_dir: Path | str           # a local folder, or a URL (file://, s3://) for cluster workers
    out_dir: Path
    target_spec: str = "dlib"
    target_options: tuple[str, ...] = ()
    group_by: tuple[str, ...] | None = None
    probes: tuple[str, ...] = DEFAULT_PROBES
    face_config: FaceConfig = FaceConfig()
    cache_path: Path | None = None
    use_cache: bool = True
    workers: int | None = None
    scheduler: str | None = None      # --scheduler: a Dask scheduler's address, or local[:N]
    seed: int = DEFAULT_SEED
    epochs: int = DEFAULT_EPOCHS
    image_size: int = DEFAULT_IMAGE_SIZE
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    validate_every: int = DEFAULT_VALIDATE_EVERY
    average_identities: bool = False
    generator_channels: int = DEFAULT_BASE_CHANNELS
    identity_loss: float = 0.0
    #: Train the generator on these corpora and test every audit person (``--train-dataset``).
    train_datasets: tuple[Path, ...] = ()
    #: Finished generator folders to use instead of training (``--generator``, repeatable).
    generator_paths: tuple[Path, ...] = ()
    train_balance: str = "group-by"
    train_per_group: int | None = None
    generator_seeds: int = 1
    near_duplicate_distance: float | None = None
    n_resamples: int = DEFAULT_N_RESAMPLES
    correction: str = DEFAULT_CORRECTION
    pairs_file: Path | str | None = None   # a local file, or a URL read through fsspec
    report: bool = True
    no_faces: bool = False
    #: Write into an --out folder that holds files the tool did not write (``--overwrite``).
    overwrite: bool = False
    policy_path: Path | None = None
    baseline_path: Path | None = None
    max_requests: int | None = None
    device: str = "auto"
    show_progress: bool = True
    command_line: str = ""

    def __post_init__(self) -> None:
        check_probe_selection(self.probes)
        if self.epochs < 1:
            raise InputError(f"--epochs {self.epochs!r}: must be at least 1.")
        if self.image_size not in (64, 128):
            raise InputError(f"--image-size {self.image_size!r}: must be 64 or 128.")
        if self.n_resamples < 100:
            raise InputError(f"--resamples {self.n_resamples!r}: use at least 100 for a 95% interval.")
        if self.n_resamples > MAX_N_RESAMPLES:
            raise InputError(f"--resamples {self.n_resamples!r}: at most {MAX_N_RESAMPLES:,} (the default "
                             f"{DEFAULT_N_RESAMPLES:,} gives a 95% interval to about 1%).")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"--seed {self.seed!r}: must be a whole number from 0 to {MAX_SEED}.")
        if self.train_datasets and self.generator_paths:
            raise InputError("--generator and --train-dataset exclude each other: either reuse finished "
                             "generators or train one on a corpus.")
        if not 1 <= self.generator_seeds <= MAX_GENERATOR_SEEDS:
            raise InputError(f"--generator-seeds {self.generator_seeds!r}: must be from 1 to {MAX_GENERATOR_SEEDS}.")
        if self.seed + self.generator_seeds - 1 > MAX_SEED:
            raise InputError(f"--seed {self.seed} with --generator-seeds {self.generator_seeds}: the generators "
                             f"are seeded {self.seed} to {self.seed + self.generator_seeds - 1}, past the largest "
                             f"seed, {MAX_SEED}. Use a smaller --seed.")
        if self.generator_paths and self.generator_seeds != 1:
            raise InputError("--generator-seeds trains generators; with --generator, pass one --generator "
                             "folder per seed instead.")
        if self.train_per_group is not None and self.train_per_group < 1:
            raise InputError(f"--train-per-group {self.train_per_group!r}: must be at least 1.")
        if self.correction not in CORRECTIONS:
            raise InputError(f"--correction {self.correction!r}: choose {' or '.join(CORRECTIONS)} (Holm: "
                             "family-wise error, the default; bh: Benjamini-Hochberg false discovery rate).")
        if "generators" in needed_inputs(self.probes):
            self.training_config()   # every training setting is checked before any image is embedded

    def training_config(self) -> TrainingConfig:
        """The generator's training settings (validated: a bad value fails before the embed stage)."""
        return TrainingConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                              validate_every=self.validate_every, seed=self.seed, device=self.device,
                              image_size=self.image_size, base_channels=self.generator_channels,
                              identity_weight=self.identity_loss)

    def settings(self) -> dict:
        """The settings results.json records (paths as given, never secrets)."""
        data = asdict(self)
        data["train_datasets"] = [str(p) for p in self.train_datasets]
        data["generator_paths"] = [str(p) for p in self.generator_paths]
        data["face_config"] = asdict(self.face_config)
        data["target_options"] = [o.split("=", 1)[0] + "=..." if "key" in o.lower() or "pat" in o.lower()
                                  else o for o in self.target_options]
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()
                if k not in ("show_progress", "command_line")}
