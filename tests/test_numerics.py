"""Every stage pins its numeric libraries' instruction sets and thread counts (stages/__init__.py),
so its bytes do not depend on the CPU: numpy's SIMD kernels and OpenBLAS's per-CPU kernels each
change the body model's float64 arrays in the last bit, torch's thread count the synthetic
set's joints. (Training under other thread counts and ISAs: tests/test_train_stage.py.)"""

import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

# Two "machines", as the variables numpy and OpenBLAS read when numpy is imported: this CPU's own
# kernels, and an older CPU's (Sandy Bridge BLAS without FMA, numpy without its AVX2/AVX-512
# paths). Both are safe to run on any x86-64 CPU with AVX2.
MACHINES = {
    "this_cpu": {},
    "older_cpu": {"OPENBLAS_CORETYPE": "Sandybridge",
                  "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR AVX2 FMA3 "
                                              "AVX512F AVX512_SKX"},
}

TINY_SYNTHESIS = {"seed": 0, "train_sequences": 1, "validation_sequences": 1,
                  "test_sequences": 8, "min_frames": 16, "max_frames": 24}


def run_stage(args: list[str], machine: dict[str, str], out) -> dict[str, bytes]:
    """`python -m stages.<...>` with the machine's variables; every file it wrote under out."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE",
                                                            "NPY_DISABLE_CPU_FEATURES")}
    env.update(machine, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore::ImportWarning")
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted(out.rglob("*")) if p.is_file()}


def differing(a: dict[str, bytes], b: dict[str, bytes]) -> list[str]:
    assert a.keys() == b.keys()
    return [name for name, data in a.items() if b[name] != data]


def test_the_body_stage_writes_the_same_bytes_whatever_the_cpu_kernels(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"body": {"source": "procedural", "resolution": 1200}}))
    written = {name: run_stage(["stages.body", str(tmp_path / name), "--params", str(params)],
                               machine, tmp_path / name)
               for name, machine in MACHINES.items()}
    assert "model.npz" in written["this_cpu"]
    changed = differing(written["this_cpu"], written["older_cpu"])
    assert not changed, f"the body stage's bytes depend on the CPU kernels: {changed}"


@pytest.mark.slow  # synthesize twice in subprocesses (~25 s)
def test_synthesize_writes_the_same_bytes_whatever_the_thread_count(tmp_path, synth_body_dir):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"synthesize": TINY_SYNTHESIS}))
    written = {threads: run_stage(["stages.synthesize", str(synth_body_dir),
                                   str(tmp_path / threads), "--params", str(params)],
                                  {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
                                  tmp_path / threads)
               for threads in ("1", "3")}
    assert any(name.endswith(".pkl") for name in written["1"])
    changed = differing(written["1"], written["3"])
    assert not changed, f"synthesize's bytes depend on the thread count: {changed}"
