"""A fake Clarifai API for tests: a threaded HTTP server on 127.0.0.1, port 0.

It answers the two calls the Clarifai target makes:

* ``GET  /v2[/users/U/apps/A]/models/M[/versions/V]`` - the model check;
* ``POST .../models/M[/versions/V]/outputs`` - predict, one output per input.

Its vectors carry identity, so that a probe downstream has something to recover:

* ``mode="projection"`` (default, fast): the image, grey, resized to 16x16
  and standardised, through a fixed random projection 256 -> 1024 (seeded);
* ``mode="dlib"``: dlib's face descriptor of each detected face (frontal
  detector, upsample 1, score > 0; 5-point landmarks; 150x150 chip) through
  a fixed random projection 128 -> 1024 (seeded).  Faces are real
  detections; an image without one has no region.

In projection mode, content decides the per-image answer (and survives
JPEG): a uniform image of mid grey has no face (:func:`no_face_image`); a
uniform magenta or cyan image fails with 30002 or 30300
(:func:`failing_image`), which turns the whole answer into 10010 (mixed).
``faces_per_image = k`` adds ``k - 1`` smaller decoy regions, listed before
the real one.

Faults are queued with :meth:`FakeClarifai.inject` and each one spoils the
next predict request (``inject_model`` the next model check): see
:data:`FAULTS`.  Every request is recorded in :attr:`FakeClarifai.requests`.
``latency_seconds`` delays every predict answer, as a distant service's
would; :attr:`FakeClarifai.max_in_flight` is the most predict requests it
was ever answering at once.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

DEFAULT_MODEL_ID = "d02b4508df58432fbb84e800597b8959"
DEFAULT_VERSION_ID = "fakeversion0001"
DIMENSION = 1024
PROJECTION_SEED = 1234

#: name -> (HTTP status, Clarifai status code or None for a non-JSON body).
FAULTS = {
    "http429": (429, 11005),          # throttled, as Clarifai answers it
    "throttled_body": (200, 11005),   # throttled, code only in the body
    "try_again": (200, 10030),
    "model_busy": (503, 21354),
    "http500": (500, None),           # HTML error page
    "http503": (503, None),
    "malformed": (200, None),         # HTTP 200, body not JSON
    "hourly_limit": (429, 11003),
    "monthly_limit": (402, 11004),
    "bad_key": (401, 11009),
    "echo_key": (400, 10020),         # a careless server quoting the Authorization header
    "timeout": (200, 10000),          # answers after `timeout_seconds`
    "none": (200, 10000),             # no fault: lets a later request carry one
}

FAILING_COLOURS = {30002: (255, 0, 255), 30300: (0, 255, 255)}
NO_FACE_COLOUR = (128, 128, 128)
_PATH = re.compile(r"^/v2(?:/users/(?P<user>[^/]+)/apps/(?P<app>[^/]+))?/models/(?P<model>[^/]+)"
                   r"(?:/versions/(?P<version>[^/]+))?(?P<outputs>/outputs)?/?$")


def no_face_image(size: int = 64) -> np.ndarray:
    """An image the fake (projection mode) finds no face in."""
    return np.full((size, size, 3), NO_FACE_COLOUR, dtype=np.uint8)


def failing_image(code: int = 30002, size: int = 64) -> np.ndarray:
    """An image the fake answers with a per-input failure ``code`` (30002 or 30300)."""
    return np.full((size, size, 3), FAILING_COLOURS[code], dtype=np.uint8)


def face_like_image(seed: int, size: int = 64) -> np.ndarray:
    """A textured image (a "person"); same seed, same vector."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BILINEAR))


@dataclass
class RecordedRequest:
    method: str
    path: str
    n_inputs: int
    authorized: bool
    fault: str | None
    arrived: float = 0.0          # time.monotonic() when the request was read


