"""A pure-Python reader of dlib's DNN serialisation (`.dat`), for dlib's face-recognition ResNet.

Nothing from the file is executed: it is walked value by value with `struct`-level decoding, and every layer's
hyper-parameters are returned so the caller can check them against the architecture it expects. dlib itself is
not needed. Format (dlib's serialize.h, dnn/core.h, layers.h, input.h, loss.h):

- integers: one control byte (bit 0x80 = negative, low nibble = number of bytes) then that many little-endian
  magnitude bytes; floats/doubles: an int64 mantissa then an int16 exponent (value = mantissa * 2**exponent);
  bools: one ASCII byte '0'/'1'; strings: an unsigned length then the bytes; tensors: version 2, then the ints
  n, k, nr, nc, then n*k*nr*nc little-endian float32 values.
- the net is written recursively from the loss towards the input: the loss layer, then every layer's version int
  output → input, then the input layer, then each computational layer's details input → output, each followed by
  3 bools and 3 (empty) tensors; the layer next to the input also stores its sample-expansion factor.
  Tag and skip layers only have a version int (they carry no details).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

INPUT_LAYER = "input_rgb_image_sized"
LOSS_LAYER = "loss_metric_2"


class DlibFormatError(ValueError):
    """The file is not a dlib DNN file this reader understands (truncated, corrupt or another network)."""


@dataclass
class DlibLayer:
    """One computational layer as stored: kind ('con', 'affine', 'relu', 'max_pool', 'avg_pool', 'add_prev',
    'fc'), its integer hyper-parameters and its parameter arrays (float32, dlib's own layout)."""

    kind: str
    hyper: dict[str, int] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    """What a dlib metric-learning network file holds."""

    loss: str
    input_mean: tuple[float, float, float]  # per-channel RGB mean subtracted before dividing by 256
    input_size: tuple[int, int]  # (rows, columns) the net was trained on
    layers: list[DlibLayer]  # input → output


class _Reader:
    """Sequential decoder of dlib's serialisation primitives over an in-memory buffer."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data, self.pos, self.source = data, 0, source

    def _take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"{self.source}: file ends at byte {len(self.data)} while reading {what} "
                                  f"(truncated or not a dlib network file)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self, what: str = "an integer") -> int:
        control = self._take(1, what)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise DlibFormatError(f"{self.source}: bad integer control byte 0x{control:02x} at byte {self.pos - 1} "
                                  f"while reading {what}")
        value = int.from_bytes(self._take(size, what), "little")
        return -value if control & 0x80 else value

    def float(self, what: str = "a float") -> float:
        mantissa, exponent = self.int(what), self.int(what)
        return float(mantissa * 2.0 ** exponent)

    def bool(self, what: str = "a bool") -> bool:
        byte = self._take(1, what)
        if byte not in (b"0", b"1"):
            raise DlibFormatError(f"{self.source}: expected a bool ('0'/'1') at byte {self.pos - 1} for {what}, "
                                  f"got {byte!r}")
        return byte == b"1"

    def string(self, what: str = "a string") -> str:
        length = self.int(what)
        if not 0 <= length <= 256:
            raise DlibFormatError(f"{self.source}: implausible string length {length} for {what}")
        return self._take(length, what).decode("ascii", errors="replace")

    def expect_string(self, expected: str) -> None:
        found = self.string(f"the name {expected!r}")
        if found != expected:
            raise DlibFormatError(f"{self.source}: expected {expected!r}, found {found!r} (not dlib's "
                                  f"face-recognition ResNet?)")

    def tensor(self, what: str) -> np.ndarray:
        version = self.int(what)
        if version != 2:
            raise DlibFormatError(f"{self.source}: {what}: tensor version {version}, expected 2")
        shape = tuple(self.int(what) for _ in range(4))
        if min(shape) < 0:
            raise DlibFormatError(f"{self.source}: {what}: negative tensor shape {shape}")
        count = int(np.prod(shape))  # more values than the file holds is reported as truncation by _take
        return np.frombuffer(self._take(4 * count, what), dtype="<f4").reshape(shape).copy()

    def alias_shape(self, what: str) -> tuple[int, int, int, int]:
        version = self.int(what)
        if version != 1:
            raise DlibFormatError(f"{self.source}: {what}: alias tensor version {version}, expected 1")
        return tuple(self.int(what) for _ in range(4))  # type: ignore[return-value]

    def layer_trailer(self, what: str) -> None:
        for _ in range(3):  # setup called, gradient stale, output/gradient disabled
            self.bool(what)
        for _ in range(3):  # x_grad, cached output, params grad: written empty
            self.tensor(what)


def _split_params(params: np.ndarray, shapes: list[tuple[int, ...]], what: str, source: str) -> list[np.ndarray]:
    """Cut one flat dlib parameter tensor into consecutive arrays of the given shapes."""
    flat = params.reshape(-1)
    sizes = [int(np.prod(s)) for s in shapes]
    if sum(sizes) != flat.size:
        raise DlibFormatError(f"{source}: {what}: {flat.size} parameters do not fit the shapes {shapes}")
    out, start = [], 0
    for shape, size in zip(shapes, sizes):
        out.append(flat[start:start + size].reshape(shape))
        start += size
    return out


def _read_layer(r: _Reader, index: int) -> DlibLayer:
    name = r.string(f"layer {index}'s name")
    what = f"layer {index} ({name})"
    if name in ("con_4", "con_5"):
        params = r.tensor(what)
        keys = ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        hyper = {k: r.int(what) for k in keys}
        filters, biases = r.alias_shape(what), r.alias_shape(what)
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float(what)
        has_bias = r.bool(what) if name == "con_5" else True
        shapes = [filters] + ([biases] if has_bias else [])
        arrays = dict(zip(("weight", "bias"), _split_params(params, shapes, what, r.source)))
        return DlibLayer("con", hyper, arrays)
    if name == "affine_":
        params = r.tensor(what)
        gamma, beta = r.alias_shape(what), r.alias_shape(what)
        hyper = {"mode": r.int(what)}
        arrays = dict(zip(("gamma", "beta"), _split_params(params, [gamma, beta], what, r.source)))
        return DlibLayer("affine", hyper, arrays)
    if name in ("relu_", "add_prev_"):
        return DlibLayer(name.rstrip("_"))
    if name in ("max_pool_2", "avg_pool_2"):
        keys = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        return DlibLayer(name[:-2], {k: r.int(what) for k in keys})
    if name == "fc_2":
        hyper = {"num_outputs": r.int(what), "num_inputs": r.int(what)}
        params = r.tensor(what)
        weights, biases = r.alias_shape(what), r.alias_shape(what)
        hyper["bias_mode"] = r.int(what)
        for _ in range(4):
            r.float(what)
        shapes = [weights] + ([biases] if hyper["bias_mode"] == 0 else [])
        arrays = dict(zip(("weight", "bias"), _split_params(params, shapes, what, r.source)))
        return DlibLayer("fc", hyper, arrays)
    raise DlibFormatError(f"{r.source}: {what}: unsupported dlib layer type {name!r}")


def read_dlib_net(path: str | Path) -> DlibNet:
    """Read a dlib metric-learning network file (e.g. dlib_face_recognition_resnet_model_v1.dat).

    Raises FileNotFoundError for a missing file and DlibFormatError (naming the byte offset and the field) for
    a truncated, corrupt or foreign one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dlib network file {path} not found")
    r = _Reader(path.read_bytes(), path.name)
    version = r.int("the loss layer's version")
    if version != 1:
        raise DlibFormatError(f"{path.name}: loss layer version {version}, expected 1 (not a dlib DNN file?)")
    r.expect_string(LOSS_LAYER)
    r.float("the metric loss margin")
    r.float("the metric loss distance threshold")
    # Version ints output → input (2: layer, 1: tag/skip layer), ending with 3: the layer that owns the input.
    n_versions = 0
    while (version := r.int("a layer version")) != 3:
        if version not in (1, 2):
            raise DlibFormatError(f"{path.name}: unexpected layer version {version} at byte {r.pos}")
        n_versions += 1
        if n_versions > 10_000:
            raise DlibFormatError(f"{path.name}: no input layer found")
    r.expect_string(INPUT_LAYER)
    mean = (r.float("the red mean"), r.float("the green mean"), r.float("the blue mean"))
    size = (r.int("the input rows"), r.int("the input columns"))
    layers = []
    while r.pos < len(r.data):
        layers.append(_read_layer(r, len(layers)))
        r.layer_trailer(f"layer {len(layers) - 1}")
        if len(layers) == 1:
            r.int("the sample expansion factor")
        if layers[-1].kind == "fc":
            break
    if not layers or layers[-1].kind != "fc":
        raise DlibFormatError(f"{path.name}: ended before the final fc layer")
    return DlibNet(LOSS_LAYER, mean, size, layers)
