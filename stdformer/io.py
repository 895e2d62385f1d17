"""File helpers shared by every stage: atomic outputs, one-line data errors, deterministic npz.

* `atomic_output(path)`: write to a temp sibling, rename on success, so an interrupted stage
  never leaves a half-written output that looks complete (works for files and directories); the
  temporaries of killed writers are removed by the next writer of the same output.
* `staged_outputs(directory, name)`: a group of outputs of one run (predict's .npz, videos,
  meshes) written into one temporary directory and moved into place only when all succeeded.
* `check_output_dir(path)`: refuse an output directory that cannot be written, before any work.
* Loading what may not be trusted (pickles, `torch.load`) lives in `stdformer.safe_loading`.
* `npz_bytes(arrays)`: a `.npz` whose bytes depend only on the arrays (fixed zip timestamps), so
  DVC hashes of shards are stable across runs and machines.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import shutil
import socket
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np


MESSAGE_VALUE_CHARS = 160   # of a user's value shown in a message; the rest is counted


def cut_for_message(text: str, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """`text` cut to `limit` characters, saying how long it was: a 50 MB value in params.yaml
    or `--set` must not become a 50 MB error line (and log)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def repr_for_message(value: object) -> str:
    """repr(value) for an error message, cut (cut_for_message): every message that echoes a
    user's value uses this."""
    return cut_for_message(repr(value))


class DataError(ValueError):
    """Bad input: the message names the file and, where it applies, the field. The path and
    field (user text too: a dotted `--set` key, a dataset root) are cut like values, and the
    problem at a few lines' worth, so no message grows with the input."""

    def __init__(self, path: str | os.PathLike, problem: str | None = None,
                 field: str | None = None):
        if problem is None:  # torch re-raising a loader worker's error: DataError(its traceback)
            last = str(path).rstrip().splitlines()[-1] if str(path).strip() else ""
            path, _, problem = last.split("DataError: ", 1)[-1].partition(": ")
        path = cut_for_message(str(path), 4 * MESSAGE_VALUE_CHARS)
        field = None if field is None else cut_for_message(field, 2 * MESSAGE_VALUE_CHARS)
        problem = cut_for_message(problem, 12 * MESSAGE_VALUE_CHARS)
        self.path, self.field, self.problem = path, field, problem
        where = f"{self.path}: {field}" if field else self.path
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # so errors raised in worker processes arrive intact
        return (type(self), (self.path, self.problem, self.field))


# --------------------------------------------------------------------------------------------
# Atomic outputs


# Temporaries are named `.{output name}.{host}~{pid}.{random}.tmp`: the owner is in the name, so a
# later writer of the same output can tell a temporary left by a killed run (its owner process is
# gone) from one a concurrent writer is still filling (its owner is alive), and removes only the
# former. Temporaries of other hosts (a shared filesystem) are left alone: their owners cannot be
# checked from here.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_HOST}~{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporaries of `path` (files or directories next to it) whose owner process on this host
    has exited: what a killed writer of `path` left behind."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{re.escape(_HOST)}~(\d+)\.[^.]*\.tmp")
    stale = []
    for entry in path.parent.iterdir():
        m = pattern.fullmatch(entry.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            stale.append(entry)
    return sorted(stale)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success rename it onto `path`, else remove it.

    With `directory=True` the temp path is an empty directory and an existing `path` is
    replaced as a whole. Temporaries that killed writers of `path` left behind are removed
    first (see `stale_temporaries`), so an interrupted run costs no disk space after the next.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for entry in stale_temporaries(path):
        _remove(entry)
    prefix = _temp_prefix(path)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary data directory
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory:
            _replace_tree(tmp, path)
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _replace_tree(tmp: Path, path: Path) -> None:
    """Rename directory `tmp` onto `path`, an existing `path` replaced as a whole."""
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
        old.rmdir()  # a free name of our own, for the old tree
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)


@contextlib.contextmanager
def staged_outputs(directory: str | os.PathLike, name: str,
                   last: tuple[str, ...] = ()) -> Iterator[Path]:
    """Write the outputs of one run that belong together so that a failed run leaves none of
    them: yield an empty temporary directory inside `directory` (named after `name` as
    `atomic_output` names its temporaries, so a killed run's is removed by the next); when the
    block succeeds, move each entry into `directory`, replacing a file or directory of the same
    name (the names in `last` go last: the file that marks a run complete appears after the
    rest). When the block fails, nothing in `directory` changes. The temporary is gone after."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for entry in stale_temporaries(directory / name):
        _remove(entry)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(directory / name), suffix=".tmp",
                                dir=directory))
    try:
        yield tmp
        for entry in sorted(tmp.iterdir(), key=lambda p: (p.name in last, p.name)):
            if entry.is_dir():
                _replace_tree(entry, directory / entry.name)
            else:
                os.replace(entry, directory / entry.name)
    finally:
        _remove(tmp)


def check_output_dir(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output directory that cannot be written: DataError naming
    it when it is a file or lies under one, or when nothing can be created in it (in its
    nearest existing parent, for a directory still to be made). The probe (a directory made
    and removed at once, which also catches read-only mounts and root-proof immutable
    directories that permission bits do not show) leaves nothing behind."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(path, "output directory is a file" if existing == path else
                        f"output directory cannot be made: {existing} is a file")
    try:
        Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=existing)).rmdir()
    except OSError as e:
        where = "" if existing == path else f" (in {existing}, where it would be made)"
        raise DataError(path, f"output directory is not writable{where}: "
                        f"{e.strerror or e}") from e


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# Deterministic npz

_EPOCH = (1980, 1, 1, 0, 0, 0)


def npz_bytes(arrays: Mapping[str, np.ndarray], compress: bool = True) -> bytes:
    """Serialise arrays as an .npz (readable by `np.load`) with fixed timestamps and order."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for key in arrays:
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            zf.writestr(info, npy_bytes(np.asarray(arrays[key])))
    return buf.getvalue()


