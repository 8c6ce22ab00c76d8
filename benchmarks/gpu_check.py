"""The prepared device check for full-scale CIFAR-10-LT, in one call under a time budget.

1. the quick speed ladder (`python -m elm_lite bench --no-compile`: DataLoader fp32, GPU-resident
   fp32, + bf16/channels_last, ELM on that); the compiled rung is the first full run below;
2. 200-epoch `--compile` runs of the standard recipe, one at a time (every timing is a solo run), in the order
   LA seed 0, ELM seed 0, CE seed 0, then ELM / LA / CE seed 1 -- each started only when the time
   it is expected to take (from the ladder, then from the finished runs) is left in the budget.
   If LA and ELM cannot both finish at 200 epochs, a matched LA / ELM pair runs at fewer epochs
   (the recipe's schedule scales with it) and the log says so.
   A run that fails with --compile is retried once without it.

After every step the finished results (results.json, embeddings.npz, ladder.json) are packed into
$OUT/runs.tar.gz, so whatever finished comes back even if the call is cut short; $OUT/log.txt holds
every command's output.

Here, first:    python tools/make_carry_npz.py            (.carry/cifar10_lt_rho100.npz, ~60 MiB)
On the device:  python3 benchmarks/gpu_check.py          (.carry carried; BUDGET_S seconds, default 540)
Back here:      python tools/collect_gpu_results.py runs.tar.gz   (writes elm_lite/measured/cifar_lt_gpu.json)
"""
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

T0 = time.monotonic()
BUDGET = float(os.environ.get("BUDGET_S", 540))
OUT = Path(os.environ.get("OUT", "runs/gpu"))
WORK = Path(os.environ.get("WORK", "/tmp/elm_gpu_check"))
NPZ = os.environ.get("NPZ", ".carry/cifar10_lt_rho100.npz")
EPOCHS = int(os.environ.get("EPOCHS", 200))
QUEUE = [("la", 0), ("elm", 0), ("ce", 0), ("elm", 1), ("la", 1), ("ce", 1)]
OUT.mkdir(parents=True, exist_ok=True)
WORK.mkdir(parents=True, exist_ok=True)
LOG = open(OUT / "log.txt", "a", buffering=1)
ENV = {**os.environ, "PYTHONPATH": str(Path.cwd()), "PYTHONUNBUFFERED": "1",
       "TORCHINDUCTOR_CACHE_DIR": str(WORK / "inductor_cache")}  # cold at the ladder, warm for the runs


def left() -> float:
    return BUDGET - (time.monotonic() - T0)


def say(msg: str) -> None:
    line = f"[{time.monotonic() - T0:6.1f}s] {msg}"
    print(line, flush=True)
    LOG.write(line + "\n")


