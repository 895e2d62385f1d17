"""Shard tar files, byte for byte as webdataset writes them, and a fast reader for them.

`ShardSeriesWriter` writes samples (member suffix -> bytes, plus "__key__") into
`shard-%06d.tar` files: USTAR members sorted by name with a fixed owner, mode and mtime, so the
bytes depend only on the samples; each shard is hashed while it is written. `read_shard` reads
such a shard back as webdataset groups it, parsing the few header fields it needs instead of
running the tarfile module over every member.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from stdformer.io import DataError

SHARD_PATTERN = "shard-%06d.tar"


# A regular file's USTAR header fields, as tarfile lays them out (POSIX.1-1988).
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte header tarfile writes for a shard member: `TarInfo(name)` with `size`,
    mtime 0, mode 0o444, no owner names, `.tobuf(USTAR_FORMAT)`. Built here for names that fit
    the name field (tobuf's general path was 5% of a default preprocess run); longer names and
    sizes past 8 GiB take tarfile's own path. tests/test_shards.py compares the bytes."""
    raw = name.encode(tarfile.ENCODING, "surrogateescape")
    if len(raw) > 100 or size >= 8 ** 11:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uname, info.gname = size, 0, 0o444, "", ""
        return info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")
    header = bytearray(_USTAR.pack(
        raw, b"0000444\0", b"0000000\0", b"0000000\0", b"%011o\0" % size, b"00000000000\0",
        b" " * 8, tarfile.REGTYPE, b"", tarfile.POSIX_MAGIC, b"", b"", b"", b"", b""))
    header[148:155] = b"%06o\0" % sum(header)   # checksum: bytes summed with the field blank
    return bytes(header)


class ShardSeriesWriter:
    """Write samples into `directory/shard-%06d.tar`, `samples_per_shard` per shard.

    Each shard is written to a hidden temp name and renamed when complete, so a crash never
    leaves a truncated shard under a final name. Members are written as webdataset's TarWriter
    writes them (USTAR headers, fixed owner, mode and mtime, sorted by name: the bytes depend
    only on the samples), straight to the file, and hashed on the way: `digests` maps each
    completed shard name to its (size, sha256). Use as a context manager; `write` returns the
    shard file name the sample went to.
    """

    def __init__(self, directory: str | os.PathLike, samples_per_shard: int):
        if samples_per_shard < 1:
            raise ValueError("samples_per_shard must be >= 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.samples_per_shard = samples_per_shard
        self.shards: list[str] = []  # completed shard names, in order
        self.digests: dict[str, tuple[int, str]] = {}
        self._index = 0
        self._count = 0
        self._file = None
        self._hash = None
        self._size = 0
        self._tmp: Path | None = None

    def write(self, sample: Mapping[str, Any]) -> str:
        if self._file is None:
            self._open()
        key = sample["__key__"]
        for suffix in sorted(sample):
            if suffix.startswith("_"):
                continue
            data = sample[suffix]
            data = data.encode("utf-8") if isinstance(data, str) else data
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise ValueError(f"{key}.{suffix}: expected bytes, got {type(data).__name__}")
            self._put(ustar_header(f"{key}.{suffix}", len(data)))
            self._put(data)
            self._put(bytes(-len(data) % tarfile.BLOCKSIZE))
        name = SHARD_PATTERN % self._index
        self._count += 1
        if self._count == self.samples_per_shard:
            self._finish()
        return name

    def _put(self, data) -> None:
        self._file.write(data)
        self._hash.update(data)
        self._size += len(data)

    def _open(self) -> None:
        name = SHARD_PATTERN % self._index
        self._tmp = self.directory / f".{name}.tmp"
        self._file = open(self._tmp, "wb")
        self._hash, self._size = hashlib.sha256(), 0

    def _finish(self) -> None:
        # The end of archive: two zero blocks, padded to a whole tar record (as tarfile does).
        self._put(bytes(2 * tarfile.BLOCKSIZE))
        self._put(bytes(-self._size % tarfile.RECORDSIZE))
        self._file.close()
        name = SHARD_PATTERN % self._index
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.directory / name)
        self.shards.append(name)
        self.digests[name] = (self._size, self._hash.hexdigest())
        self._file = self._hash = self._tmp = None
        self._index += 1
        self._count = 0

    def close(self) -> None:
        if self._file is not None:
            self._finish()

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            self._file = self._hash = self._tmp = None

    def __enter__(self) -> ShardSeriesWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_shards(directory: str | os.PathLike, samples: Iterable[Mapping[str, Any]],
                 samples_per_shard: int) -> list[tuple[str, str]]:
    """Write all samples; returns [(key, shard name)] in write order."""
    placed = []
    with ShardSeriesWriter(directory, samples_per_shard) as writer:
        for sample in samples:
            placed.append((sample["__key__"], writer.write(sample)))
    return placed


def sample_key(name: str) -> str | None:
    """Tar member name -> webdataset sample key (directory + basename up to its first dot);
    None for names webdataset skips (no dot, or a basename starting with "__")."""
    base = name.rsplit("/", 1)[-1]
    if base.startswith("__") or "." not in base:
        return None
    return name[: len(name) - len(base)] + base.split(".", 1)[0]


def read_shard(path: str, select: Callable[[str], bool] | None = None
               ) -> Iterator[dict[str, Any]]:
    """The samples of a shard as ShardSeriesWriter writes them (plain USTAR members), in tar
    order, grouped by key as webdataset groups them: {"__key__", "__url__", suffix: bytes}.
    Only members whose name passes `select` are read; the others are skipped unread.

    A few header fields are parsed instead of running the tarfile module over every member
    (most of the cost of reading small members). Anything that is not a complete plain tar
    of regular files is a DataError naming the shard.
    """
    sample: dict[str, Any] | None = None
    try:
        with open(path, "rb") as f:
            while True:
                header = f.read(tarfile.BLOCKSIZE)
                if len(header) < tarfile.BLOCKSIZE:
                    raise DataError(path, "not a readable tar shard (truncated: no end of "
                                    "archive)")
                if header == bytes(tarfile.BLOCKSIZE):
                    break
                if header[257:262] != b"ustar" or header[156:157] not in (b"0", b"\0"):
                    raise DataError(path, "not a shard as preprocess writes them (a tar member "
                                    f"that is not a plain USTAR file: {header[:100]!r})")
                name = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                prefix = header[345:500].split(b"\0", 1)[0]
                if prefix:
                    name = f"{prefix.decode('utf-8', 'surrogateescape')}/{name}"
                size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
                key = sample_key(name)
                if key is None or (select is not None and not select(name)):
                    f.seek(size + (-size % tarfile.BLOCKSIZE), os.SEEK_CUR)
                    continue
                data = f.read(size)
                if len(data) < size:
                    raise DataError(path, f"not a readable tar shard (truncated in {name})")
                f.seek(-size % tarfile.BLOCKSIZE, os.SEEK_CUR)
                if sample is not None and sample["__key__"] != key:
                    yield sample
                    sample = None
                if sample is None:
                    sample = {"__key__": key, "__url__": path}
                sample[name[len(key) + 1:]] = data
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(path, f"not a readable tar shard: {e}") from e
    if sample is not None:
        yield sample
