"""The manifest of a preprocess output, and the check that the shards on disk are what it lists.

`<out>/manifest.parquet` has one row per clip (MANIFEST_SCHEMA): where the clip is (`split`,
`shard`, `key`), what it holds (`sequence`, `actor`, `frame_start`, `frame_end`, `num_frames`,
`valid`, `num_valid`, `source`: the dataset's name in params' `datasets:`, `camera`: its
camera number, 0 where the layout has none (3DPW), `crop_size`, `context_size`) and the size
and sha256 of its shard (`shard_bytes`, `shard_sha256`, repeated on every clip of the shard).
Rows are in write order, so the keys of one shard are in tar order. With several datasets,
`source_dirs` finds each one's output (data/shards/<name>/).

Readers go through `split_shards`: every `*.tar` in `<out>/<split>/` must be a shard the manifest
lists, with the listed size and sha256. A stray shard copied into the directory, a shard
truncated at a member boundary (a readable tar with fewer clips) or one rewritten by another
preprocess run is refused with a DataError naming the file, before any clip is read.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from stdformer.io import DataError, file_digest, write_bytes_atomic

MANIFEST_NAME = "manifest.parquet"

MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()), ("split", pa.string()), ("shard", pa.string()),
    ("sequence", pa.string()), ("actor", pa.int32()), ("frame_start", pa.int32()),
    ("frame_end", pa.int32()), ("num_frames", pa.int32()), ("num_valid", pa.int32()),
    ("valid", pa.list_(pa.bool_())), ("source", pa.string()), ("camera", pa.int32()),
    ("crop_size", pa.int32()),
    ("context_size", pa.int32()), ("shard_bytes", pa.int64()), ("shard_sha256", pa.string()),
])
# Filled by write_manifest from the shard files themselves.
DIGEST_FIELDS = ("shard_bytes", "shard_sha256")

RERUN = "rerun the preprocess stage (`dvc repro preprocess`)"


# --------------------------------------------------------------------------------------------
# Writing


def manifest_bytes(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Parquet bytes of the manifest rows (columns of MANIFEST_SCHEMA, row order kept).

    The table is built by Arrow's JSON reader, in C++: building it from Python lists
    (`pa.table`) makes pyarrow import pandas, a second of every preprocess run.
    """
    rows = ({"camera": 0, **row} for row in rows)      # camera 0: a source without cameras
    lines = b"".join(json.dumps({f.name: row[f.name] for f in MANIFEST_SCHEMA}).encode() + b"\n"
                     for row in rows)
    table = pa_json.read_json(
        io.BytesIO(lines), read_options=pa_json.ReadOptions(block_size=max(1 << 20, len(lines))),
        parse_options=pa_json.ParseOptions(explicit_schema=MANIFEST_SCHEMA,
                                           unexpected_field_behavior="error"))
    sink = pa.BufferOutputStream()
    pq.write_table(table.combine_chunks(), sink, compression="zstd", write_statistics=False)
    return sink.getvalue().to_pybytes()


def write_manifest(root: str | os.PathLike, rows: Sequence[Mapping[str, Any]],
                   digests: Mapping[str, tuple[int, str]] | None = None) -> None:
    """Write `root/manifest.parquet`; each row's shard (`root/<row["shard"]>`, complete by now)
    gets its size and sha256 in every row of that shard: from `digests` (shard -> (size,
    sha256), e.g. hashed while it was written: ShardSeriesWriter.digests), else read and hashed
    once."""
    root = Path(root)
    digests = dict(digests or {})
    for row in rows:
        if row["shard"] not in digests:
            path = root / row["shard"]
            digests[row["shard"]] = (path.stat().st_size, file_digest(path))
    rows = [{**row, **dict(zip(DIGEST_FIELDS, digests[row["shard"]]))} for row in rows]
    write_bytes_atomic(root / MANIFEST_NAME, manifest_bytes(rows))


# --------------------------------------------------------------------------------------------
# Reading


