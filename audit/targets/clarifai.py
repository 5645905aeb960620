"""The Clarifai target: a face embedding model behind Clarifai's REST API.

The tool sends whole decoded images (``input_kind = "image"``); Clarifai
detects the faces and returns one embedding per face region.  The face of
an image is **the region with the largest bounding-box area** (ties: the
first listed); ``n_faces`` records how many regions carried an embedding,
so an audit can count images where the choice was made.  An image with no
region is ``no_face``.

Network behaviour, in short (``docs/targets.md`` has the table):

* ``concurrency`` requests are in flight at once (default
  :data:`DEFAULT_CONCURRENCY`), from a pool of threads sharing one
  :class:`~audit.targets.throttle.RequestGate`: an optional
  ``requests_per_second`` spaces their starts, and a throttled answer
  (HTTP 429 with ``Retry-After``, 11005, 10030, 21354) holds every thread
  back, not only the one that got it;
* every request has a timeout (:data:`DEFAULT_TIMEOUT`);
* throttling (HTTP 429, status 11005), "try again" (10030), "model busy"
  (21354), HTTP 5xx, timeouts, connection errors and malformed JSON are
  retried with exponential backoff and jitter (:class:`RetryConfig`);
  when the retries are spent, a transport or throttling failure stops the
  run (:class:`~audit.errors.TargetStopped`, exit 3, resumable) while a
  malformed answer marks that batch's images ``error`` (errors are never
  cached: a rerun asks again);
* the hourly or monthly limit (11003, 11004) and a spent ``max_requests``
  budget stop the run: no request starts after the stop, the requests
  already in flight are awaited, every answered one is kept (the
  exception's ``partial_outcomes``) and cached, and rerunning the same
  command resumes.  The budget is exact whatever the concurrency: a
  request, or a retry, is counted under a lock before it is sent;
* per-image failures inside a mixed answer (10010, e.g. 30002, 30300) are
  recorded as that image's ``error`` with the code.

The key (a Personal Access Token) is read from ``CLARIFAI_PAT`` or a file
(``pat_file``), never from the command line, and never appears in a log
line, a message, a repr or the results.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import os
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from audit.errors import InputError, TargetError, TargetStopped
from audit.targets.options import option_choice, option_float, option_int
from audit.targets.base import EmbedOutcome, Metric, Target
from audit.targets.throttle import RequestGate

log = logging.getLogger(__name__)

try:  # httpx is a core dependency; the guard keeps `audit targets` honest if it is absent.
    import httpx
except ImportError:  # pragma: no cover - exercised only on a broken install
    httpx = None  # type: ignore[assignment]

_INSTALL_HINT = "Install it with: pip install httpx"

DEFAULT_API_BASE = "https://api.clarifai.com"
#: Clarifai's original face embedding model ("face-v1.3" embedder, 1024-D).
DEFAULT_MODEL_ID = "d02b4508df58432fbb84e800597b8959"
#: Same-person euclidean distance for the default model's vectors.  A starting
#: point, not a published figure: set the threshold your deployment uses.
DEFAULT_THRESHOLD = 1.1
#: Clarifai accepts at most this many inputs in one predict request.
MAX_INPUTS_PER_REQUEST = 128
DEFAULT_BATCH_SIZE = MAX_INPUTS_PER_REQUEST
DEFAULT_JPEG_QUALITY = 95
#: Requests in flight at once.  A few hide the network's and the model's
#: latency; more mostly earn throttling answers on a free plan.
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 64
#: The reason given to the images of requests a stop left unsent.
NOT_SENT_REASON = "not embedded: the target stopped"
IMAGE_FORMATS = ("jpeg", "png")
#: Dimensions of models whose size is known without asking.
KNOWN_DIMENSIONS = {DEFAULT_MODEL_ID: 1024}

ENV_PAT = "CLARIFAI_PAT"
ENV_API_BASE = "CLARIFAI_API_BASE"

# Clarifai status codes (https://docs.clarifai.com/api-guide/api-overview/status-codes).
SUCCESS = 10000
MIXED_STATUS = 10010
FAILURE = 10020
TRY_AGAIN = 10030
HOURLY_LIMIT = 11003
MONTHLY_LIMIT = 11004
THROTTLED = 11005
MODEL_BUSY = 21354
MODEL_NOT_FOUND = (21200, 21202, 21203)
#: Retried with backoff: the service asks to come back shortly.
RETRY_CODES = frozenset({TRY_AGAIN, THROTTLED, MODEL_BUSY})
#: Stop the run: the user must wait (or upgrade) and rerun.
STOP_CODES = frozenset({HOURLY_LIMIT, MONTHLY_LIMIT})
#: The key is missing, wrong or lacks a scope: nothing to retry.
AUTH_CODES = frozenset({11000, 11001, 11002, 11007, 11008, 11009, 11010})


@dataclass(frozen=True)
class RetryConfig:
    """Exponential backoff with jitter, bounded.

    Attempt ``k`` (from 0) waits a uniform random time in
    ``[d/2, d]`` with ``d = min(max_delay, base_delay * 2**k)``; a server's
    ``Retry-After`` raises the wait (never above ``max_delay``).
    ``max_retries`` retries follow the first attempt.
    """

    max_retries: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise InputError(f"max_retries={self.max_retries!r}, must be >= 0.")
        if not self.base_delay >= 0:
            raise InputError(f"retry base_delay={self.base_delay!r}, must be >= 0 seconds.")
        if not self.max_delay >= self.base_delay:
            raise InputError(f"retry max_delay={self.max_delay!r} is below base_delay="
                             f"{self.base_delay!r}; raise max_delay.")

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_delay, self.base_delay * (2.0 ** attempt))
        return rng.uniform(ceiling / 2.0, ceiling)


DEFAULT_RETRY_CONFIG = RetryConfig()
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class ClarifaiConfig:
    """Everything about the connection except the key (which has no repr)."""

    model_id: str = DEFAULT_MODEL_ID
    version_id: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    api_base: str = DEFAULT_API_BASE
    batch_size: int = DEFAULT_BATCH_SIZE
    image_format: str = "jpeg"
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    max_requests: int | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    requests_per_second: float | None = None
    threshold: float = DEFAULT_THRESHOLD
    dimension: int | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS
    retry: RetryConfig = field(default_factory=lambda: DEFAULT_RETRY_CONFIG)

    def __post_init__(self) -> None:
        if not self.model_id or "/" in self.model_id:
            raise InputError(f"model_id={self.model_id!r} is not a Clarifai model id.")
        if (self.user_id is None) != (self.app_id is None):
            raise InputError(f"user_id={self.user_id!r} and app_id={self.app_id!r}: give both "
                             f"(a model in an app) or neither (the older /v2/models endpoint).")
        if not 1 <= self.batch_size <= MAX_INPUTS_PER_REQUEST:
            raise InputError(f"batch_size={self.batch_size!r}, must be between 1 and "
                             f"{MAX_INPUTS_PER_REQUEST} (Clarifai's limit per request).")
        if self.image_format not in IMAGE_FORMATS:
            raise InputError(f"image_format={self.image_format!r}, must be one of {IMAGE_FORMATS}.")
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"jpeg_quality={self.jpeg_quality!r}, must be between 1 and 100.")
        if self.max_requests is not None and self.max_requests < 1:
            raise InputError(f"max_requests={self.max_requests!r}, must be at least 1 "
                             f"(leave it out for no budget).")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise InputError(f"concurrency={self.concurrency!r}, must be between 1 and "
                             f"{MAX_CONCURRENCY} requests in flight.")
        if self.requests_per_second is not None and not self.requests_per_second > 0:
            raise InputError(f"requests_per_second={self.requests_per_second!r}, must be greater "
                             f"than 0 (leave it out for no rate limit).")
        if not self.threshold > 0:
            raise InputError(f"threshold={self.threshold!r}, must be a positive distance.")
        if self.dimension is not None and self.dimension < 1:
            raise InputError(f"dimension={self.dimension!r}, must be at least 1.")
        if not (self.timeout > 0 and self.connect_timeout > 0):
            raise InputError(f"timeout={self.timeout!r}, connect_timeout={self.connect_timeout!r}: "
                             f"both must be positive seconds.")
        if not self.api_base.startswith(("http://", "https://")):
            raise InputError(f"api_base={self.api_base!r} must start with https:// (or http://).")

    @property
    def model_path(self) -> str:
        prefix = f"/v2/users/{self.user_id}/apps/{self.app_id}" if self.user_id else "/v2"
        return f"{prefix}/models/{self.model_id}"

    @property
    def encoding_tag(self) -> str:
        return "png" if self.image_format == "png" else f"jpeg{self.jpeg_quality}"


DEFAULT_CONFIG = ClarifaiConfig()


class _Secret:
    """A string that never shows itself in a repr, a str or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__


