"""A small reader and writer of the safetensors format, on the standard library and torch only.

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N bytes
of JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the
tensors' bytes, little-endian, in C order, offsets relative to the end of the header. The Python
`safetensors` package is not on Debian, and this is all the cross-checks need.
"""

import json
import math
import struct
import sys

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {dtype: name for name, dtype in DTYPES.items()}

if sys.byteorder != "little":
    raise RuntimeError("safetensors_io: only little-endian hosts are supported")


class SafetensorsError(ValueError):
    pass


def _itemsize(dtype):
    return torch.empty((), dtype=dtype).element_size()


def load(path):
    """Returns (tensors: dict name -> torch.Tensor, metadata: dict str -> str)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise SafetensorsError(f"{path}: {len(blob)} bytes, too short for the 8-byte header length")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > len(blob) - 8:
        raise SafetensorsError(f"{path}: header length {header_len} exceeds the file ({len(blob)} bytes)")
    try:
        header = json.loads(blob[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SafetensorsError(f"{path}: header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data = memoryview(blob)[8 + header_len :]
    tensors = {}
    spans = []
    for name, info in header.items():
        dtype_name = info.get("dtype")
        if dtype_name not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {dtype_name!r}")
        dtype = DTYPES[dtype_name]
        shape = info.get("shape")
        begin, end = info.get("data_offsets", (None, None))
        if not isinstance(shape, list) or any(not isinstance(s, int) or s < 0 for s in shape):
            raise SafetensorsError(f"{path}: tensor {name!r} has a bad shape {shape!r}")
        expected = math.prod(shape) * _itemsize(dtype)
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= len(data)):
            raise SafetensorsError(
                f"{path}: tensor {name!r} has data_offsets {[begin, end]}, the data has {len(data)} bytes"
            )
        if end - begin != expected:
            raise SafetensorsError(
                f"{path}: tensor {name!r} of {dtype_name} {shape} needs {expected} bytes, has {end - begin}"
            )
        spans.append((begin, end, name))
        raw = bytearray(data[begin:end])  # a copy: the tensor owns writable memory
        tensor = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        tensors[name] = tensor.reshape(shape)
    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin != position:
            raise SafetensorsError(f"{path}: tensor {name!r} starts at {begin}, expected {position} (gap or overlap)")
        position = end
    if position != len(data):
        raise SafetensorsError(f"{path}: the tensors cover {position} of {len(data)} data bytes")
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def save(path, tensors, metadata=None):
    """Writes tensors (dict name -> torch.Tensor) and metadata (dict str -> str), sorted by name."""
    header = {}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        if tensor.dtype not in NAMES:
            raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {tensor.dtype}")
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for raw in chunks:
            f.write(raw)
