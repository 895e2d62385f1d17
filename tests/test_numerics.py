"""Every stage pins its numeric libraries' instruction sets (stages/__init__.py), so its bytes do
not depend on the CPU. The body model is the first output and the most sensitive one: numpy's
SIMD kernels and OpenBLAS's per-CPU kernels each change its float64 arrays in the last bit.
(Training under other thread counts and ISAs: tests/test_train.py.)"""

import os
import subprocess
import sys

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


def test_the_body_stage_writes_the_same_bytes_whatever_the_cpu_kernels(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"body": {"source": "procedural", "resolution": 1200}}))
    written = {}
    for name, machine in MACHINES.items():
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")}
        env.update(machine, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore::ImportWarning")
        out = tmp_path / name
        done = subprocess.run([sys.executable, "-m", "stages.body", str(out), "--params",
                               str(params)], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        written[name] = {p.relative_to(out).as_posix(): p.read_bytes()
                         for p in sorted(out.rglob("*")) if p.is_file()}
    assert "model.npz" in written["this_cpu"]
    differing = [f for f, data in written["this_cpu"].items() if written["older_cpu"][f] != data]
    assert not differing, f"the body stage's bytes depend on the CPU kernels: {differing}"