class _Unanswered(Exception):
    """One attempt that did not get a usable answer; ``retry_after`` in seconds."""

    def __init__(self, problem: str, *, malformed: bool = False, throttled: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.malformed = malformed
        self.throttled = throttled      # the service said "too many requests": pause every thread
        self.retry_after = retry_after


def _resume_hint() -> str:
    return ("Everything embedded so far is cached: rerun the same command to resume "
            "(cached images are not sent again).")


def _read_pat(pat_file: str | os.PathLike | None) -> _Secret:
    if pat_file is not None:
        path = Path(pat_file).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InputError(f"pat_file={str(path)!r} cannot be read ({exc.strerror}); give a "
                             f"file holding only the Clarifai Personal Access Token.") from None
        if not value:
            raise InputError(f"pat_file={str(path)!r} is empty; put the Clarifai Personal Access "
                             f"Token in it.")
        return _Secret(value)
    value = os.environ.get(ENV_PAT, "").strip()
    if not value:
        raise TargetError(f"no Clarifai key: set the environment variable {ENV_PAT} to a Personal "
                          f"Access Token, or pass --target-option pat_file=FILE.")
    return _Secret(value)


def _config_from_options(*, model_id: Any, version_id: Any, user_id: Any, app_id: Any, api_base: Any,
                         batch_size: Any, image_format: Any, jpeg_quality: Any, max_requests: Any, concurrency: Any,
                         requests_per_second: Any, threshold: Any, dimension: Any, timeout: Any,
                         connect_timeout: Any, max_retries: Any, retry_base_delay: Any,
                         retry_max_delay: Any) -> ClarifaiConfig:
    """The client's settings from ``--target-option`` strings, each checked and named when wrong."""

    def optional_int(name: str, value: Any, minimum: int = 1) -> int | None:
        return None if value in (None, "") else option_int(name, value, minimum=minimum)

    return ClarifaiConfig(
        model_id=str(model_id).strip(),
        version_id=(str(version_id).strip() or None) if version_id is not None else None,
        user_id=(str(user_id).strip() or None) if user_id is not None else None,
        app_id=(str(app_id).strip() or None) if app_id is not None else None,
        api_base=str(api_base or os.environ.get(ENV_API_BASE) or DEFAULT_API_BASE).rstrip("/"),
        batch_size=option_int("batch_size", batch_size, minimum=1,
                              maximum=MAX_INPUTS_PER_REQUEST),
        image_format=option_choice("image_format", image_format, IMAGE_FORMATS),
        jpeg_quality=option_int("jpeg_quality", jpeg_quality, minimum=1, maximum=100),
        max_requests=optional_int("max_requests", max_requests),
        concurrency=option_int("concurrency", concurrency, minimum=1, maximum=MAX_CONCURRENCY),
        requests_per_second=(None if requests_per_second in (None, "") else
                             option_float("requests_per_second", requests_per_second,
                                          positive=True)),
        threshold=option_float("threshold", threshold, positive=True),
        dimension=optional_int("dimension", dimension),
        timeout=option_float("timeout", timeout, positive=True),
        connect_timeout=option_float("connect_timeout", connect_timeout, positive=True),
        retry=RetryConfig(max_retries=option_int("max_retries", max_retries, minimum=0),
                          base_delay=option_float("retry_base_delay", retry_base_delay),
                          max_delay=option_float("retry_max_delay", retry_max_delay)))


class ClarifaiTarget(Target):
    """Clarifai's face embedding model over REST (whole images in, one face vector out)."""

    name: ClassVar[str] = "clarifai"
    input_kind = "image"
    parallel_safe: ClassVar[bool] = False
    # For `audit targets` (the default model's figures).
    DIMENSION: ClassVar[int] = KNOWN_DIMENSIONS[DEFAULT_MODEL_ID]
    METRIC: ClassVar[str] = "euclidean"
    DEFAULT_THRESHOLD: ClassVar[float] = DEFAULT_THRESHOLD
    OPTIONS: ClassVar[dict[str, str]] = {
        "model_id": f"Clarifai model id (default {DEFAULT_MODEL_ID}, 1024-D face embedder)",
        "version_id": "model version (default: the version the API reports as current, then pinned)",
        "user_id": "owner of the model's app (with app_id; default: the older /v2/models endpoint)",
        "app_id": "app holding the model (with user_id)",
        "pat_file": f"file holding the Personal Access Token (default: env {ENV_PAT})",
        "pat": "refused: never put the key on the command line",
        "api_base": f"API root (default env {ENV_API_BASE} or {DEFAULT_API_BASE})",
        "batch_size": f"images per request, 1-{MAX_INPUTS_PER_REQUEST} (default {DEFAULT_BATCH_SIZE})",
        "image_format": "jpeg (default) or png: how images are uploaded",
        "jpeg_quality": f"1-100 (default {DEFAULT_JPEG_QUALITY})",
        "max_requests": "budget of predict requests, retries included (CLI --max-requests); "
                        "when spent the run stops, resumable",
        "concurrency": f"requests in flight at once, 1-{MAX_CONCURRENCY} (default {DEFAULT_CONCURRENCY})",
        "requests_per_second": "most request starts per second (default: no limit but the "
                               "service's throttling answers)",
        "threshold": f"same-person euclidean distance (default {DEFAULT_THRESHOLD})",
        "dimension": "vector size, for models other than the default when the API does not say",
        "timeout": f"seconds per request (default {DEFAULT_TIMEOUT_SECONDS:g})",
        "connect_timeout": f"seconds to connect (default {DEFAULT_CONNECT_TIMEOUT_SECONDS:g})",
        "max_retries": f"retries after a throttled/failed request (default {DEFAULT_RETRY_CONFIG.max_retries})",
        "retry_base_delay": f"first backoff in seconds (default {DEFAULT_RETRY_CONFIG.base_delay:g})",
        "retry_max_delay": f"longest backoff in seconds (default {DEFAULT_RETRY_CONFIG.max_delay:g})",
    }

    def __init__(self, *, model_id: str = DEFAULT_MODEL_ID, version_id: str | None = None,
                 user_id: str | None = None, app_id: str | None = None,
                 pat_file: str | None = None, pat: str | None = None,
                 api_base: str | None = None, batch_size: Any = DEFAULT_BATCH_SIZE,
                 image_format: str = "jpeg", jpeg_quality: Any = DEFAULT_JPEG_QUALITY,
                 max_requests: Any = None, concurrency: Any = DEFAULT_CONCURRENCY,
                 requests_per_second: Any = None, threshold: Any = DEFAULT_THRESHOLD,
                 dimension: Any = None, timeout: Any = DEFAULT_TIMEOUT_SECONDS,
                 connect_timeout: Any = DEFAULT_CONNECT_TIMEOUT_SECONDS,
                 max_retries: Any = DEFAULT_RETRY_CONFIG.max_retries,
                 retry_base_delay: Any = DEFAULT_RETRY_CONFIG.base_delay,
                 retry_max_delay: Any = DEFAULT_RETRY_CONFIG.max_delay,
                 config: ClarifaiConfig | None = None, api_key: str | None = None,
                 transport: Any = None, sleep: Callable[[float], None] = time.sleep,
                 seed: int | None = None) -> None:
        """Options arrive as strings from ``--target-option``; ``config`` overrides them all.

        ``api_key`` is for library use (tests, notebooks); the CLI reads
        ``CLARIFAI_PAT`` or ``pat_file``.  ``transport``, ``sleep`` and ``seed``
        exist for tests.
        """
        if httpx is None:  # pragma: no cover
            raise TargetError(f"the Clarifai target needs httpx. {_INSTALL_HINT}")
        if pat is not None:
            raise InputError(f"target option 'pat' is refused: a key on the command line ends up "
                             f"in shell history and process lists. Set {ENV_PAT} or pass "
                             f"--target-option pat_file=FILE.")
        if config is None:
            config = _config_from_options(
                model_id=model_id, version_id=version_id, user_id=user_id, app_id=app_id, api_base=api_base,
                batch_size=batch_size, image_format=image_format, jpeg_quality=jpeg_quality,
                max_requests=max_requests, concurrency=concurrency, requests_per_second=requests_per_second,
                threshold=threshold, dimension=dimension, timeout=timeout, connect_timeout=connect_timeout,
                max_retries=max_retries, retry_base_delay=retry_base_delay, retry_max_delay=retry_max_delay)
        self.config = config
        self._pat = _Secret(api_key) if api_key else _read_pat(pat_file)
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._requests_sent = 0
        self._lock = threading.Lock()     # the budget and the retry counters, across threads
        self._gate = RequestGate(requests_per_second=config.requests_per_second, sleep=sleep)
        self.retries = 0
        self.retry_delays: list[float] = []
        self._dimension: int | None = config.dimension or KNOWN_DIMENSIONS.get(config.model_id)
        self._client = httpx.Client(
            base_url=config.api_base,
            headers={"Authorization": f"Key {self._pat.reveal()}", "Accept": "application/json"},
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            limits=httpx.Limits(max_connections=config.concurrency + 1,
                                max_keepalive_connections=config.concurrency + 1),
            transport=transport)
        self.model_info: dict = {}
        self.version_id: str = ""
        try:
            self._check_model()
        except BaseException:
            self._client.close()
            raise

    # -- representation without the key ------------------------------------------
    def __repr__(self) -> str:
        c = self.config
        return (f"ClarifaiTarget(model_id={c.model_id!r}, version_id={self.version_id!r}, "
                f"api_base={c.api_base!r}, requests_sent={self._requests_sent})")

    def __getstate__(self) -> dict:
        raise TypeError("a ClarifaiTarget holds a connection and a key; it is not pickled "
                        "(it is not parallel_safe).")

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if httpx is None:
            return False, f"httpx is not installed. {_INSTALL_HINT}"
        if not os.environ.get(ENV_PAT, "").strip():
            return True, f"needs a key: set {ENV_PAT} or --target-option pat_file=FILE"
        return True, ""

    # -- the Target interface ------------------------------------------------------
    @property
    def dimension(self) -> int:
        if self._dimension is None:
            raise TargetError(f"the dimension of Clarifai model {self.config.model_id!r} is not "
                              f"known before its first answer; pass --target-option dimension=N.")
        return self._dimension

    @property
    def metric(self) -> Metric:
        return "euclidean"

    @property
    def default_threshold(self) -> float:
        return self.config.threshold

    @property
    def requests_sent(self) -> int:
        """Predict requests sent so far (what ``max_requests`` limits)."""
        return self._requests_sent

    @property
    def preferred_batch(self) -> int:
        """Images per :meth:`embed` call that keep every concurrent request full."""
        return self.config.batch_size * self.config.concurrency

    def fingerprint(self) -> str:
        """Model id and the version the API reported (and that every request is pinned to).

        A non-default upload encoding is appended: the pixels Clarifai sees differ.
        """
        base = f"clarifai:{self.config.model_id}@{self.version_id}"
        if self.config.encoding_tag != DEFAULT_CONFIG.encoding_tag:
            base += f":{self.config.encoding_tag}"
        return base

    def details(self) -> dict:
        c = self.config
        return {"api_base": c.api_base, "model_id": c.model_id, "version_id": self.version_id,
                "user_id": c.user_id, "app_id": c.app_id, "model_name": self.model_info.get("name"),
                "image_format": c.encoding_tag, "face_rule": "largest bounding-box area",
                "requests_sent": self._requests_sent}

    def close(self) -> None:
        self._client.close()

    def embed(self, images: Sequence[np.ndarray]) -> list[EmbedOutcome]:
        """Embed whole RGB uint8 images, ``batch_size`` per request, ``concurrency`` requests at once.

        On :class:`TargetStopped`, no further request starts, those in
        flight are awaited, and the exception carries ``partial_outcomes``:
        one outcome per image, in order, the answered ones as answered and
        the others ``error`` ("not embedded: the target stopped", never
        cached), so a caller keeps everything paid for.
        """
        for i, image in enumerate(images):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"image {i} has shape {image.shape} and dtype {image.dtype}; the "
                                 f"Clarifai target takes H x W x 3 uint8 RGB images.")
        size = self.config.batch_size
        starts = list(range(0, len(images), size))
        answered: dict[int, list[EmbedOutcome]] = {}
        problem = self._predict_concurrently(images, starts, answered)
        if problem is None:
            return [outcome for start in starts for outcome in answered[start]]
        if isinstance(problem, TargetStopped):
            not_sent = EmbedOutcome.error(NOT_SENT_REASON)
            problem.partial_outcomes = [
                outcome for start in starts
                for outcome in answered.get(start, [not_sent] * len(images[start:start + size]))]
        raise problem

    def _predict_concurrently(self, images: Sequence[np.ndarray], starts: list[int],
                              answered: dict[int, list[EmbedOutcome]]) -> BaseException | None:
        """Send the batches at ``starts``, at most ``concurrency`` at a time, into ``answered``.

        Returns the first exception a batch raised (after the batches then
        in flight have finished; none starts after it), or None.
        """
        size = self.config.batch_size
        if self.config.concurrency == 1 or len(starts) == 1:
            for start in starts:
                try:
                    answered[start] = self._predict(images[start:start + size])
                except Exception as exc:  # noqa: BLE001 - handed to embed(), which raises it
                    return exc
            return None
        pool = ThreadPoolExecutor(min(self.config.concurrency, len(starts)),
                                  thread_name_prefix="clarifai")
        pending: dict[Future, int] = {}
        queue = list(reversed(starts))
        problem: BaseException | None = None
        try:
            while queue or pending:
                while queue and problem is None and len(pending) < self.config.concurrency:
                    start = queue.pop()
                    pending[pool.submit(self._predict, images[start:start + size])] = start
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    start = pending.pop(future)
                    error = future.exception()
                    if error is None:
                        answered[start] = future.result()
                    elif problem is None:
                        problem = error
        finally:
            # On Ctrl-C, requests in flight end on their own (each has a timeout);
            # nothing waits for them and nothing new starts.
            pool.shutdown(wait=False, cancel_futures=True)
        return problem

    # -- HTTP ----------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        key = self._pat.reveal()
        return text.replace(key, "<hidden>") if key else text

    def _attempt(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        """One request: ``(http_status, payload)``; raises ``_Unanswered`` when worth retrying."""
        try:
            response = self._client.request(method, path, json=body)
        except httpx.TimeoutException as exc:
            raise _Unanswered(f"timed out ({type(exc).__name__}, limit {self.config.timeout:g} s)") from None
        except httpx.TransportError as exc:
            raise _Unanswered(f"connection failed ({type(exc).__name__}: {self._redact(str(exc))})") from None
        retry_after = _retry_after(response.headers.get("retry-after"))
        try:
            payload = response.json()
            if not isinstance(payload, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            excerpt = self._redact(response.text[:80])
            if response.status_code >= 500 or response.status_code == 429:
                raise _Unanswered(f"server error (HTTP {response.status_code}, body not JSON)",
                                  throttled=response.status_code == 429,
                                  retry_after=retry_after) from None
            raise _Unanswered(f"malformed JSON (HTTP {response.status_code}, body starts "
                              f"{excerpt!r})", malformed=True) from None
        code, description = _status(payload)
        if code in STOP_CODES:
            limit = "hourly" if code == HOURLY_LIMIT else "monthly"
            raise TargetStopped(f"Clarifai's {limit} request limit is reached (status {code}: "
                                f"{self._redact(description)}). {_resume_hint()} Wait for the limit "
                                f"to reset{' (within the hour)' if code == HOURLY_LIMIT else ''}.")
        if response.status_code in (401, 403) or code in AUTH_CODES:
            raise TargetError(f"Clarifai refused the key (HTTP {response.status_code}, status {code}: "
                              f"{self._redact(description)}). Check {ENV_PAT} or pat_file: the "
                              f"token must be valid and have the predict scope for this model.")
        if response.status_code == 429 or code in RETRY_CODES:
            raise _Unanswered(f"throttled (HTTP {response.status_code}, status {code}: "
                              f"{self._redact(description)})", throttled=True, retry_after=retry_after)
        if response.status_code >= 500:
            raise _Unanswered(f"server error (HTTP {response.status_code}, status {code})",
                              retry_after=retry_after)
        return response.status_code, payload

    def _request(self, method: str, path: str, body: dict | None = None, *,
                 counted: bool) -> tuple[int, dict] | None:
        """A request with bounded retries; ``None`` when every answer was malformed JSON.

        Raises :class:`TargetStopped` when the budget is spent or retries of a
        throttled/unreachable service are exhausted.
        """
        attempts = self.config.retry.max_retries + 1
        last: _Unanswered | None = None
        for attempt in range(attempts):
            self._gate.wait_turn(pause_served=last is not None and last.throttled)
            if counted:
                self._spend_request()
            log.info("Clarifai %s %s%s (attempt %d/%d)", method, self.config.api_base, path,
                     attempt + 1, attempts)
            try:
                return self._attempt(method, path, body)
            except _Unanswered as exc:
                last = exc
            if attempt + 1 == attempts:
                break
            with self._lock:
                delay = self.config.retry.delay(attempt, self._rng)
                if last.retry_after is not None:
                    delay = min(max(delay, last.retry_after), self.config.retry.max_delay)
                self.retries += 1
                self.retry_delays.append(delay)
            if last.throttled:
                self._gate.pause(delay)   # the service is overloaded: every thread waits
            log.warning("Clarifai %s: %s; retry %d/%d in %.2f s", path, last.problem, attempt + 1,
                        attempts - 1, delay)
            self._sleep(delay)
        assert last is not None
        if last.malformed:
            log.error("Clarifai %s: %s after %d attempts", path, last.problem, attempts)
            return None
        raise TargetStopped(f"Clarifai did not answer after {attempts} attempts (last: "
                            f"{last.problem}). {_resume_hint()} If this persists, raise "
                            f"--target-option max_retries or timeout, or try later.")

    def _spend_request(self) -> None:
        budget = self.config.max_requests
        with self._lock:   # check and count as one step: concurrent threads never overspend
            if budget is not None and self._requests_sent >= budget:
                raise TargetStopped(f"the request budget max_requests={budget} is spent "
                                    f"({self._requests_sent} requests sent). {_resume_hint()} "
                                    f"Raise --max-requests to go further in one run.")
            self._requests_sent += 1

    # -- start-up check ------------------------------------------------------------
    def _check_model(self) -> None:
        c = self.config
        path = c.model_path + (f"/versions/{c.version_id}" if c.version_id else "")
        what = f"model {c.model_id!r}" + (f" version {c.version_id!r}" if c.version_id else "")
        where = (f"in app {c.app_id!r} of user {c.user_id!r}" if c.user_id
                 else "(no user_id/app_id: the older /v2/models endpoint)")
        answer = self._request("GET", path, counted=False)
        if answer is None:
            raise TargetError(f"Clarifai's answer about {what} at {c.api_base} is not JSON; "
                              f"check api_base ({ENV_API_BASE}).")
        http_status, payload = answer
        code, description = _status(payload)
        if http_status == 404 or code in MODEL_NOT_FOUND or code != SUCCESS:
            raise TargetError(f"Clarifai {what} was not found {where} at {c.api_base} (HTTP "
                              f"{http_status}, status {code}: {self._redact(description)}). Check "
                              f"--target-option model_id=, version_id=, user_id=, app_id=.")
        if c.version_id:
            version = payload.get("model_version") or {}
            self.model_info = {"id": c.model_id}
        else:
            self.model_info = payload.get("model") or {}
            version = self.model_info.get("model_version") or {}
        self.version_id = str(version.get("id") or c.version_id or "")
        if not self.version_id:
            raise TargetError(f"Clarifai did not say which version of {what} is in use; pass "
                              f"--target-option version_id=... so that cached vectors are tied "
                              f"to one version.")
        if self._dimension is None:
            found = _find_dimension(payload)
            if found:
                self._dimension = found
        log.info("Clarifai model %s version %s (%s)", c.model_id, self.version_id,
                 self.model_info.get("name", "unnamed"))

    # -- predict ---------------------------------------------------------------------
    def _encode(self, image: np.ndarray) -> str:
        from PIL import Image

        buffer = io.BytesIO()
        picture = Image.fromarray(np.ascontiguousarray(image))
        if self.config.image_format == "png":
            picture.save(buffer, format="PNG")
        else:
            picture.save(buffer, format="JPEG", quality=self.config.jpeg_quality)
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def _predict(self, images: Sequence[np.ndarray]) -> list[EmbedOutcome]:
        n = len(images)
        if n == 0:
            return []
        ids = [f"i{k}" for k in range(n)]
        body = {"inputs": [{"id": ids[k], "data": {"image": {"base64": self._encode(im)}}}
                           for k, im in enumerate(images)]}
        path = f"{self.config.model_path}/versions/{self.version_id}/outputs"
        answer = self._request("POST", path, body, counted=True)
        if answer is None:
            return [EmbedOutcome.error("malformed response from Clarifai (not JSON) after "
                                       f"{self.config.retry.max_retries + 1} attempts")] * n
        http_status, payload = answer
        code, description = _status(payload)
        outputs = payload.get("outputs")
        if not isinstance(outputs, list) or len(outputs) != n:
            reason = (f"Clarifai request failed (HTTP {http_status}, status {code}: "
                      f"{self._redact(description)})" if code not in (SUCCESS, MIXED_STATUS)
                      else f"Clarifai answered {len(outputs) if isinstance(outputs, list) else 'no'} "
                           f"outputs for {n} inputs")
            return [EmbedOutcome.error(reason)] * n
        by_id = {}
        for output in outputs:
            input_id = ((output or {}).get("input") or {}).get("id")
            if input_id is not None:
                by_id[input_id] = output
        ordered = [by_id[i] for i in ids] if set(by_id) == set(ids) else outputs
        return [self._judge_output(output) for output in ordered]

    def _judge_output(self, output: Any) -> EmbedOutcome:
        if not isinstance(output, dict):
            return EmbedOutcome.error("malformed output from Clarifai")
        code, description = _status(output)
        if code != SUCCESS:
            return EmbedOutcome.error(f"Clarifai status {code}: {self._redact(description)}")
        data = output.get("data") or {}
        candidates: list[tuple[float, list]] = []
        for region in data.get("regions") or []:
            embeddings = ((region or {}).get("data") or {}).get("embeddings") or []
            if not embeddings or not isinstance(embeddings[0], dict):
                continue
            box = ((region.get("region_info") or {}).get("bounding_box") or {})
            try:
                area = ((float(box.get("bottom_row", 0)) - float(box.get("top_row", 0)))
                        * (float(box.get("right_col", 0)) - float(box.get("left_col", 0))))
            except (TypeError, ValueError):
                area = 0.0
            candidates.append((area, embeddings[0].get("vector")))
        if not candidates and data.get("embeddings"):
            # A whole-image embedder (no detection): the image's vector.
            candidates.append((1.0, (data["embeddings"][0] or {}).get("vector")))
        if not candidates:
            return EmbedOutcome.no_face("Clarifai found no face")
        # The documented rule: the largest box; max() keeps the first of equal areas.
        _, vector = max(candidates, key=lambda c: c[0])
        return self._vector_outcome(vector, n_faces=len(candidates))

    def _vector_outcome(self, vector: Any, *, n_faces: int) -> EmbedOutcome:
        try:
            array = np.asarray(vector, dtype=np.float32).ravel()
        except (TypeError, ValueError):
            return EmbedOutcome.error("Clarifai returned a vector that is not a list of numbers")
        if array.size == 0 or not np.all(np.isfinite(array)):
            return EmbedOutcome.error("Clarifai returned an empty or non-finite vector")
        if self._dimension is None:
            self._dimension = int(array.size)
        if array.size != self._dimension:
            return EmbedOutcome.error(f"Clarifai returned a {array.size}-D vector; this target's "
                                      f"dimension is {self._dimension}")
        return EmbedOutcome.ok(array, n_faces=n_faces)


def _status(payload: Any) -> tuple[int | None, str]:
    status = payload.get("status") if isinstance(payload, dict) else None
    if not isinstance(status, dict):
        return None, "no status"
    try:
        code = int(status.get("code"))
    except (TypeError, ValueError):
        code = None
    description = str(status.get("description") or "")
    details = status.get("details")
    if details:
        description = f"{description}; {details}" if description else str(details)
    return code, description


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _find_dimension(payload: Any, depth: int = 0) -> int | None:
    """A declared embedding size in the model's description, if the API gives one."""
    if depth > 6:
        return None
    if isinstance(payload, dict):
        for key in ("embedding_dimension", "num_dimensions", "dimensions"):
            value = payload.get(key)
            if isinstance(value, int) and value > 0:
                return value
        values = payload.values()
    elif isinstance(payload, list):
        values = payload
    else:
        return None
    for value in values:
        found = _find_dimension(value, depth + 1)
        if found:
            return found
    return None
