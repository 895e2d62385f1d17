"""The sources under a shards directory: what training's mix and evaluation's datasets name.

The pipeline's `data/shards` holds one preprocess output per entry of params `datasets`:
`data/shards/<name>/` (manifest.parquet, report.json, <split>/shard-*.tar), its clips tagged
with `source = <name>`. A directory that is itself one preprocess output (a manifest.parquet at
its top, as other tools and older runs write) is one source, named by its manifest's `source`.
Nothing here reads more than directory listings until a source is asked for by name.
"""

from __future__ import annotations

from pathlib import Path

from stdformer.data.manifest import MANIFEST_NAME, read_manifest
from stdformer.io import DataError


def _single_source_name(shards: Path) -> str:
    names = sorted(set(read_manifest(shards)["source"]))
    if len(names) != 1:
        raise DataError(shards / MANIFEST_NAME, f"clips of several sources {names} in one "
                        "preprocess output: write one output per source", field="source")
    return names[0]


def source_names(shards: str | Path) -> list[str]:
    """The names of the sources under `shards` (sorted); DataError when there is none."""
    shards = Path(shards)
    if (shards / MANIFEST_NAME).is_file():
        return [_single_source_name(shards)]
    names = sorted(p.name for p in shards.iterdir() if (p / MANIFEST_NAME).is_file()) \
        if shards.is_dir() else []
    if not names:
        raise DataError(shards, f"no preprocess output here ({MANIFEST_NAME}, or one directory "
                        "per source holding one): run the preprocess stage")
    return names


def source_dir(shards: str | Path, name: str) -> Path:
    """The preprocess output of source `name` under `shards` (see the module docstring)."""
    shards = Path(shards)
    if (shards / MANIFEST_NAME).is_file():
        found = _single_source_name(shards)
        if found != name:
            raise DataError(shards / MANIFEST_NAME, f"holds source {found!r}, not {name!r}",
                            field="source")
        return shards
    directory = shards / name
    if not (directory / MANIFEST_NAME).is_file():
        known = ", ".join(source_names(shards)) if shards.is_dir() else "none"
        raise DataError(directory / MANIFEST_NAME, f"no source {name!r} under {shards} (found: "
                        f"{known}); check params `datasets` and rerun preprocess")
    return directory
