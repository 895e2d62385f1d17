"""DVC stage entry points: `python -m stages.<name>` reads its params.yaml section and calls the
library. Outputs are written atomically by the library helpers.

Every stage pins the CPU's numeric environment (instruction sets of ATen, oneDNN, MKL) before
torch runs anything, so that a stage's outputs, and so dvc.lock, are the same bytes on any x86-64
CPU (stdformer/numerics.py; `train` also fixes its thread count from `train.threads`)."""

from stdformer.numerics import pin_environment

pin_environment()
