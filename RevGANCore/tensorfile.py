"""A small, strict reader and writer of the safetensors file format, without the
``safetensors`` package (RevGANCore must run in 3D Slicer's Python with no pip step).

The format (https://github.com/huggingface/safetensors, "Format" section)::

    8 bytes      N, the header length, unsigned 64-bit little-endian
    N bytes      a UTF-8 JSON object, possibly padded at its end with spaces:
                 {"__metadata__": {"key": "value", ...},            (optional, str -> str)
                  "tensor name": {"dtype": "F32", "shape": [2, 3],
                                  "data_offsets": [begin, end]}, ...}
    rest         the data buffer: each tensor's bytes, little-endian, row-major,
                 at [begin, end) relative to the start of the buffer

Reading validates everything and never executes anything from the file: the header
length against the file size (and a 100 MB cap), the JSON (no duplicate keys), each
tensor's dtype (known), shape (non-negative integers) and byte length (dtype size x
elements), and that the tensors' byte ranges tile the buffer exactly: contiguous from 0,
no overlap, no hole, nothing after the last one. Anything else raises
:class:`ModelFileError` naming the file and the problem. A file that is a pickled PyTorch
checkpoint (zip or raw pickle) is recognised and refused: it is never unpickled.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

from .output import replaced_atomically
from .errors import ModelFileError

__all__ = ["save_safetensors", "load_safetensors", "read_safetensors_header", "DTYPES",
           "MAX_HEADER_BYTES", "PICKLE_MESSAGE"]

#: The reference implementation's cap on the header size.
MAX_HEADER_BYTES = 100_000_000

PICKLE_MESSAGE = ("this looks like a pickled PyTorch checkpoint; RevGAN never unpickles model files "
                  "(unpickling can run arbitrary code). Convert it to a RevGAN model file (safetensors "
                  "+ metadata) with RevGANCore.modelfile.save_model")

# safetensors dtype name -> (little-endian numpy dtype used for the bytes, torch dtype)
DTYPES: Dict[str, Tuple[str, torch.dtype]] = {
    "F64": ("<f8", torch.float64),
    "F32": ("<f4", torch.float32),
    "F16": ("<f2", torch.float16),
    "BF16": ("<i2", torch.bfloat16),  # read as 16-bit integers, then viewed as bfloat16
    "I64": ("<i8", torch.int64),
    "I32": ("<i4", torch.int32),
    "I16": ("<i2", torch.int16),
    "I8": ("<i1", torch.int8),
    "U8": ("<u1", torch.uint8),
    "BOOL": ("<u1", torch.bool),
}
_TORCH_TO_NAME = {torch_dtype: name for name, (_, torch_dtype) in DTYPES.items()}
# Names the format defines that this reader does not load (it says so, rather than "unknown").
_KNOWN_UNSUPPORTED = ("U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2",
                      "C64")


def _no_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _diagnose_not_safetensors(path: Path, head: bytes) -> ModelFileError:
    if head[:4] == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return ModelFileError(f"{path}: {PICKLE_MESSAGE}")
    if head[:6] == b"\x93NUMPY":
        return ModelFileError(f"{path}: is a numpy .npy array, not a RevGAN model file (safetensors)")
    return ModelFileError(f"{path}: is not a safetensors file (no valid header); it may be corrupt or "
                          "of another format")


def read_safetensors_header(path) -> Tuple[dict, Dict[str, str], int, int]:
    """Parse and validate the header: (tensor entries, metadata, buffer offset, buffer size)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            head = stream.read(16)
            if len(head) < 8:
                raise ModelFileError(f"{path}: is too short to be a safetensors file ({size} bytes)")
            (length,) = struct.unpack("<Q", head[:8])
            if length < 2 or length > MAX_HEADER_BYTES or length > size - 8 or head[8:9] != b"{":
                raise _diagnose_not_safetensors(path, head)
            stream.seek(8)
            raw = stream.read(length)
    except OSError as error:
        raise ModelFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    if len(raw) != length:
        raise ModelFileError(f"{path}: is truncated (header cut short)")
    try:
        header = json.loads(raw.decode("utf-8").rstrip(" "), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as error:
        raise ModelFileError(f"{path}: the safetensors header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the safetensors header must be a JSON object")
    metadata = header.pop("__metadata__", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ModelFileError(f"{path}: __metadata__ must map strings to strings")
    buffer_start = 8 + length
    buffer_size = size - buffer_start
    spans = []
    for name, entry in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ModelFileError(f"{where}: needs exactly dtype, shape and data_offsets")
        dtype = entry["dtype"]
        if dtype not in DTYPES:
            if dtype in _KNOWN_UNSUPPORTED:
                raise ModelFileError(f"{where}: dtype {dtype} is not supported by RevGAN model files")
            raise ModelFileError(f"{where}: unknown dtype {dtype!r}")
        shape = entry["shape"]
        if not isinstance(shape, list) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise ModelFileError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
        offsets = entry["data_offsets"]
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise ModelFileError(f"{where}: data_offsets must be two integers, got {offsets!r}")
        begin, end = offsets
        if begin < 0 or end < begin:
            raise ModelFileError(f"{where}: invalid data_offsets {offsets}")
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[dtype][0]).itemsize
        if end - begin != expected:
            raise ModelFileError(f"{where}: data_offsets span {end - begin} bytes, but dtype {dtype} and "
                                 f"shape {shape} need {expected}")
        spans.append((begin, end, name))
    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin != position:
            problem = "overlaps the previous tensor" if begin < position else "leaves a gap before it"
            raise ModelFileError(f"{path}: tensor {name!r} at bytes {begin}-{end} {problem}")
        position = end
    if position > buffer_size:
        raise ModelFileError(f"{path}: is truncated (the header describes {position} data bytes, "
                             f"the file holds {buffer_size})")
    if position < buffer_size:
        raise ModelFileError(f"{path}: has {buffer_size - position} unexpected bytes after the last tensor")
    return header, metadata, buffer_start, buffer_size


def load_safetensors(path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Read every tensor (CPU, owning its memory) and the ``__metadata__`` strings."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a model file")
    header, metadata, start, size = read_safetensors_header(path)
    try:
        with open(path, "rb") as stream:
            stream.seek(start)
            data = stream.read(size)
    except OSError as error:
        raise ModelFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    if len(data) != size:
        raise ModelFileError(f"{path}: is truncated")
    tensors: Dict[str, torch.Tensor] = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        numpy_dtype, torch_dtype = DTYPES[entry["dtype"]]
        count = (end - begin) // np.dtype(numpy_dtype).itemsize
        native = np.dtype(numpy_dtype).newbyteorder("=")
        if count == 0:
            array = np.empty(entry["shape"], dtype=native)
        else:
            little = np.frombuffer(data, dtype=numpy_dtype, count=count, offset=begin)
            array = little.astype(native, copy=True).reshape(entry["shape"])
        tensor = torch.from_numpy(array)
        if torch_dtype in (torch.bfloat16, torch.bool):
            tensor = tensor.view(torch_dtype)
        tensors[name] = tensor
    return tensors, dict(metadata)


def _tensor_bytes(name: str, tensor: torch.Tensor) -> Tuple[str, bytes]:
    if not isinstance(tensor, torch.Tensor):
        raise ModelFileError(f"tensor {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype not in _TORCH_TO_NAME:
        raise ModelFileError(f"tensor {name!r} has dtype {tensor.dtype}, which RevGAN model files do not store")
    dtype_name = _TORCH_TO_NAME[tensor.dtype]
    numpy_dtype = DTYPES[dtype_name][0]
    if tensor.dtype == torch.bfloat16:
        array = tensor.view(torch.int16).numpy()
    elif tensor.dtype == torch.bool:
        array = tensor.view(torch.uint8).numpy()
    else:
        array = tensor.numpy()
    return dtype_name, array.astype(numpy_dtype, copy=False).tobytes(order="C")


def save_safetensors(path, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> Path:
    """Write ``tensors`` and ``metadata`` (str -> str) as a safetensors file, atomically
    (a temporary file in the target's folder, then ``os.replace``)."""
    path = Path(path)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ModelFileError(f"{path}: safetensors metadata must map strings to strings")
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    chunks = []
    position = 0
    for name in sorted(tensors):
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ModelFileError(f"{path}: invalid tensor name {name!r}")
        dtype_name, data = _tensor_bytes(name, tensors[name])
        header[name] = {"dtype": dtype_name, "shape": list(tensors[name].shape),
                        "data_offsets": [position, position + len(data)]}
        chunks.append(data)
        position += len(data)
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # keep the data buffer 8-byte aligned
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a file name")
    try:
        with replaced_atomically(path) as temporary, open(temporary, "wb") as stream:
            stream.write(struct.pack("<Q", len(encoded)))
            stream.write(encoded)
            for chunk in chunks:
                stream.write(chunk)
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as error:
        raise ModelFileError(f"{path}: cannot be written ({error.strerror or error})") from None
    return path
