"""Training: reproducible, resumable after a kill, weights-only checkpoints, selection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from audit.errors import InputError
from probes.inversion.training import (TrainingConfig, evaluate, load_checkpoint, load_generator,
                                       make_optimizer, train_generator)
from probes.inversion.generator import InversionGenerator
from probes.inversion.defaults import DEFAULT_BETAS

DIM = 16
N_TRAIN, N_VAL = 32, 12


class ProjectionTarget:
    """A stand-in target: a fixed random projection of the 8x8 downsampled image."""

    def __init__(self, seed: int = 0) -> None:
        self.w = np.random.default_rng(seed).normal(size=(8 * 8 * 3, DIM)) / np.sqrt(8 * 8 * 3)
        self.calls = 0

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        small = images.reshape(len(images), 8, 8, 8, 8, 3).mean(axis=(2, 4)) / 255.0
        return (small.reshape(len(images), -1) @ self.w).astype(np.float32), np.ones(len(images), bool)


@pytest.fixture(scope="module")
def data() -> dict:
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, size=(N_TRAIN + N_VAL, 64, 64, 3), dtype=np.uint8)
    embeddings, _ = ProjectionTarget()(chips)
    return {"train": (embeddings[:N_TRAIN], chips[:N_TRAIN]), "val": (embeddings[N_TRAIN:], chips[N_TRAIN:])}


def config(**overrides) -> TrainingConfig:
    settings = dict(epochs=2, batch_size=16, base_channels=16, validate_every=1, seed=3, device="cpu")
    settings.update(overrides)
    return TrainingConfig(**settings)


def train(data: dict, folder: Path, embed_fn=None, **overrides):
    return train_generator(*data["train"], *data["val"], embed_fn=embed_fn or ProjectionTarget(),
                           metric="euclidean", config=config(**overrides), checkpoint_dir=folder,
                           progress=False)


def last_weights(folder: Path) -> dict:
    return load_checkpoint(folder / "last.pt")["model"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_other_seed_other_weights(data: dict, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    train(data, tmp_path / "a")
    train(data, tmp_path / "b")
    train(data, tmp_path / "c", seed=4)
    assert same_weights(last_weights(tmp_path / "a"), last_weights(tmp_path / "b"))
    assert not same_weights(last_weights(tmp_path / "a"), last_weights(tmp_path / "c"))


def test_resume_gives_the_weights_of_an_uninterrupted_run(data: dict, tmp_path: Path) -> None:
    first = train(data, tmp_path / "resumed", epochs=2)
    assert first.resumed_from_epoch == 0 and [h["epoch"] for h in first.history] == [1, 2]
    resumed = train(data, tmp_path / "resumed", epochs=4)
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_trained_now == 2
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    straight = train(data, tmp_path / "straight", epochs=4)
    assert same_weights(last_weights(tmp_path / "resumed"), last_weights(tmp_path / "straight"))
    assert resumed.history == straight.history
    assert resumed.best_epoch == straight.best_epoch
    # Asking again for 4 epochs trains nothing and returns the same best model.
    again = train(data, tmp_path / "resumed", epochs=4)
    assert again.epochs_trained_now == 0
    assert same_weights(again.model.state_dict(), resumed.model.state_dict())


class Crash(RuntimeError):
    pass


def test_a_killed_run_loses_at_most_one_epoch(data: dict, tmp_path: Path) -> None:
    target = ProjectionTarget()

    def dies_in_epoch_3(images: np.ndarray):
        if target.calls == 2:  # validation of epochs 1 and 2 succeeded
            raise Crash("killed")
        return target(images)

    with pytest.raises(Crash):
        train(data, tmp_path / "killed", embed_fn=dies_in_epoch_3, epochs=4)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 2
    assert json.loads((tmp_path / "killed" / "history.json").read_text())["history"][-1]["epoch"] == 2
    resumed = train(data, tmp_path / "killed", epochs=4)
    assert resumed.resumed_from_epoch == 2
    train(data, tmp_path / "straight", epochs=4)
    assert same_weights(last_weights(tmp_path / "killed"), last_weights(tmp_path / "straight"))


def test_resume_refuses_other_settings_or_data(data: dict, tmp_path: Path) -> None:
    train(data, tmp_path / "run", epochs=1)
    with pytest.raises(InputError) as exc:
        train(data, tmp_path / "run", epochs=2, lr=2e-4)
    assert "lr: checkpoint 0.001, now 0.0002" in str(exc.value)
    other = {"train": (data["train"][0] + 1.0, data["train"][1]), "val": data["val"]}
    with pytest.raises(InputError) as exc:
        train(other, tmp_path / "run", epochs=2)
    assert "training/validation data (embeddings or chips) differ" in str(exc.value)
    train(data, tmp_path / "two", epochs=2)
    with pytest.raises(InputError, match="is at epoch 2, past epochs=1"):
        train(data, tmp_path / "two", epochs=1)


def test_checkpoints_load_weights_only_and_best_is_returned(data: dict, tmp_path: Path) -> None:
    result = train(data, tmp_path / "run", epochs=3)
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(tmp_path / "run" / name, weights_only=True)
        assert ckpt["generator"] == {"embedding_dim": DIM, "image_size": 64, "base_channels": 16}
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["epoch"] == result.best_epoch
    scores = {h["epoch"]: h["val_score"] for h in result.history}
    assert result.best_epoch == min(scores, key=scores.get)
    assert result.best_val_mean_distance == pytest.approx(result.history[result.best_epoch - 1]["val_mean_distance"])
    model = load_generator(tmp_path / "run" / "best.pt")
    z = torch.from_numpy(data["val"][0])
    with torch.no_grad():
        assert torch.equal(model(z), result.model(z))
    assert not result.model.training
    history = json.loads((tmp_path / "run" / "history.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(h["train_loss"] > 0 and h["val_failures"] == 0 for h in history)


def test_validate_every_and_training_lowers_the_loss(data: dict, tmp_path: Path) -> None:
    result = train(data, tmp_path / "run", epochs=5, validate_every=2, batch_size=32)
    validated = [h["epoch"] for h in result.history if h["val_mean_distance"] is not None]
    assert validated == [2, 4, 5]  # every 2 epochs and after the last
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.device == "cpu" and result.samples_per_second > 0


def test_evaluate_counts_failures_and_penalises_them() -> None:
    real = np.zeros((4, 2), dtype=np.float32)
    answers = np.array([[0.1, 0.0], [0.3, 0.0], [np.nan, np.nan], [np.nan, np.nan]], dtype=np.float32)

    def embed_fn(images: np.ndarray):
        assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
        return answers, np.array([True, True, False, False])

    model = InversionGenerator(2, base_channels=8)
    val = evaluate(model, real, embed_fn=embed_fn, metric="euclidean", device=torch.device("cpu"))
    assert val["val_failures"] == 2
    assert val["val_mean_distance"] == pytest.approx(0.2)
    assert val["val_score"] == pytest.approx((0.1 + 0.3 + 2 * 0.3) / 4)  # failures count as the worst
    val = evaluate(model, real, embed_fn=embed_fn, metric="euclidean", device=torch.device("cpu"),
                   failure_distance=1.0)
    assert val["val_score"] == pytest.approx((0.1 + 0.3 + 2.0) / 4)


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "epochs=0, must be a positive integer."),
    ({"batch_size": 1}, "batch_size=1, must be at least 2"),
    ({"lr": 0}, "lr=0, must be a number in (0, 1)"),
    ({"noise_std": -0.1}, "noise_std=-0.1, must be a finite number >= 0"),
    ({"device": "tpu"}, "device='tpu', must be 'auto', 'cpu', 'cuda' or 'cuda:N'."),
    ({"image_size": 96}, "image_size=96, must be one of (64, 128)."),
    ({"betas": (0.5,)}, "betas=(0.5,), must be two numbers in [0, 1)"),
])
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError) as exc:
        TrainingConfig(**kwargs)
    assert message in str(exc.value)


def test_amp_refused_on_cpu_and_bad_chips(data: dict, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="amp=True needs a CUDA device"):
        train(data, tmp_path / "amp", amp=True)
    bad = {"train": (data["train"][0], data["train"][1][:, :32, :32]), "val": data["val"]}
    with pytest.raises(InputError, match=r"train_chips has shape \(32, 32, 32, 3\)"):
        train(bad, tmp_path / "bad")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_up_to_floating_point(data: dict, tmp_path: Path) -> None:
    cpu = train(data, tmp_path / "cpu", epochs=2, device="cpu")
    gpu = train(data, tmp_path / "gpu", epochs=2, device="cuda")
    assert gpu.device.startswith("cuda")
    z = torch.from_numpy(data["val"][0])
    with torch.no_grad():
        a, b = cpu.model(z), gpu.model.cpu()(z)
    # Same random draws on both (one CPU generator); only arithmetic differs (TF32, kernel order).
    assert torch.allclose(a, b, atol=2e-2)
    assert [h["epoch"] for h in cpu.history] == [h["epoch"] for h in gpu.history]


def test_cpu_optimizer_is_fused_adam_with_the_default_adams_update() -> None:
    torch.manual_seed(0)
    models = [InversionGenerator(DIM, base_channels=8) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = make_optimizer(models[0], device="cpu")
    plain = torch.optim.Adam(models[1].parameters(), lr=fused.defaults["lr"], betas=fused.defaults["betas"])
    assert fused.defaults["fused"] and fused.defaults["betas"] == DEFAULT_BETAS
    z = torch.randn(4, DIM)
    for _ in range(3):
        for model, optimizer in zip(models, (fused, plain)):
            optimizer.zero_grad(set_to_none=True)
            model(z).square().mean().backward()
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    # their states are interchangeable: a checkpoint of one resumes in the other
    make_optimizer(models[1], device="cpu").load_state_dict(plain.state_dict())
    plain.load_state_dict(fused.state_dict())


class _PooledProjection(torch.nn.Module):
    """A tiny differentiable 'target': 150x150 input pooled to 8x8, projected (the white-box stand-in)."""

    input_size = 150

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8 * 8 * 3, DIM, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.nn.functional.adaptive_avg_pool2d(x / 255.0, 8).flatten(1))


def test_identity_loss_is_off_by_default_and_changes_training_when_on(data: dict, tmp_path: Path) -> None:
    plain = train(data, tmp_path / "plain")
    assert config().identity_weight == 0.0
    with pytest.raises(InputError, match="identity_weight=0.5 needs the target's network in PyTorch"):
        train(data, tmp_path / "no-model", identity_weight=0.5)
    model = _PooledProjection()
    white = train_generator(*data["train"], *data["val"], embed_fn=ProjectionTarget(), metric="euclidean",
                            config=config(identity_weight=0.5), checkpoint_dir=tmp_path / "white",
                            progress=False, identity_model=model)
    assert not same_weights(last_weights(tmp_path / "plain"), last_weights(tmp_path / "white"))
    assert all(not p.requires_grad for p in model.parameters())   # the target is never trained
    assert white.history[-1]["train_loss"] > plain.history[-1]["train_loss"]  # the identity term adds to the loss


def test_identity_distance_is_differentiable_and_zero_on_its_own_embedding() -> None:
    from probes.inversion.training import identity_distance

    model = _PooledProjection()
    images = torch.rand(4, 3, 64, 64, requires_grad=True)
    with torch.no_grad():
        own = model(torch.nn.functional.interpolate(images, size=(150, 150), mode="bilinear") * 255.0)
    assert identity_distance(images, own, model, "euclidean").item() == pytest.approx(0.0, abs=1e-4)
    loss = identity_distance(images, torch.zeros_like(own), model, "euclidean")
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_cosine_schedule_decays_to_near_zero_and_constant_stays() -> None:
    from probes.inversion.training import TrainingConfig

    cosine = TrainingConfig(epochs=10, lr=1e-3, lr_schedule="cosine")
    assert cosine.lr_at(1) == pytest.approx(1e-3) and cosine.lr_at(6) == pytest.approx(5e-4)
    assert cosine.lr_at(10) < 0.03e-3
    assert TrainingConfig(epochs=10, lr=1e-3).lr_at(10) == 1e-3
    # The method's values are left out of the dict, so older checkpoints keep resuming.
    assert "lr_schedule" not in TrainingConfig().to_dict() and cosine.to_dict()["lr_schedule"] == "cosine"
    with pytest.raises(InputError, match="lr_schedule='step'"):
        TrainingConfig(lr_schedule="step")