def run(cmd: list, timeout: float) -> tuple[int, float]:
    """Run ``cmd`` with its output in the log; returns (exit status, seconds); 124 on timeout."""
    say("$ " + " ".join(map(str, cmd)) + f"   (timeout {timeout:.0f} s)")
    start = time.monotonic()
    try:
        rc = subprocess.run(cmd, stdout=LOG, stderr=subprocess.STDOUT, env=ENV, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = 124
    except OSError as e:  # e.g. the program is missing
        LOG.write(f"{e}\n")
        rc = 127
    seconds = time.monotonic() - start
    say(f"  exit {rc} after {seconds:.1f} s")
    return rc, seconds


def pack() -> None:
    """Finished results -> $OUT/runs.tar.gz (written beside, then renamed)."""
    tmp = OUT / "runs.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(WORK.glob("*/*")):
            if path.name in ("results.json", "embeddings.npz", "ladder.json"):
                tar.add(path, arcname=str(path.relative_to(WORK)))
    os.replace(tmp, OUT / "runs.tar.gz")


def ladder_rows() -> dict:
    path = WORK / "ladder" / "ladder.json"
    return {r["rung"]: r for r in json.loads(path.read_text())["rows"]} if path.exists() else {}


def main() -> None:
    say(f"budget {BUDGET:.0f} s, {EPOCHS} epochs, data {NPZ}")
    run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"], 30)
    run([sys.executable, "-c", "import torch, numpy, tqdm; print('torch', torch.__version__, 'cuda',"
         " torch.version.cuda, torch.cuda.get_device_name(), 'numpy', numpy.__version__)"], 60)
    # the quick ladder (no compile rung): the full --compile runs below are the compiled rungs
    run([sys.executable, "-m", "elm_lite", "bench", "--npz", NPZ, "--epochs", "2", "--no-compile",
         "--out", str(WORK / "ladder")], min(150, left() - 300))
    pack()
    rows = ladder_rows()
    say("ladder: " + json.dumps(rows))
    def run_seconds(rung: str, default: float) -> float:  # a run of EPOCHS epochs on that rung
        row = rows.get(rung, {})
        return row["first_epoch_s"] + row["steady_s_per_epoch"] * (EPOCHS - 1) if "run_s" in row else default
    eager = run_seconds("+ bf16 autocast + channels_last", 250.0 * EPOCHS / 200)
    elm_ratio = min(4.0, max(1.2, run_seconds("ELM loss (2 views, projection), as above", 2.2 * eager) / eager))
    measured: dict[str, float] = {}  # method -> seconds of a finished run, per EPOCHS epochs

    def estimate(method: str) -> float:
        if method in measured:
            return measured[method]
        la = measured.get("la", 0.6 * eager + 60)  # a guess until LA has run: compiled ~0.6x eager, + compile
        return elm_ratio * la if method == "elm" else la

    epochs, use_compile, queue = EPOCHS, True, list(QUEUE)
    if 1.1 * (estimate("la") + estimate("elm")) + 30 > left():
        affordable = int(EPOCHS * (left() - 30) / (1.1 * (estimate("la") + estimate("elm"))))
        epochs = min(EPOCHS, max(10, affordable // 10 * 10))
        say(f"LA + ELM at {EPOCHS} epochs would not fit in the {left():.0f} s left: every run gets {epochs} epochs")
    while queue:
        method, seed = queue.pop(0)
        need = 1.1 * estimate(method) * epochs / EPOCHS + 15
        if method == "elm" and seed == 0 and need > left() and epochs == EPOCHS:
            shorter = int(EPOCHS * (left() - 30) / (1.1 * (estimate("la") + estimate("elm")))) // 10 * 10
            if shorter >= 20:
                say(f"ELM at {EPOCHS} epochs needs about {need:.0f} s, {left():.0f} s left: "
                    f"a matched LA / ELM pair at {shorter} epochs instead")
                epochs, queue = shorter, [("la", 0), ("elm", 0), ("ce", 0)]
                continue
        if need > left():
            say(f"skip {method} seed {seed} at {epochs} epochs: needs about {need:.0f} s, {left():.0f} s left")
            continue
        base = [sys.executable, "-m", "elm_lite", "train", "--npz", NPZ, "--method", method, "--seed", str(seed),
                "--epochs", str(epochs), "--out", str(WORK / f"{method}_s{seed}_e{epochs}")]
        rc, seconds = run(base + (["--compile"] if use_compile else []), left() - 5)
        if rc not in (0, 124) and use_compile and seconds < 150 and left() > need:
            say("failed under --compile: retrying without it (and without it from now on)")
            use_compile = False
            rc, seconds = run(base, left() - 5)
        if rc == 0:
            measured[method] = seconds * EPOCHS / epochs
        pack()
    for path in sorted(WORK.glob("*/results.json")):
        r = json.loads(path.read_text())
        say(f"{path.parent.name}: balanced {r['balanced_accuracy']:.4f}, shots {r['shot_accuracy']}, "
            f"spread {r['spread']}, total {r['total_seconds']:.1f} s, first epoch {r['first_epoch_seconds']:.1f} s, "
            f"steady {r['steady_seconds_per_epoch']:.3f} s/epoch, compile {r['compile']}")
    say("done")


if __name__ == "__main__":
    main()
