#!/usr/bin/env bash
# Every GPU measurement the project waits for, in one prepared run (a lent device machine:
# about 15 minutes in all, results under $OUT).  Run from the repository root:
#   bash benchmarks/gpu_session.sh            (OUT defaults to ./gpu-out)
# It installs the project, then:
#   1. generator training, samples/s: the method's recipe (DataLoader, fp32, batch 300) against
#      ours (device-resident uint8, batch 1000, bf16), goal >= 150,000 samples/s on an H100;
#   2. dlib's descriptor in PyTorch on CUDA (faces/s, exactness is checked by the self-check);
#   3. the CUDA-only tests (the CPU and CUDA trainings agree).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
python3 -m venv .venv-gpu && . .venv-gpu/bin/activate
python -m pip install -q -e ".[test]" > "$OUT/install.log" 2>&1 || { echo "install failed"; tail -20 "$OUT/install.log"; exit 1; }
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
export PYTHONPATH=.
timeout 300 python benchmarks/bench_training.py --device cuda --n 20000 --steps 50 --warmup 5 --repeats 3 \
    --large-batch 1000 --amp 2>&1 | tee "$OUT/bench_training.txt"
timeout 120 python benchmarks/bench_dlib_descriptor.py --n 2000 --batch-sizes 256,1024 2>&1 | tee "$OUT/bench_dlib_descriptor.txt"
timeout 120 python -m pytest -q -p no:cacheprovider tests/test_inversion_training.py -k cuda 2>&1 | tee "$OUT/tests_cuda.txt"
