#!/usr/bin/env bash
# Install distclust on a node; on a CUDA 12 GPU node with ONE faiss that has GPU support (CPU nodes keep faiss-cpu).
# faiss-cpu (a dependency) and faiss-gpu-cu12 both install the 'faiss' module; keeping both leaves
# whichever pip wrote last. So install distclust, then replace faiss-cpu by faiss-gpu-cu12, then check.
set -euo pipefail
SRC="${1:-.}"
python -m pip install -q -e "$SRC[gpu]"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no NVIDIA GPU on this node: keeping faiss-cpu"; exit 0
fi
python -m pip uninstall -y -q faiss-cpu
python -m pip install -q "faiss-gpu-cu12>=1.8"
python - <<'PY'
import faiss, torch
n = faiss.get_num_gpus()
print(f"faiss {faiss.__version__}: {n} GPU(s); torch CUDA: {torch.cuda.is_available()}")
raise SystemExit(0 if n > 0 else "faiss sees no GPU: check the CUDA driver and that faiss-cpu is gone")
PY