@dataclass
class FakeClarifai:
    """Start with :meth:`start` (or as a context manager); ``url`` is its API base."""

    key: str = "fake-pat-0123456789abcdef"
    mode: str = "projection"
    models: dict = field(default_factory=lambda: {DEFAULT_MODEL_ID: DEFAULT_VERSION_ID})
    apps: set = field(default_factory=lambda: {("clarifai", "main")})
    faces_per_image: int = 1
    timeout_seconds: float = 1.0
    retry_after: str | None = None
    latency_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._projections: dict[int, np.ndarray] = {}
        self._faults: deque[str] = deque()
        self._model_faults: deque[str] = deque()
        self._lock = threading.Lock()
        self._dlib = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------
    def start(self) -> "FakeClarifai":
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeClarifai":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def inject(self, *faults: str) -> None:
        """Spoil the next predict requests, one fault each, in order."""
        for fault in faults:
            assert fault in FAULTS, f"unknown fault {fault!r}; one of {sorted(FAULTS)}"
            self._faults.append(fault)

    def inject_model(self, *faults: str) -> None:
        """Spoil the next model checks."""
        for fault in faults:
            assert fault in FAULTS, f"unknown fault {fault!r}"
            self._model_faults.append(fault)

    def count(self, method: str | None = None) -> int:
        return sum(1 for r in self.requests if method is None or r.method == method)

    def _next_fault(self, queue: deque) -> str | None:
        with self._lock:
            return queue.popleft() if queue else None

    # -- vectors ---------------------------------------------------------------------
    def projection(self, n_in: int) -> np.ndarray:
        # Entries N(0, 1/DIMENSION): distances are kept, about (Johnson-Lindenstrauss), so
        # dlib's 0.6 stays about 0.6 in dlib mode.  Drawn once per size: drawing costs
        # more than answering a request.
        if n_in not in self._projections:
            rng = np.random.default_rng(PROJECTION_SEED + n_in)
            self._projections[n_in] = rng.standard_normal((n_in, DIMENSION)) / np.sqrt(DIMENSION)
        return self._projections[n_in]

    def regions_for(self, image: np.ndarray) -> tuple[int, list[dict]]:
        """``(status code, regions)`` for one decoded image."""
        if self.mode == "dlib":
            return 10000, self._dlib_regions(image)
        flat = image.reshape(-1, 3).astype(np.float64)
        if flat.std(axis=0).max() < 6:
            mean = flat.mean(axis=0)
            for code, colour in FAILING_COLOURS.items():
                if np.abs(mean - colour).max() < 30:
                    return code, []
            return 10000, []
        regions = [_region((0.2, 0.2, 0.9, 0.8), self.projection_vector(image))]
        for k in range(1, self.faces_per_image):
            decoy = self.projection_vector(np.ascontiguousarray(np.rot90(image, k)))
            regions.insert(0, _region((0.0, 0.05 * k, 0.2, 0.05 * k + 0.15), decoy))
        return 10000, regions

    def projection_vector(self, image: np.ndarray) -> np.ndarray:
        grey = np.asarray(Image.fromarray(image).convert("L").resize((16, 16), Image.BILINEAR),
                          dtype=np.float64).ravel()
        grey = (grey - grey.mean()) / (grey.std() + 1e-6)
        return grey @ self.projection(grey.size)

    def _dlib_regions(self, image: np.ndarray) -> list[dict]:
        import dlib

        from audit.models import DESCRIPTOR_MODEL, LANDMARKS_5_MODEL, model_path

        with self._lock:
            if self._dlib is None:
                self._dlib = (dlib.get_frontal_face_detector(),
                              dlib.shape_predictor(str(model_path(LANDMARKS_5_MODEL))),
                              dlib.face_recognition_model_v1(str(model_path(DESCRIPTOR_MODEL))))
            detector, predictor, descriptor = self._dlib
            image = np.ascontiguousarray(image)
            detections, scores, _ = detector.run(image, 1, 0.0)
            height, width = image.shape[:2]
            regions = []
            for rect, score in zip(detections, scores):
                if score <= 0:
                    continue
                shape = predictor(image, rect)
                chip = dlib.get_face_chip(image, shape, size=150)
                vector = np.asarray(descriptor.compute_face_descriptor(chip), dtype=np.float64)
                box = (max(rect.top(), 0) / height, max(rect.left(), 0) / width,
                       min(rect.bottom(), height) / height, min(rect.right(), width) / width)
                regions.append(_region(box, vector @ self.projection(128)))
        return regions


def _region(box: tuple[float, float, float, float], vector: np.ndarray) -> dict:
    top, left, bottom, right = box
    return {"region_info": {"bounding_box": {"top_row": top, "left_col": left,
                                             "bottom_row": bottom, "right_col": right}},
            "data": {"embeddings": [{"vector": [float(v) for v in vector],
                                     "num_dimensions": len(vector)}]}}