def read_manifest(path: str | os.PathLike) -> dict[str, list]:
    """Manifest columns (name -> list, one entry per clip). `path`: the parquet file or the
    preprocess output directory holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise DataError(path, f"file not found ({RERUN})")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(path, f"not a readable parquet file: {e}") from e
    missing = [f.name for f in MANIFEST_SCHEMA if f.name not in table.column_names]
    if missing:
        raise DataError(path, f"missing column (written by an older version; {RERUN})",
                        field=missing[0])
    return table.to_pydict()


def source_dirs(root: str | os.PathLike) -> dict[str, Path]:
    """The preprocess outputs under `root`: {name: directory} of each subdirectory holding a
    manifest (data/shards/<name>/, one per dataset), sorted by name. DataError when there is
    none (naming the manifest a single output would have)."""
    root = Path(root)
    found = {p.parent.name: p.parent for p in sorted(root.glob(f"*/{MANIFEST_NAME}"))}
    if not found:
        raise DataError(root / MANIFEST_NAME, f"file not found, nor */{MANIFEST_NAME} (one per "
                        f"dataset) ({RERUN})")
    return found


@dataclass(frozen=True)
class ShardFile:
    """One verified shard: its path, name relative to the output (`train/shard-000000.tar`),
    size, sha256 and clip keys in tar order."""

    path: str
    name: str
    size: int
    sha256: str
    keys: tuple[str, ...]


def split_shards(root: str | os.PathLike, split: str, verify: bool = True) -> list[ShardFile]:
    """The shards of `split` as the manifest of `root` lists them (sorted by name), checked
    against the files: nothing missing, nothing unlisted, sizes and (with `verify`) sha256
    equal. DataError naming the first file that differs."""
    root = Path(root)
    manifest = read_manifest(root)
    where = root / MANIFEST_NAME
    listed: dict[str, dict[str, Any]] = {}
    for name, row_split, key, size, digest in zip(
            manifest["shard"], manifest["split"], manifest["key"], manifest["shard_bytes"],
            manifest["shard_sha256"], strict=True):
        if row_split == split:
            entry = listed.setdefault(name, {"size": size, "sha256": digest, "keys": []})
            entry["keys"].append(key)
    if not listed:
        raise DataError(where, f"lists no clips of split {split!r}", field="split")
    directory = root / split
    if not directory.is_dir():
        raise DataError(directory, f"directory of split {split!r} not found ({RERUN})")
    for path in sorted(directory.glob("*.tar")):
        if f"{split}/{path.name}" not in listed:
            raise DataError(path, f"not a shard {where} lists (a stray file? the manifest "
                            f"lists {len(listed)} shard(s) of {split!r}); remove it or {RERUN}")
    shards = []
    for name in sorted(listed):
        entry, path = listed[name], root / name
        if not path.is_file():
            raise DataError(path, f"listed in {where} but missing ({RERUN})")
        size = path.stat().st_size
        if size != entry["size"]:
            raise DataError(path, f"{size} bytes, the manifest lists {entry['size']} "
                            f"(truncated or rewritten; {RERUN})")
        if verify and file_digest(path) != entry["sha256"]:
            raise DataError(path, f"content differs from the sha256 in {where} (changed "
                            f"after preprocessing; {RERUN})")
        shards.append(ShardFile(str(path), name, size, entry["sha256"], tuple(entry["keys"])))
    return shards


def split_counts(manifest: Mapping[str, list]) -> dict[str, dict[str, int]]:
    """Per split: clips, shards, frames and valid_frames, each frame counted once (windows of
    a track overlap: the last clip, and strides below clip_len)."""
    frames: dict[str, dict[tuple[str, int, int], bool]] = {}
    clips: dict[str, int] = {}
    shards: dict[str, set[str]] = {}
    for split, shard, seq, actor, start, valid in zip(
            manifest["split"], manifest["shard"], manifest["sequence"], manifest["actor"],
            manifest["frame_start"], manifest["valid"], strict=True):
        clips[split] = clips.get(split, 0) + 1
        shards.setdefault(split, set()).add(shard)
        seen = frames.setdefault(split, {})
        for i, ok in enumerate(valid):
            seen[(seq, int(actor), int(start) + i)] = bool(ok)  # windows agree per frame
    return {split: {"clips": clips[split], "shards": len(shards[split]),
                    "frames": len(frames[split]),
                    "valid_frames": sum(frames[split].values())} for split in sorted(clips)}