_NPY_HEADER_CACHE: dict[tuple[np.dtype, tuple[int, ...]], bytes] = {}


def npy_bytes(array: np.ndarray) -> bytes:
    """The .npy bytes `np.lib.format.write_array` writes for `array` in C order (no pickles),
    with the header made by it once per (dtype, shape) and reused (building it is most of the
    cost of a small array; shard targets repeat a dozen shapes)."""
    # C order (ascontiguousarray would also turn a 0-d array into shape (1,))
    array = np.ascontiguousarray(array) if array.ndim else array
    if array.dtype.hasobject:  # write_array refuses it (allow_pickle=False), with its message
        np.lib.format.write_array(io.BytesIO(), array, allow_pickle=False)
    key = (array.dtype, array.shape)
    header = _NPY_HEADER_CACHE.get(key)
    if header is None:
        member = io.BytesIO()
        np.lib.format.write_array(member, np.empty_like(array), allow_pickle=False)
        header = _NPY_HEADER_CACHE[key] = member.getvalue()[:member.tell() - array.nbytes]
    return header + array.tobytes()


_NPY_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], bool]] = {}


def npz_arrays(raw: bytes) -> dict[str, np.ndarray]:
    """The arrays of an .npz held in memory (pickle-free).

    An .npz of uncompressed members with sizes in their local headers (as `npz_bytes(...,
    compress=False)` writes shard targets) is read in place: the zip's local headers are walked
    and each array is a view into one writable copy of `raw`, its .npy header parsed once per
    distinct header (np.load builds a ZipFile and parses every header with ast.literal_eval,
    most of the cost of small arrays). Anything else goes through np.load. Raises
    zipfile.BadZipFile / ValueError on bytes that are no .npz.
    """
    data = memoryview(bytearray(raw))
    out: dict[str, np.ndarray] = {}
    pos = 0
    while bytes(data[pos:pos + 4]) == zipfile.stringFileHeader:
        fields = zipfile.struct.unpack(zipfile.structFileHeader,
                                       data[pos:pos + zipfile.sizeFileHeader])
        size = fields[zipfile._FH_COMPRESSED_SIZE]
        if (fields[zipfile._FH_COMPRESSION_METHOD] != zipfile.ZIP_STORED
                or fields[zipfile._FH_GENERAL_PURPOSE_FLAG_BITS] & 0x08 or size == 0xFFFFFFFF):
            return _np_load_bytes(raw)  # compressed, streamed or zip64: the general reader
        start = pos + zipfile.sizeFileHeader + fields[zipfile._FH_FILENAME_LENGTH]
        name = bytes(data[pos + zipfile.sizeFileHeader:start]).decode("utf-8")
        start += fields[zipfile._FH_EXTRA_FIELD_LENGTH]
        out[name[:-4] if name.endswith(".npy") else name] = _npy_view(data[start:start + size])
        pos = start + size
    if not out:
        return _np_load_bytes(raw)
    return out


def _npy_view(member: memoryview) -> np.ndarray:
    """The array of .npy bytes, as a view into them."""
    if bytes(member[:6]) != b"\x93NUMPY":
        raise ValueError("not a .npy member")
    header_len = 10 + int.from_bytes(member[8:10], "little") if member[6] == 1 else \
        12 + int.from_bytes(member[8:12], "little")
    header = bytes(member[:header_len])
    if header not in _NPY_HEADERS:
        fp = io.BytesIO(header)
        read_header = (np.lib.format.read_array_header_1_0
                       if np.lib.format.read_magic(fp) == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(fp)
        if dtype.hasobject:
            raise ValueError("object arrays are not allowed")
        _NPY_HEADERS[header] = dtype, shape, fortran
    dtype, shape, fortran = _NPY_HEADERS[header]
    array = np.frombuffer(member, dtype, math.prod(shape), header_len)
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def _np_load_bytes(raw: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    write_bytes_atomic(path, npz_bytes(arrays))


def load_npz(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Load a plain (pickle-free) .npz; a missing file or key is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(path, f"not a readable .npz: {e}") from e
    for key in required:
        if key not in arrays:
            raise DataError(path, "missing array", field=key)
    return arrays


def read_json(path: str | os.PathLike, produced_by: str = "") -> object:
    """Parse a JSON file; a missing or malformed file is a DataError naming it. `produced_by`
    ("the body stage") tells the user what writes the file."""
    import json

    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"file not found (run {produced_by} first)" if produced_by
                        else "file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON: {e}") from e


def file_digest(path: str | os.PathLike, algo: str = "sha256") -> str:
    import hashlib

    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_guarded(fn: Callable, *args, **kwargs):
    """Call fn; convert a DataError into a one-line message on stderr and exit status 2.

    Stage entry points use this so users see "file: field: problem", not a traceback.
    """
    import sys

    try:
        return fn(*args, **kwargs)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
