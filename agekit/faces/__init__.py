"""Everything between an uploaded image and a face crop, one idea a module, one way in:

    decode   load_image: any upload → RGB image, or an ImageError saying what to do (size, mode, EXIF, big JPEGs)
    detect   FaceDetector: MTCNN finds every face and returns FaceCrops framed like UTKFace's chips
    pools    the exact, faster max pooling swapped into MTCNN
    align    UTKFace's framing and landmark template, the box crop and the aligned crop (FaceCrop)
    draw     numbered face boxes on a photo

The app, the evaluation and the benchmarks all go through here, so what is measured is what visitors get.
`from agekit.faces import FaceDetector, load_image, ...` is the public API.
"""

from agekit.faces.align import (
    ALIGN_FACES,
    FACE_FILLS_FRAME,
    MAX_ALIGN_RESIDUAL,
    MAX_ALIGN_SIDE_RATIO,
    UTK_CENTRE_DX,
    UTK_CENTRE_DY,
    UTK_LANDMARKS,
    UTK_SIDE_PER_BOX_WIDTH,
    UTK_SIZE,
    Box,
    FaceCrop,
    alignment_matrix,
    apply_transform,
    crop_face,
    face_fills_frame,
    frame_face,
    looks_like_face_crop,
    similarity_transform,
    square_within,
    template_spread,
    utk_crop_box,
    warp_face,
)
from agekit.faces.decode import (
    DECODE_SCALE_INFO,
    MAX_FILE_BYTES,
    MAX_JPEG_PIXELS,
    MAX_PIXELS,
    MIN_SIDE,
    REDUCIBLE_FORMATS,
    WORK_SIDE,
    ImageError,
    decode_factor,
    decode_scale,
    load_image,
    to_rgb,
)
from agekit.faces.detect import NO_FACE_MESSAGE, FaceDetector, NoFaceFound
from agekit.faces.draw import BOX_COLOURS, draw_boxes

__all__ = [
    "ALIGN_FACES", "BOX_COLOURS", "DECODE_SCALE_INFO", "FACE_FILLS_FRAME", "MAX_ALIGN_RESIDUAL",
    "MAX_ALIGN_SIDE_RATIO", "MAX_FILE_BYTES", "MAX_JPEG_PIXELS", "MAX_PIXELS", "MIN_SIDE", "NO_FACE_MESSAGE",
    "REDUCIBLE_FORMATS", "UTK_CENTRE_DX", "UTK_CENTRE_DY", "UTK_LANDMARKS", "UTK_SIDE_PER_BOX_WIDTH", "UTK_SIZE",
    "WORK_SIDE", "Box", "FaceCrop", "FaceDetector", "ImageError", "NoFaceFound", "alignment_matrix",
    "apply_transform", "crop_face", "decode_factor", "decode_scale", "draw_boxes", "face_fills_frame",
    "frame_face", "load_image", "looks_like_face_crop", "similarity_transform", "square_within",
    "template_spread", "to_rgb", "utk_crop_box", "warp_face",
]
