#!/usr/bin/env bash
# The runbook for whoever has a GPU, in one call: build the CUDA extension, run `cpixelcnn doctor`
# (every fast path against its eager reference on this GPU; the verdicts let `auto` use them), the
# whole suite with real Triton kernels and the GPU-only tests, and every benchmark. Results and logs
# go to $OUT (the device tool brings them back) or ./gpu-out; everything docs/gpu.md's tables are
# made from is gathered into ONE file, $OUT/gpu-report.json — send that one back.
#
# The machine has its own torch/Triton/nvcc and no registry: carry missing wheels in .whl/
# (safetensors, pytest, pytest-benchmark, matplotlib ...).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
{ nvidia-smi; python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } 2>&1 | tee "$OUT/env.txt"
CPIXELCNN_CUDA=1 python3 -m pip install -q --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 || tail -20 "$OUT/build.log"
# what to run comes from the registries: the ops (cpixelcnn.ops.OPS) and the CUDA engines (cpixelcnn.sampling.engines)
OPS_NAMES="$(python3 -c "from cpixelcnn.ops import OPS; print(' '.join(OPS))")"
python3 -c "import cpixelcnn as c; from cpixelcnn.sampling.engines import engine_available, engines_on; print('extension', c.extension_available(), 'cuda engines', {e.name: engine_available(e.name) for e in engines_on('cuda')})" 2>&1 | tee -a "$OUT/env.txt"
python -m cpixelcnn doctor --json > "$OUT/doctor.json" 2> "$OUT/doctor.log"; python -m cpixelcnn doctor 2>&1 | tail -12
python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$OUT/tests.log" | tail -15
python -m benchmarks.kernel_resources --out "$OUT/kernel-resources.json" > "$OUT/kernel_resources.log" 2>&1; tail -2 "$OUT/kernel_resources.log"
for bench in $OPS_NAMES train_step; do
  python3 benchmarks/bench_$bench.py --out "$OUT/$bench.json" 2>&1 | tee "$OUT/bench_$bench.log" | tail -12
done
python -m benchmarks.bench_sampling --device cuda --models 1/40/5 5/160/10 --out "$OUT/sampling.json" 2>&1 | tee "$OUT/bench_sampling.log" | tail -10
python3 - "$OUT" $OPS_NAMES <<'PY'
import json, pathlib, sys
out, ops = pathlib.Path(sys.argv[1]), sys.argv[2:]
report = {"env": (out / "env.txt").read_text() if (out / "env.txt").exists() else None,
          "tests": (out / "tests.log").read_text().splitlines()[-3:] if (out / "tests.log").exists() else None}
for name in ("doctor", "kernel-resources", *ops, "train_step", "sampling"):
    path = out / f"{name}.json"
    try:
        report[name] = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        report[name] = {"missing": str(err)}
(out / "gpu-report.json").write_text(json.dumps(report, indent=1))
print(f"one file to send back: {out / 'gpu-report.json'}")
PY