def _status(code: int, description: str = "") -> dict:
    names = {10000: "Ok", 10010: "Mixed Success", 10020: "Failure", 10030: "Try again",
             11003: "Exceeded hourly request limit", 11004: "Exceeded monthly limit",
             11005: "Making too many requests", 11009: "API key not found",
             21200: "Model does not exist", 21354: "Model is busy, please retry",
             30002: "Download failed", 30300: "Data decoding failed"}
    return {"code": code, "description": description or names.get(code, "status")}


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeClarifai
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    def _send(self, http_status: int, payload: dict | str, headers: dict | None = None) -> None:
        body = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self.send_response(http_status)
        self.send_header("Content-Type", "application/json" if not isinstance(payload, str)
                         else "text/html")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _fault(self, fault: str) -> bool:
        """Answer with a fault; ``False`` for "timeout" (answer normally, late)."""
        fake = self.server_fake
        http_status, code = FAULTS[fault]
        if fault == "none":
            return False
        if fault == "timeout":
            time.sleep(fake.timeout_seconds)
            return False
        if code is None:
            body = "{not json" if fault == "malformed" else "<html>Service Unavailable</html>"
            self._send(http_status, body)
            return True
        description = ""
        if fault == "echo_key":
            description = f"bad request with header {self.headers.get('Authorization')}"
        headers = {"Retry-After": fake.retry_after} if fake.retry_after and http_status == 429 else {}
        self._send(http_status, {"status": _status(code, description)}, headers)
        return True

    def _route(self, method: str) -> tuple[re.Match | None, bool]:
        fake = self.server_fake
        match = _PATH.match(self.path.split("?")[0])
        authorized = self.headers.get("Authorization") == f"Key {fake.key}"
        return match, authorized

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        fake = self.server_fake
        match, authorized = self._route("GET")
        fault = fake._next_fault(fake._model_faults) if match and not match["outputs"] else None
        fake.requests.append(RecordedRequest("GET", self.path, 0, authorized, fault))
        if fault and self._fault(fault):
            return
        if not authorized:
            self._send(401, {"status": _status(11009)})
            return
        if match is None or match["outputs"] or not self._model_exists(match):
            self._send(404, {"status": _status(21200)})
            return
        version = match["version"] or fake.models[match["model"]]
        model_version = {"id": version, "status": _status(21100, "Model is trained and ready")}
        if match["version"]:
            self._send(200, {"status": _status(10000), "model_version": model_version})
            return
        self._send(200, {"status": _status(10000),
                         "model": {"id": match["model"], "name": "face-embedding",
                                   "model_type_id": "visual-embedder",
                                   "model_version": model_version}})

    def _model_exists(self, match: re.Match) -> bool:
        fake = self.server_fake
        if match["user"] and (match["user"], match["app"]) not in fake.apps:
            return False
        model = match["model"]
        return model in fake.models and (match["version"] in (None, fake.models[model]))

    def do_POST(self) -> None:  # noqa: N802
        fake = self.server_fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        match, authorized = self._route("POST")
        try:
            inputs = json.loads(raw)["inputs"]
        except (ValueError, KeyError, TypeError):
            inputs = None
        fault = fake._next_fault(fake._faults)
        fake.requests.append(RecordedRequest("POST", self.path, len(inputs or []), authorized, fault,
                                             time.monotonic()))
        with fake._lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            if fake.latency_seconds:
                time.sleep(fake.latency_seconds)
            self._answer_predict(match, authorized, inputs, fault)
        finally:
            with fake._lock:
                fake.in_flight -= 1

    def _answer_predict(self, match: re.Match | None, authorized: bool, inputs: list | None,
                        fault: str | None) -> None:
        fake = self.server_fake
        if fault and self._fault(fault):
            return
        if not authorized:
            self._send(401, {"status": _status(11009)})
            return
        if match is None or not match["outputs"] or not self._model_exists(match):
            self._send(404, {"status": _status(21200)})
            return
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= 128:
            self._send(400, {"status": _status(10020, "need 1 to 128 inputs")})
            return
        outputs, mixed = [], False
        for item in inputs:
            data = base64.b64decode(item["data"]["image"]["base64"])
            image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            code, regions = fake.regions_for(image)
            mixed |= code != 10000
            outputs.append({"id": f"out-{len(outputs)}", "status": _status(code),
                            "input": {"id": item.get("id"), "data": {}},
                            "data": {"regions": regions} if code == 10000 else {}})
        self._send(200, {"status": _status(10010 if mixed else 10000), "outputs": outputs})
