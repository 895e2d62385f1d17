"""Typed, validated `params.yaml` sections.

Each library module owns a dataclass describing its section (e.g. `SynthesizeConfig`); this
module turns a mapping into that dataclass, refusing unknown keys (with a did-you-mean hint) and
values of the wrong type, and naming the file and the dotted field in every error.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from stdformer.io import DataError, repr_for_message

T = TypeVar("T")

PARAMS_FILE = "params.yaml"
# A params file is a few KB. The limits stop a file or `--set` value built to exhaust memory
# (a YAML alias bomb: a few hundred bytes whose aliases expand to billions of nodes, which DVC
# flattens) before anything expands it.
PARAMS_MAX_BYTES = 1 << 20
PARAMS_MAX_NODES = 100_000     # scalars, lists and mappings once every alias is expanded


def read_params(path: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as a mapping, read within the limits above (DataError naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    size = path.stat().st_size
    if size > PARAMS_MAX_BYTES:
        raise DataError(path, f"{size:,} bytes, more than a params file may hold "
                              f"({PARAMS_MAX_BYTES:,}); not read")
    data = load_yaml_limited(path.read_text(), path)
    if not isinstance(data, dict):
        raise DataError(path, "expected a mapping of sections at the top level")
    return data


def load_yaml_limited(text: str, source: str | os.PathLike,
                      max_nodes: int = PARAMS_MAX_NODES) -> Any:
    """yaml.safe_load of `text`, refused (DataError naming `source`) when its aliases would
    expand to more than `max_nodes` nodes or refer to themselves: the node graph is counted
    before any value is built."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _count_expanded(node, source, max_nodes, {}, set())
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise DataError(source, f"not valid YAML: {e}") from e
    except RecursionError as e:
        raise DataError(source, "YAML nested too deeply") from e
    finally:
        loader.dispose()


def _count_expanded(node: yaml.Node, source, max_nodes: int, counted: dict[int, int],
                    open_nodes: set[int]) -> int:
    """Nodes under `node` with every alias expanded (an alias is the same node object again:
    each is counted once per use, but computed once)."""
    key = id(node)
    if key in counted:
        return counted[key]
    if key in open_nodes:
        raise DataError(source, "a YAML alias refers to itself (recursive structure); "
                                "params must be plain values")
    open_nodes.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    for child in children:
        total += _count_expanded(child, source, max_nodes, counted, open_nodes)
        if total > max_nodes:
            raise DataError(source, f"YAML aliases expand to more than {max_nodes:,} values "
                                    "(an alias bomb?); not read")
    open_nodes.discard(key)
    counted[key] = total
    return total


def load_section(section: str, cls: type[T], path: str | os.PathLike = PARAMS_FILE) -> T:
    """Read one section of params.yaml into `cls` (a dataclass), validating every field."""
    return section_config(read_params(path), section, cls, path)


def section_config(params: dict, section: str, cls: type[T], source: str | os.PathLike,
                   required: bool = True) -> T:
    """One section of already-read params (from `source`) as `cls`; an absent optional
    section gives the defaults."""
    if required and section not in params:
        hint = _did_you_mean(section, params)
        raise DataError(source, f"missing section{hint}", field=section)
    return from_dict(cls, params.get(section) or {}, source=str(source), prefix=section)


def from_dict(cls: type[T], data: Any, source: str = "<dict>", prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping; nested dataclasses and Optional/list/dict types are
    checked recursively. Missing fields take their defaults."""
    if not isinstance(data, dict):
        raise DataError(source, f"expected a mapping, got {type(data).__name__}", field=prefix)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        raise DataError(source, f"unknown key{_did_you_mean(key, fields)}",
                        field=_join(prefix, key))
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _coerce(hints[name], data[name], source, _join(prefix, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise DataError(source, "required key is missing", field=_join(prefix, name))
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as e:
            if isinstance(e, DataError):
                raise
            raise DataError(source, str(e), field=prefix or None) from e
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def _coerce(tp: Any, value: Any, source: str, field: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, source, field)
            except DataError as e:
                errors.append(e.problem)
        raise DataError(source, " or ".join(errors), field=field)
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise _wrong_value(source, field, f"must be one of {choices}", value)
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, field)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _wrong_value(source, field, "expected a list", value)
        item = args[0] if args else Any
        items = [_coerce(item, v, source, f"{field}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong_value(source, field, "expected a mapping", value)
        kt, vt = args if args else (Any, Any)
        return {_coerce(kt, k, source, field): _coerce(vt, v, source, f"{field}.{k}")
                for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong_value(source, field, "expected a number", value)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_value(source, field, "expected an integer", value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _wrong_value(source, field, "expected true or false", value)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise _wrong_value(source, field, "expected a string", value)
        return value
    return value


def _wrong_value(source: str, field: str, expected: str, value: Any) -> DataError:
    """'<expected>, got <the value, cut>' for `field`."""
    return DataError(source, f"{expected}, got {repr_for_message(value)}", field=field)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _did_you_mean(key: str, choices) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
