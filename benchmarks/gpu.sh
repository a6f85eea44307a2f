#!/usr/bin/env bash
# Every benchmark in benchmarks/ on one GPU, in one unattended call; prints one JSON document.
#
#     benchmarks/gpu.sh [OUT.json]          # default OUT: benchmarks/gpu_results.json
#
# Each benchmark runs with `--device cuda` at sizes meant to finish in well under a minute on an
# H200-class GPU (the compile benchmark, which compiles 4 graphs per case, somewhat more), under its own
# `timeout`, and the whole run stays within SGP_BENCH_BUDGET seconds (default 450): a benchmark gets at
# most the time left, and one that would start with under 15 s left is recorded as skipped. The most
# wanted numbers run first. A failing benchmark is recorded (exit code, the end of its stderr) and the
# run goes on. The document (the GPU from nvidia-smi, torch and CUDA versions, and per benchmark its
# command, exit code, seconds and printed JSON) is rewritten to OUT after every benchmark, so an
# interrupted run keeps what finished, and printed on stdout at the end; progress goes to stderr.
# Nothing is installed or downloaded.
#
# SGP_BENCH_DEVICE=cpu runs the same flow on the CPU at tiny sizes (a check of the script, not a
# measurement); PYTHON names the interpreter (default: python).
set -u

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(realpath -m "${1:-$root/benchmarks/gpu_results.json}")
device=${SGP_BENCH_DEVICE:-cuda}
budget=${SGP_BENCH_BUDGET:-450}
python=${PYTHON:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root" || exit 1
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
start=$SECONDS

log() { echo "[gpu.sh $((SECONDS - start))s] $*" >&2; }

# The environment, once: the GPU, torch and CUDA versions, the commit.
{
  echo "device=$device"
  echo "budget_s=$budget"
  echo "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git_commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
} >"$work/env.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv >"$work/nvidia_smi.txt" 2>&1 || true
"$python" -c 'import json, torch; print(json.dumps({"torch": torch.__version__, "torch_cuda": torch.version.cuda,
  "cuda_available": torch.cuda.is_available(),
  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))' \
  >"$work/torch.json" 2>"$work/torch.err" || true

# Collect everything finished so far into OUT (and, with `final`, print it on stdout).
collect() {
  "$python" - "$work" "$out" "$((SECONDS - start))" "${1:-}" <<'EOF'
import json, os, sys

work, out, wall, final = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "final"


def read(name, default=""):
    path = os.path.join(work, name)
    return open(path, errors="replace").read() if os.path.exists(path) else default


def parse_json(text):
    """The benchmark's JSON: all of stdout, else from its first line that opens an object."""
    try:
        return json.loads(text)
    except ValueError:
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("{"):
                try:
                    return json.loads("\n".join(lines[i:]))
                except ValueError:
                    break
    return None


env = dict(line.split("=", 1) for line in read("env.txt").splitlines() if "=" in line)
environment = {
    "nvidia_smi": read("nvidia_smi.txt").strip().splitlines(),
    **(parse_json(read("torch.json")) or {"torch_error": read("torch.err")[-2000:]}),
    "git_commit": env.get("git_commit"),
}
results = {}
for name in read("order.txt").split():
    entry = {"command": read(f"{name}.cmd").strip()}
    if os.path.exists(os.path.join(work, f"{name}.skipped")):
        entry.update(skipped=read(f"{name}.skipped").strip())
        results[name] = entry
        continue
    if not os.path.exists(os.path.join(work, f"{name}.rc")):
        entry.update(running=True)
        results[name] = entry
        continue
    rc = int(read(f"{name}.rc"))
    output = parse_json(read(f"{name}.out"))
    entry.update(
        exit_code=rc,
        timed_out=rc in (124, 137),
        seconds=int(read(f"{name}.seconds")),
        timeout_s=int(read(f"{name}.timeout")),
        output=output,
    )
    if rc != 0 or output is None:
        entry["error"] = read(f"{name}.err")[-3000:]
        if output is None:
            entry["stdout_tail"] = read(f"{name}.out")[-1000:]
    results[name] = entry
document = {
    "benchmark": "gpu",
    "device": env.get("device"),
    "started": env.get("started"),
    "budget_s": int(env.get("budget_s", 0)),
    "wall_s": wall,
    "environment": environment,
    "results": results,
}
text = json.dumps(document, indent=2)
try:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        f.write(text + "\n")
    os.replace(out + ".tmp", out)
except OSError as err:
    print(f"[gpu.sh] could not write {out}: {err}", file=sys.stderr)
if final:
    print(text)
EOF
}

# bench NAME TIMEOUT SCRIPT [ARGS...]: run benchmarks/SCRIPT with --device, record its output.
bench() {
  local name=$1 limit=$2 script=$3
  shift 3
  local cmd=("$python" "benchmarks/$script" --device "$device" "$@")
  echo "$name" >>"$work/order.txt"
  echo "${cmd[*]}" >"$work/$name.cmd"
  local left=$((budget - (SECONDS - start)))
  if ((left < 15)); then
    echo "not started: ${left} s of the ${budget} s budget left" >"$work/$name.skipped"
    log "$name: skipped (budget)"
    collect
    return
  fi
  ((limit > left)) && limit=$left
  echo "$limit" >"$work/$name.timeout"
  log "$name: ${cmd[*]} (timeout ${limit} s)"
  local began=$SECONDS
  timeout -k 10 "$limit" "${cmd[@]}" >"$work/$name.out" 2>"$work/$name.err" </dev/null
  local rc=$?
  echo "$((SECONDS - began))" >"$work/$name.seconds"
  echo "$rc" >"$work/$name.rc"
  log "$name: exit $rc after $((SECONDS - began)) s"
  collect
}

if [ "$device" = cpu ]; then # tiny sizes: the flow, not a measurement
  export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-1}
  bench compile_pit 120 compile.py --cases pit --modes default --backend aot_eager --batches 1,2 \
    --repeats 1 --mpc-iterations 2
  bench compile_hopper 120 compile.py --cases hopper --hopper-size small --modes default \
    --backend aot_eager --batches 1,2 --repeats 1 --mpc-iterations 2
  bench d4rl_mpc 120 d4rl_mpc.py --size small --steps 1 --methods vanilla,sgp
  bench controller 60 controller.py --repeats 2
  bench planning 60 planning.py --repeats 1
  bench distance 60 distance.py --rows 2000 --large 5000 --repeats 1
  bench train_loop 120 train_loop.py --configs pit --variants lightning --repeats 1 --warmup 5 \
    --steps 20 --chunk 10
  bench tuning 60 tuning.py --experiments pit --iterations 5 --repeats 1
  bench pixel_planning 120 pixel_planning.py --experiment pixel_integrator_small --tasks 1 \
    --population 4 --iterations 1
else
  bench compile_pit 150 compile.py --cases pit --modes default,reduce-overhead --repeats 5
  bench compile_hopper 150 compile.py --cases hopper --modes default,reduce-overhead --repeats 5
  bench d4rl_mpc 60 d4rl_mpc.py --size paper --steps 3
  bench controller 45 controller.py --repeats 10
  bench planning 45 planning.py --repeats 3
  bench distance 60 distance.py --repeats 3
  bench train_loop 75 train_loop.py --repeats 1
  bench tuning 60 tuning.py --iterations 100 --repeats 1
  bench pixel_planning 90 pixel_planning.py --iterations 3
fi
log "done"
collect final
