"""MTCNN face detection (facenet-pytorch, weights ship in the wheel): `FaceDetector` finds every face and
returns `FaceCrop`s framed like UTKFace (agekit.faces.align), with MTCNN's max pooling replaced by an exact,
faster one (agekit.faces.pools).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from agekit.faces.align import (
    ALIGN_FACES,
    FaceCrop,
    face_fills_frame,
    frame_face,
    looks_like_face_crop,
    square_within,
    utk_crop_box,
)
from agekit.faces.decode import to_rgb


class NoFaceFound(ValueError):
    """The detector found no face in the image."""


NO_FACE_MESSAGE = "no face found — try a photo where the face is at least 40 px wide and faces the camera"


class FaceDetector:
    """MTCNN face detector (CPU, created once) that returns faces cropped in UTKFace framing.

    max_side: photos are shrunk so their longer side is at most this (px) before detection — detection time
        grows with pixel count, the crops are still cut from the full-resolution image.
    max_faces: at most this many faces (the largest) are returned.
    min_face_px: smallest face width searched for, px in the shrunk detection image.
    min_score: detections with a lower MTCNN probability are dropped (false positives are mostly < 0.9).
    align: rotate and scale each face so its five landmarks fall on UTKFace's template (eyes level, as in the
        training chips); faces whose landmarks are unusable get the box crop. Default: ALIGN_FACES.
    """

    def __init__(self, max_side: int = 640, max_faces: int = 8, min_face_px: int = 20, min_score: float = 0.9,
                 align: bool | None = None) -> None:
        # heavy import, only when a detector is wanted
        from facenet_pytorch import MTCNN

        from agekit.faces import pools

        self.max_side, self.max_faces, self.min_face_px, self.min_score = max_side, max_faces, min_face_px, min_score
        self.align = ALIGN_FACES if align is None else align
        self.mtcnn = MTCNN(keep_all=True, min_face_size=min_face_px, device="cpu").eval()
        pools.replace_max_pools(self.mtcnn)  # bit-identical and faster on the CPU

    def find_faces(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All faces in an RGB image, largest first: (N,4) boxes (x1, y1, x2, y2), (N,) probabilities and (N,5,2)
        landmarks (x, y: left eye, right eye, nose, left and right mouth corner, as seen in the image), all in
        the image's pixels."""
        scale = min(1.0, self.max_side / max(image.size))
        small = image
        if scale < 1.0:
            small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BILINEAR, reducing_gap=2.0)
        boxes, probs, points = self.mtcnn.detect(small, landmarks=True)
        if boxes is None:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        boxes, probs = np.asarray(boxes, np.float32), np.asarray(probs, np.float32)
        points = np.asarray(points, np.float32).reshape(len(boxes), 5, 2)
        keep = probs >= self.min_score
        boxes, probs, points = boxes[keep] / scale, probs[keep], points[keep] / scale
        order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
        return boxes[order], probs[order], points[order]

    def detect(self, image: Image.Image, assume_cropped: bool = False) -> list[FaceCrop]:
        """Faces in an RGB image, largest first, at most max_faces, each cropped like UTKFace.

        A square-ish photo that is already a face crop (one face filling it, see `face_fills_frame`) is used
        whole (its largest square, nearest the face), not re-cropped.

        assume_cropped: when nothing is detected but the image looks like a face crop already (roughly square,
        at most 400 px), use the whole image instead of raising. Raises NoFaceFound otherwise.
        """
        image = to_rgb(image)
        return self.crops(image, *self.find_faces(image), assume_cropped=assume_cropped)

    def crops(self, image: Image.Image, boxes: np.ndarray, probs: np.ndarray, points: np.ndarray,
              assume_cropped: bool = False, align: bool | None = None) -> list[FaceCrop]:
        """`detect`'s second half: the FaceCrops of an RGB image's faces as `find_faces` returned them.
        align: None = the detector's setting (the wild evaluation crops one detection both ways)."""
        if len(boxes) == 0:
            if assume_cropped and looks_like_face_crop(image.size):
                crop, region = square_within(image, (image.width / 2, image.height / 2))
                return [FaceCrop(crop, (0.0, 0.0, float(image.width), float(image.height)), 1.0, region, 1)]
            raise NoFaceFound(NO_FACE_MESSAGE)
        if len(boxes) == 1 and face_fills_frame(boxes[0], image.size):
            # Already a face crop (e.g. a UTKFace image): MTCNN's box overshoots on faces that touch the border
            # (on UTKFace crops the implied crop is 1.0-1.4x the frame and off-centre by up to 50 px), so the
            # photo's own framing is closer to the training data than a re-crop padded with black.
            box_t = tuple(float(v) for v in boxes[0])
            x1, y1, x2, y2 = utk_crop_box(box_t, image.size)
            crop, region = square_within(image, ((x1 + x2) / 2, (y1 + y2) / 2))
            return [FaceCrop(crop, box_t, float(probs[0]), region, 1, landmarks=points[0])]
        align = self.align if align is None else align
        return [frame_face(image, tuple(float(v) for v in box), landmarks, align, float(prob), len(boxes))
                for box, prob, landmarks in zip(boxes[: self.max_faces], probs[: self.max_faces],
                                                points[: self.max_faces])]
