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

Reading opens only regular files (a folder, a FIFO -- which would block -- or a device
such as /dev/zero is refused before it is read) and validates everything, never executing
anything from the file: the header length against the file size (and a 100 MB cap), the
JSON (no duplicate keys, no absurd nesting), each tensor's dtype (known), shape (at most
16 non-negative integers) and byte length (dtype size x elements, in exact arithmetic, so
a shape whose product overflows 64 bits cannot pass), and that the tensors' byte ranges
tile the buffer exactly: contiguous from 0, no overlap, no hole, nothing after the last one. Anything else raises
:class:`ModelFileError` naming the file and the problem. A file that is a pickled PyTorch
checkpoint (zip or raw pickle) is recognised and refused: it is never unpickled.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Dict, Tuple

import numpy as np

if TYPE_CHECKING:  # torch is imported only to read or write tensors: headers are read without it
    import torch

from .output import replaced_atomically
from .errors import ModelFileError

__all__ = ["save_safetensors", "load_safetensors", "read_safetensors_header", "read_safetensors_tensors",
           "open_regular_file", "DTYPES", "MAX_HEADER_BYTES", "MAX_TENSOR_DIMENSIONS", "PICKLE_MESSAGE"]

#: The reference implementation's cap on the header size.
MAX_HEADER_BYTES = 100_000_000
#: More dimensions than any network weight has (and fewer than numpy's own limit).
MAX_TENSOR_DIMENSIONS = 16
#: Bytes a tensor's shape may describe, zero dimensions counted as 1 (numpy's own limit is 2**63).
MAX_TENSOR_EXTENT = 2 ** 62

PICKLE_MESSAGE = ("this looks like a pickled PyTorch checkpoint; RevGAN never unpickles model files "
                  "(unpickling can run arbitrary code). Convert it to a RevGAN model file (safetensors "
                  "+ metadata) with RevGANCore.modelfile.save_model")

# safetensors dtype name -> (little-endian numpy dtype used for the bytes, torch dtype name)
DTYPES: Dict[str, Tuple[str, str]] = {
    "F64": ("<f8", "float64"),
    "F32": ("<f4", "float32"),
    "F16": ("<f2", "float16"),
    "BF16": ("<i2", "bfloat16"),  # read as 16-bit integers, then viewed as bfloat16
    "I64": ("<i8", "int64"),
    "I32": ("<i4", "int32"),
    "I16": ("<i2", "int16"),
    "I8": ("<i1", "int8"),
    "U8": ("<u1", "uint8"),
    "BOOL": ("<u1", "bool"),
}
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


_SPECIAL_FILES = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a device"),
                  (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(path: Path, mode: int) -> ModelFileError:
    kind = next((name for is_kind, name in _SPECIAL_FILES if is_kind(mode)), "a special file")
    return ModelFileError(f"{path}: is {kind}, not a regular file")


def open_regular_file(path) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file, else raise :class:`ModelFileError`.
    The file is opened non-blocking and checked again on the open descriptor, so a FIFO
    cannot hang the reader, even one swapped in after the first check."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except OSError as error:
        raise ModelFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as error:
        raise ModelFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _parse_header_json(path: Path, raw: bytes) -> dict:
    try:
        header = json.loads(raw.decode("utf-8").rstrip(" "), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as error:
        raise ModelFileError(f"{path}: the safetensors header is not valid JSON ({error})") from None
    except RecursionError:
        raise ModelFileError(f"{path}: the safetensors header is nested too deeply to be a model file") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the safetensors header must be a JSON object")
    return header


def _tensor_span(where: str, entry) -> Tuple[int, int]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ModelFileError(f"{where}: needs exactly dtype, shape and data_offsets")
    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        if dtype in _KNOWN_UNSUPPORTED:
            raise ModelFileError(f"{where}: dtype {dtype} is not supported by RevGAN model files")
        raise ModelFileError(f"{where}: unknown dtype {dtype!r}")
    shape = entry["shape"]
    if isinstance(shape, list) and len(shape) > MAX_TENSOR_DIMENSIONS:
        raise ModelFileError(f"{where}: shape has {len(shape)} dimensions; at most {MAX_TENSOR_DIMENSIONS}")
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
    itemsize = np.dtype(DTYPES[dtype][0]).itemsize
    # Exact Python integers, zero dimensions counted as 1 (as numpy does when it sizes an
    # array): a shape whose product wraps around in int64, e.g. [2**32, 2**32] -> 0, or an
    # empty [0, 2**62], is refused here instead of passing as small or crashing numpy.
    if math.prod(max(n, 1) for n in shape) * itemsize > MAX_TENSOR_EXTENT:
        raise ModelFileError(f"{where}: shape {shape} is impossibly large (more than 2**62 bytes)")
    expected = math.prod(shape) * itemsize
    if end - begin != expected:
        raise ModelFileError(f"{where}: data_offsets span {end - begin} bytes, but dtype {dtype} and "
                             f"shape {shape} need {expected}")
    return begin, end


def read_safetensors_header(path) -> Tuple[dict, Dict[str, str], int, int]:
    """Parse and validate the header: (tensor entries, metadata, buffer offset, buffer size).
    Reads no tensor data."""
    path = Path(path)
    try:
        with open_regular_file(path) as stream:
            size = os.fstat(stream.fileno()).st_size
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
    header = _parse_header_json(path, raw)
    metadata = header.pop("__metadata__", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ModelFileError(f"{path}: __metadata__ must map strings to strings")
    buffer_start = 8 + length
    buffer_size = size - buffer_start
    spans = sorted(_tensor_span(f"{path}: tensor {name!r}", entry) + (name,) for name, entry in header.items())
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


def read_safetensors_tensors(path, header: dict, start: int, size: int) -> Dict[str, torch.Tensor]:
    """Every tensor (CPU, owning its memory) of a header from :func:`read_safetensors_header`."""
    path = Path(path)
    try:
        with open_regular_file(path) as stream:
            stream.seek(start)
            data = stream.read(size)
    except OSError as error:
        raise ModelFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    if len(data) != size:
        raise ModelFileError(f"{path}: is truncated")
    import torch

    tensors: Dict[str, torch.Tensor] = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        numpy_dtype, torch_name = DTYPES[entry["dtype"]]
        torch_dtype = getattr(torch, torch_name)
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
    return tensors


def load_safetensors(path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Read every tensor (CPU, owning its memory) and the ``__metadata__`` strings."""
    header, metadata, start, size = read_safetensors_header(path)
    return read_safetensors_tensors(path, header, start, size), dict(metadata)


def _tensor_bytes(name: str, tensor: torch.Tensor) -> Tuple[str, bytes]:
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise ModelFileError(f"tensor {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
    tensor = tensor.detach().cpu().contiguous()
    names = {getattr(torch, torch_name): name for name, (_, torch_name) in DTYPES.items()}
    if tensor.dtype not in names:
        raise ModelFileError(f"tensor {name!r} has dtype {tensor.dtype}, which RevGAN model files do not store")
    dtype_name = names[tensor.dtype]
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
