"""DVC stage entry points: `python -m stages.<name>` reads its params.yaml section and calls the
library. Outputs are written atomically by the library helpers.

Every stage pins its numeric environment (the kernels numpy, OpenBLAS, ATen, oneDNN and MKL pick
for the CPU, and the thread count) before numpy and torch load, so that a stage's outputs, and so
dvc.lock, are the same bytes on any x86-64 CPU (stdformer/numerics.py; `train` sets its own
thread count from `train.threads`)."""

from stdformer.numerics import pin_environment

pin_environment()
