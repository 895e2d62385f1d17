"""dvc.yaml names, for every stage, each project file its command can run.

DVC reruns a stage only when a declared dependency changes, so a module the stage imports but
does not declare makes `dvc repro` keep a stale output (and a dvc.lock that no fresh clone
reproduces). The import closure of each stage module is found statically with `modulefinder`
(it follows imports inside functions too), restricted to the project's own files.
"""

import modulefinder
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def stage_commands() -> dict[str, str]:
    """{stage name: its `python -m stages.X` module name} from dvc.yaml (foreach stages once)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        cmd = (stage.get("do") or stage)["cmd"]
        module = cmd.split("-m ", 1)[1].split()[0]
        out[name] = module
    return out


def declared_deps(name: str) -> list[str]:
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]
    return [d for d in (stage.get("do") or stage)["deps"] if isinstance(d, str)]


def project_closure(module: str) -> set[str]:
    """Project files (relative paths) that `python -m module` may import."""
    finder = modulefinder.ModuleFinder(path=[str(REPO)])  # the project only: fast, no torch
    finder.import_hook(module)   # as `python -m`: the package's __init__ first, then the module
    files = set()
    for found in finder.modules.values():
        path = Path(found.__file__ or "")
        if path.is_file() and REPO in path.resolve().parents:
            files.add(path.resolve().relative_to(REPO).as_posix())
    return files


def only_docstring(path: str) -> bool:
    """A package __init__ that imports nothing cannot change what a stage does."""
    text = (REPO / path).read_text()
    return path.endswith("__init__.py") and not any(
        line.lstrip().startswith(("import ", "from ")) for line in text.splitlines())


@pytest.mark.parametrize("stage", sorted(stage_commands()))
def test_every_module_a_stage_imports_is_a_declared_dependency(stage):
    deps = declared_deps(stage)
    closure = project_closure(stage_commands()[stage])
    assert f"{stage_commands()[stage].replace('.', '/')}.py" in closure  # the finder ran

    def covered(path: str) -> bool:
        return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)

    missing = sorted(p for p in closure if not covered(p) and not only_docstring(p))
    assert not missing, f"dvc.yaml stage {stage!r} runs code it does not depend on: {missing}"


def test_the_check_sees_a_missing_dependency():
    """The synthesize stage imports the motion generator: dropping it from the deps is caught."""
    closure = project_closure("stages.synthesize")
    assert "stdformer/data/motion.py" in closure
