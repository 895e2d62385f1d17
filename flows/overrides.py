"""Parameter overrides for one retrain: dotted keys into params.yaml, checked against the stage
config classes before anything is written (flows/leftovers.py undoes them when the run fails or
dies).

    check_overrides("params.yaml", {"train.steps": 800})   # -> the keys that would change
    apply_overrides("params.yaml", {"train.steps": 800})   # -> the keys that changed
"""

from __future__ import annotations

import difflib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stdformer.config import load_yaml_limited, read_params, section_config
from stdformer.io import DataError, cut_for_message, repr_for_message, write_text_atomic


def _stage_configs() -> dict[str, Callable[[dict, str], Any]]:
    """params.yaml section -> a check that builds the section's config as its stage does
    (imported here: the configs pull in torch and the data stack)."""
    from flows.schedule import ScheduleConfig
    from stdformer.body.files import BodyConfig
    from stdformer.data.datasets import all_dataset_configs, preprocess_section
    from stdformer.data.synthetic_config import SynthesizeConfig
    from stdformer.data.synthetic_h36m_config import SynthesizeH36MConfig
    from stdformer.evaluation import EvaluateConfig
    from stdformer.inference import DemoConfig
    from stdformer.losses import LossConfig
    from stdformer.registry import RegisterConfig
    from stdformer.train import TrainConfig

    def plain(section: str, cls: type) -> Callable[[dict, str], Any]:
        return lambda params, source: section_config(params, section, cls, source,
                                                     required=False)

    checks = {name: plain(name, cls) for name, cls in (
        ("body", BodyConfig), ("synthesize", SynthesizeConfig),
        ("synthesize_h36m", SynthesizeH36MConfig),
        ("train", TrainConfig), ("loss", LossConfig), ("evaluate", EvaluateConfig),
        ("register", RegisterConfig), ("demo", DemoConfig), ("schedule", ScheduleConfig))}
    checks["model"] = checks["variants"] = _check_models
    checks["preprocess"] = lambda params, source: preprocess_section(params, source,
                                                                      required=False)
    checks["datasets"] = all_dataset_configs
    return checks


def _check_models(params: dict, source: str) -> None:
    """The `model` section, and the model of every `variants` entry (model + its overrides),
    as the train stage builds them (imported here, as in `_stage_configs`: torch)."""
    from stdformer.model.stdformer import variant_model_config, variant_names

    variant_model_config(params, None, source)
    for name in variant_names(params, source):
        variant_model_config(params, name, source)


def check_sections(params: dict, sections, source: str | os.PathLike) -> None:
    """Validate `sections` of `params` with their stage config classes (DataError naming the
    file and the field); sections no stage config describes are left to their stage."""
    checks = _stage_configs()
    for section in sorted(set(sections)):
        if section in checks:
            checks[section](params, str(source))


def _yaml_round_trip():
    from ruamel.yaml import YAML

    yaml_rt = YAML()  # round-trip mode: comments, key order and flow-style lists survive
    yaml_rt.preserve_quotes = True
    yaml_rt.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml_rt


def overridden_params(params_path: str | os.PathLike, overrides: dict[str, Any]
                      ) -> tuple[dict[str, Any], str]:
    """(the keys `overrides` change, params.yaml's text with them); nothing is written.

    Every key must exist already (a typo is a DataError with a did-you-mean hint), and every
    section it touches must still load as its stage loads it (a wrong type or value is a
    DataError naming the field). A mapping value replaces the whole sub-tree. Comments, key
    order and flow-style lists survive, so the change shows in `git diff` and `dvc params diff`.
    """
    params_path = Path(params_path)
    read_params(params_path)  # present, within the size and alias limits, a mapping
    yaml_rt = _yaml_round_trip()
    text = params_path.read_text()
    data = yaml_rt.load(text)
    changed = {}
    for dotted, value in overrides.items():
        parent, leaf = _locate(data, dotted, params_path)
        if parent[leaf] != value:
            parent[leaf] = value
            changed[dotted] = value
    if not changed:
        return changed, text
    buf = io.StringIO()
    yaml_rt.dump(data, buf)
    check_sections(load_yaml_limited(buf.getvalue(), params_path),
                   (k.split(".")[0] for k in changed), params_path)
    return changed, buf.getvalue()


def check_overrides(params_path: str | os.PathLike, overrides: dict[str, Any]) -> dict[str, Any]:
    """The keys `overrides` would change (DataError as `overridden_params`); writes nothing:
    the CLI's check before the flow, and so DVC, starts."""
    return overridden_params(params_path, overrides)[0]


def apply_overrides(params_path: str | os.PathLike, overrides: dict[str, Any],
                    before_write: Callable[[str, dict[str, Any]], None] | None = None
                    ) -> dict[str, Any]:
    """Set dotted keys (`section.key[.subkey]`) in params.yaml as `overridden_params` describes;
    returns the ones that changed. The file is rewritten atomically and only when a value
    actually changes; `before_write(new text, changed)` runs just before (the run's journal)."""
    changed, text = overridden_params(params_path, overrides)
    if changed:
        if before_write is not None:
            before_write(text, changed)
        write_text_atomic(params_path, text)
    return changed


def _locate(data: dict, dotted: str, source: Path) -> tuple[dict, str]:
    """(mapping holding the last key, last key) of an existing dotted key."""
    if not isinstance(dotted, str) or not dotted:
        raise DataError(source, "override keys are dotted names, got "
                                f"{repr_for_message(dotted)}")
    node, keys = data, dotted.split(".")
    for depth, key in enumerate(keys):
        where = ".".join(keys[: depth + 1])
        if not isinstance(node, dict):
            raise DataError(source, "is not a mapping, cannot set a key inside it",
                            field=".".join(keys[:depth]))
        if key not in node:
            close = difflib.get_close_matches(key, [str(k) for k in node], n=1)
            hint = f" (did you mean '{'.'.join(keys[:depth] + [close[0]])}'?)" if close else ""
            raise DataError(source, f"unknown key{hint}; overrides may only change existing "
                                    "keys", field=where)
        if depth < len(keys) - 1:
            node = node[key]
    return node, keys[-1]


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` arguments -> {key: YAML value} (`steps=800` is an int)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise DataError("--set", f"expects key=value, got {repr_for_message(item)}")
        out[key] = load_yaml_limited(value, f"--set {cut_for_message(key)}")
    return out
