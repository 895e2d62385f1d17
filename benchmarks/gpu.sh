#!/usr/bin/env bash
# The GPU check (benchmarks/gpu.py, at most 8 minutes on one H100/H200): JSON to $OUT/gpu.json,
# else benchmarks/results/. Run from anywhere with the project's venv active.
cd "$(dirname "$0")/.." && PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec python benchmarks/gpu.py "$@"
