"""Concurrent Clarifai requests against a fake with a distant service's latency.

The embed stage hands the target enough images per call to keep every
request in flight, the budget stays exact, and a throttled answer holds
every thread back.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit.cache import EmbeddingCache
from audit.embedding import Embedder
from audit.errors import InputError, TargetStopped
from audit.targets.clarifai import ClarifaiTarget
from audit.targets.throttle import RequestGate
from tests.fake_clarifai import FakeClarifai, face_like_image
from tests.test_embedding import FolderDataset

KEY = "fake-pat-concurrency-0123456789"
FAST = {"retry_base_delay": "0.001", "retry_max_delay": "0.004", "timeout": "10", "batch_size": "1"}
LATENCY = 0.3
N_IMAGES = 32


@pytest.fixture()
def folder(tmp_path) -> FolderDataset:
    names = []
    for seed in range(N_IMAGES):
        name = f"img{seed:02d}.png"
        Image.fromarray(face_like_image(seed, size=64)).save(tmp_path / name)
        names.append(name)
    return FolderDataset(tmp_path, pd.DataFrame({"image_id": names, "path": names}))


@pytest.fixture()
def slow_fake(monkeypatch):
    monkeypatch.setenv("CLARIFAI_PAT", KEY)
    with FakeClarifai(key=KEY, latency_seconds=LATENCY) as server:
        yield server


def _embed(fake: FakeClarifai, folder: FolderDataset, cache_path: Path, concurrency: int):
    target = ClarifaiTarget(api_base=fake.url, seed=0, concurrency=str(concurrency),
                            max_requests=str(N_IMAGES), **FAST)
    posts_before, fake.max_in_flight = fake.count("POST"), 0
    started = time.perf_counter()
    with EmbeddingCache(cache_path) as cache:
        result = Embedder(target, cache=cache, workers=1, show_progress=False).embed_dataset(
            folder, chip_size=None)
    elapsed = time.perf_counter() - started
    return result, elapsed, fake.count("POST") - posts_before, fake.max_in_flight, target


@pytest.mark.slow
def test_eight_requests_in_flight_are_five_times_faster_with_the_same_vectors(slow_fake, folder, tmp_path):
    one, t_one, posts_one, peak_one, target_one = _embed(slow_fake, folder, tmp_path / "1.sqlite", 1)
    eight, t_eight, posts_eight, peak_eight, target_eight = _embed(slow_fake, folder,
                                                                   tmp_path / "8.sqlite", 8)
    assert (one.table["status"] == "ok").all() and (eight.table["status"] == "ok").all()
    np.testing.assert_array_equal(one.vectors, eight.vectors)
    # One image per request: 32 requests either way, exactly the budget, never more.
    assert posts_one == posts_eight == N_IMAGES
    assert target_one.requests_sent == target_eight.requests_sent == N_IMAGES
    assert peak_one == 1 and peak_eight == 8
    assert t_one >= N_IMAGES * LATENCY
    assert t_one / t_eight >= 5, f"concurrency 8 took {t_eight:.2f} s, concurrency 1 {t_one:.2f} s"


def test_a_budget_below_the_need_stops_at_exactly_the_budget_and_keeps_the_answers(folder, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("CLARIFAI_PAT", KEY)
    with FakeClarifai(key=KEY, latency_seconds=0.05) as fake:
        target = ClarifaiTarget(api_base=fake.url, seed=0, concurrency="8", max_requests="11", **FAST)
        cache = EmbeddingCache(tmp_path / "cache.sqlite")
        with pytest.raises(TargetStopped, match="max_requests=11 is spent"):
            Embedder(target, cache=cache, workers=1, show_progress=False).embed_dataset(folder,
                                                                                        chip_size=None)
        assert fake.count("POST") == 11 and fake.max_in_flight <= 8
        assert cache.count_embeddings() == 11            # every answered request is cached
        rest = ClarifaiTarget(api_base=fake.url, seed=0, concurrency="8", **FAST)
        result = Embedder(rest, cache=cache, workers=1, show_progress=False).embed_dataset(
            folder, chip_size=None)
        assert (result.table["status"] == "ok").all()
        assert fake.count("POST") == N_IMAGES            # the rerun paid only for the 21 left


def test_a_throttled_answer_holds_every_thread_back(monkeypatch):
    monkeypatch.setenv("CLARIFAI_PAT", KEY)
    with FakeClarifai(key=KEY, latency_seconds=0.05, retry_after="0.4") as fake:
        target = ClarifaiTarget(api_base=fake.url, seed=0, concurrency="4", retry_base_delay="0.001",
                                retry_max_delay="1", timeout="10", batch_size="1")
        fake.inject("http429")
        outcomes = target.embed([face_like_image(seed) for seed in range(12)])
    assert [o.status for o in outcomes] == ["ok"] * 12
    posts = [r for r in fake.requests if r.method == "POST"]
    throttled = next(r for r in posts if r.fault == "http429")
    # The 429 was answered 0.05 s after it arrived; no request of any thread started in
    # the 0.4 s Retry-After that followed (those arriving just after it had started before).
    answered = throttled.arrived + 0.05
    after = sorted(r.arrived - answered for r in posts if r.arrived > answered + 0.15)
    assert after and after[0] >= 0.4 - 0.02
    assert target._gate.waited_for_pauses > 0


def test_gate_spaces_starts_and_honours_pauses():
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    gate = RequestGate(requests_per_second=4, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        gate.wait_turn()
    assert slept == [0.25, 0.25]                     # starts 0.25 s apart
    gate.pause(2.0)                                  # another thread's 429: Retry-After 2
    gate.wait_turn()
    assert slept[-1] == 2.0
    gate.pause(1.0)
    gate.wait_turn(pause_served=True)                # the thread that slept out its own pause
    assert slept[-1] == 0.25
    assert gate.waited_for_pauses == pytest.approx(1.75)   # held past its own 0.25 s slot
    with pytest.raises(ValueError, match="requests_per_second=0"):
        RequestGate(requests_per_second=0)


def test_concurrency_and_rate_options_are_checked(monkeypatch):
    monkeypatch.setenv("CLARIFAI_PAT", KEY)
    with FakeClarifai(key=KEY) as fake:
        with pytest.raises(InputError, match="concurrency"):
            ClarifaiTarget(api_base=fake.url, concurrency="0")
        with pytest.raises(InputError, match="requests_per_second"):
            ClarifaiTarget(api_base=fake.url, requests_per_second="-1")
        target = ClarifaiTarget(api_base=fake.url, concurrency="3", batch_size="16")
        assert target.config.concurrency == 3 and target.preferred_batch == 48
        assert ClarifaiTarget(api_base=fake.url).config.concurrency == 4
