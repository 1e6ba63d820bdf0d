"""Model registry and architectures. `create_model(name, tasks=...)` is the only way models are built.

Registered: facecnn, agecnn (from scratch), mobilenetv1_025 (ImageNet / RetinaFace weights from a local file),
dlib_resnet29 (dlib's CC0 face-recognition ResNet, read from dlib's .dat file),
mtcnn_onet and inception_resnet_v1 (facenet-pytorch), timm/<name> (any timm backbone).
"""

from agekit.models import dlib_resnet, mobilenet, pretrained, scratch  # noqa: F401  (imports register the builders)
from agekit.models.face_model import FaceModel
from agekit.models.factory import create_model
from agekit.models.heads import TaskHead, age_probabilities, expected_age
from agekit.models.registry import (
    Backbone,
    PretrainedWeightsError,
    UnknownArchitecture,
    build_backbone,
    list_architectures,
    register_backbone,
)

__all__ = [
    "Backbone",
    "FaceModel",
    "PretrainedWeightsError",
    "TaskHead",
    "UnknownArchitecture",
    "age_probabilities",
    "build_backbone",
    "create_model",
    "expected_age",
    "list_architectures",
    "register_backbone",
]
