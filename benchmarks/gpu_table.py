"""The prepared device run for the 200-epoch comparison table, in one call under a time budget.

1. Solo baseline, measured first and alone: one LA run trained by itself (`python -m elm_lite train
   --compile`) for BASELINE_EPOCHS epochs; its first epoch (compilation) and its median steady
   epoch give the solo cost of a 200-epoch run (first + 199 x steady, printed as an extrapolation).
   Then the same run as the shortest loop (`benchmarks/minimal_loop.py`), the reference for
   `train`'s own speed (issue 12: single-run speed).
2. The table: ce, la, ldam-drw, supcon-la, elm x seeds 0, 1, 2 at 200 epochs (issue 12's 15 runs),
   trained together (`python -m elm_lite table --compile`), as four processes sharing the GPU (the
   step is launch-bound, so processes overlap): ce+la (6 models in one network), ldam-drw (3, cosine
   head), supcon-la (3, two views) and elm (3, two views; the margin to the class centre). Each
   writes its runs' results.json; a last `table` call with every method trains nothing and writes
   the whole table.json. SUITE=forms trains elm-positive (the first, inert margin form,
   docs/margin_study.md) the same way, for the full-scale comparison of the two forms.

Everything lands in $OUT: runs.tar.gz (every finished run's folder and table.json), log.txt,
timing.json and each process's log. Group checkpoints (every 10 epochs) stay on the machine.

Measured on 2026-11-27 (one H200, budget 545 s): the solo LA baseline took 25.8 s for its first
epoch and 0.497 s per steady epoch; ce+la (6 runs) finished 200 epochs in 374 s while the three
other processes shared the GPU; supcon-la and elm (1.63 s/epoch for 3 two-view runs each) reached
epoch 185 of 200 when the budget ran out, and ldam-drw failed (a CPU tensor in the stacked LDAM
loss, fixed since). Projected from those rates, not measured: the whole table needs about 560 s.
Since then (not yet measured on a GPU): the positive-form loss has its gradient written out, and
the K runs of a group are augmented in one call per view (crop_flip: 4x fewer launches at K = 6).

Here, first:    python tools/make_carry_npz.py            (.carry/cifar10_lt_rho100.npz)
On the device:  RETURN=$OUT python3 benchmarks/gpu_table.py   (.carry carried; BUDGET_S seconds, default 560)
                The runs live in runs/gpu_table (ignored by git, so kept on the machine while it stays
                warm); RETURN receives log.txt, timing.json and runs.tar.gz. If the budget stops the
                table, the same call again at once (BASELINE_EPOCHS=0) resumes its groups from their
                checkpoints (every 10 epochs) and never retrains a finished run.
                RETURN=$OUT SUITE=strong BASELINE_EPOCHS=0 python3 benchmarks/gpu_table.py   (strong views)
                RETURN=$OUT SUITE=baselines BASELINE_EPOCHS=0 python3 benchmarks/gpu_table.py   (the baselines)
                RETURN=$OUT SUITE=forms BASELINE_EPOCHS=0 python3 benchmarks/gpu_table.py   (elm-positive, 3 runs)
                RETURN=$OUT SUITE=speed python3 benchmarks/gpu_table.py   (solo LA, minimal loop, profiles; ~2 min)
Each of the first three suites is 12-15 runs: one device call each.
Back here:      untar runs.tar.gz; its table.json (every run, histories included) is what ships in elm_lite/measured/
"""
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

T0 = time.monotonic()
BUDGET = float(os.environ.get("BUDGET_S", 560))
OUT = Path(os.environ.get("OUT", "runs/gpu_table"))
NPZ = os.environ.get("NPZ", ".carry/cifar10_lt_rho100.npz")
EPOCHS = int(os.environ.get("EPOCHS", 200))
BASELINE_EPOCHS = int(os.environ.get("BASELINE_EPOCHS", 8))    # 0: no solo baseline
RETURN = os.environ.get("RETURN")                                 # the folder that comes back (the device's $OUT)
SEEDS = os.environ.get("SEEDS", "0,1,2")
# SUITE=table: the comparison table. SUITE=strong: the contrastive methods again with SimCLR-style
# views (issue 13: how contrastive long-tail methods train); LA's rows come from the table suite.
# SUITE=baselines: re-weighting, class-balanced re-sampling, decoupled training (cRT, tau-norm).
SUITES = {"table": ([("ce,la", 6), ("ldam-drw", 3), ("supcon-la", 3), ("elm", 3)], []),
          "forms": ([("elm-positive", 3)], []),
          "strong": ([("supcon-la", 3), ("elm", 3), ("elm-positive", 3)], ["--view-augment", "strong"]),
          "baselines": ([("reweight-inverse,reweight-effective", 6), ("cb-sampling", 3), ("crt,tau-norm", 6)], []),
          "speed": ([], [])}   # no table: the solo baseline, the minimal loop and a profile of train (LA, ELM)
SUITE = os.environ.get("SUITE", "table")
PROCESSES, SUITE_FLAGS = SUITES[SUITE]
COMPILE = ["--compile"] if os.environ.get("COMPILE", "1") == "1" else []
EXTRA = os.environ.get("EXTRA", "").split()   # e.g. "--model small_cnn --batch-size 16" for a CPU smoke run
# the minimal loop takes EXTRA's --model only
MODEL_FLAG = EXTRA[EXTRA.index("--model"):EXTRA.index("--model") + 2] if "--model" in EXTRA else []
OUT.mkdir(parents=True, exist_ok=True)
LOG = open(OUT / "log.txt", "a", buffering=1)
ENV = {**os.environ, "PYTHONPATH": str(Path.cwd()), "PYTHONUNBUFFERED": "1"}
BASE = [sys.executable, "-m", "elm_lite"]
DATA = ["--npz", NPZ, "--rho", os.environ.get("RHO", "100")]


def log(text: str) -> None:
    line = f"[{time.monotonic() - T0:6.0f} s] {text}"
    print(line, flush=True)
    LOG.write(line + "\n")


def left() -> float:
    return BUDGET - (time.monotonic() - T0)


def main() -> None:
    import torch
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    log(f"{device}, torch {torch.__version__}, python {platform.python_version()}")
    earlier = OUT / "timing.json"          # a resumed table keeps the first call's solo timings
    timing = {**(json.loads(earlier.read_text()) if earlier.exists() else {}),
              "device": device, "torch": torch.__version__, "epochs": EPOCHS}

    if BASELINE_EPOCHS:
        solo_baseline(timing)
    if SUITE == "speed":   # where a single run's time goes, instead of a table
        done = subprocess.run([sys.executable, "benchmarks/profile_train.py", "--npz", NPZ, "--methods", "la,elm",
                               *COMPILE, *MODEL_FLAG], env=ENV, capture_output=True, text=True,
                              timeout=max(60, left() - 20))
        log(f"profile -> exit {done.returncode}\n{done.stdout[-12000:]}{done.stderr[-1500:]}")
        if done.returncode == 0:
            timing["profile"] = json.loads(done.stdout.strip().splitlines()[-1])
    table(timing)


def solo_baseline(timing: dict) -> None:
    """One LA run alone on the GPU for BASELINE_EPOCHS epochs; its cost extrapolated to 200."""
    start = time.monotonic()
    solo = OUT / "solo_la"
    cmd = BASE + ["train", *DATA, "--method", "la", "--epochs", str(BASELINE_EPOCHS), *COMPILE, "--overwrite",
                  "--out", str(solo), *EXTRA]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=max(60, left() - 300))
    log(f"solo: {' '.join(cmd[2:])} -> exit {done.returncode}\n{done.stdout[-800:]}{done.stderr[-1500:]}")
    if done.returncode == 0 and BASELINE_EPOCHS < 2:
        log("solo LA: one epoch is all compilation, no steady rate to extrapolate (BASELINE_EPOCHS >= 2)")
    elif done.returncode == 0:
        r = json.loads((solo / "results.json").read_text())
        first, steady = r["first_epoch_seconds"], r["steady_seconds_per_epoch"]
        timing["solo_la"] = {"epochs": BASELINE_EPOCHS, "wall_s": time.monotonic() - start, "first_epoch_s": first,
                             "steady_s_per_epoch": steady, "estimated_200_epoch_run_s": first + 199 * steady}
        log(f"solo LA: first epoch {first:.1f} s, steady {steady:.3f} s/epoch -> a 200-epoch run ~ "
            f"{first + 199 * steady:.0f} s; 15 solo runs ~ {15 * (first + 199 * steady):.0f} s (extrapolated)")
    minimal = subprocess.run([sys.executable, "benchmarks/minimal_loop.py", "--npz", NPZ, "--epochs",
                              str(BASELINE_EPOCHS), *MODEL_FLAG], env=ENV, capture_output=True, text=True,
                             timeout=max(60, left() - 300))
    log(f"minimal loop -> exit {minimal.returncode}\n{minimal.stdout[-400:]}{minimal.stderr[-1500:]}")
    if minimal.returncode == 0:
        timing["minimal_la"] = json.loads(minimal.stdout.strip().splitlines()[-1])



def table(timing: dict) -> None:
    """The suite's processes sharing the GPU, each a ``table`` call for its methods."""
    start = time.monotonic()
    runs = OUT / ("runs" if SUITE == "table" else f"runs_{SUITE}")
    runs.mkdir(parents=True, exist_ok=True)

    def launch(methods, k, compiled):
        cmd = BASE + ["table", *DATA, "--methods", methods, "--seeds", SEEDS, "--epochs", str(EPOCHS),
                      *(COMPILE if compiled else []), "--group-size", str(k), "--out", str(runs), *SUITE_FLAGS,
                      *EXTRA]
        out = open(OUT / f"table_{methods.replace(',', '_')}{'' if compiled else '_eager'}.log", "w")
        log(f"started: {' '.join(cmd[2:])}")
        return subprocess.Popen(cmd, env=ENV, stdout=out, stderr=subprocess.STDOUT)

    running = {methods: (launch(methods, k, True), k, bool(COMPILE)) for methods, k in PROCESSES}
    codes = {}
    while running and left() > 25:
        time.sleep(5)
        for methods, (p, k, compiled) in list(running.items()):
            if p.poll() is None:
                continue
            del running[methods]
            log(f"{methods}: exit {p.returncode} after {time.monotonic() - start:.0f} s")
            if p.returncode != 0 and compiled:  # compilation failed: once more, eager (the log says so)
                running[methods] = (launch(methods, k, False), k, False)
            else:
                codes[methods] = p.returncode
    for methods, (p, _, _) in running.items():
        p.terminate()  # the CLI stops on SIGTERM as on an error: its run folders' locks are given back
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
        codes[methods] = "killed at the budget"
        log(f"{methods}: killed at the budget; its group checkpoints are in {runs}/groups")
    timing["table_wall_s"] = time.monotonic() - start
    if PROCESSES and all(c == 0 for c in codes.values()):  # every run finished: this call gathers the table
        every = ",".join(methods for methods, _ in PROCESSES)
        final = subprocess.run(BASE + ["table", *DATA, "--methods", every, "--seeds", SEEDS, "--epochs", str(EPOCHS),
                                       "--out", str(runs), *SUITE_FLAGS, *EXTRA], env=ENV, capture_output=True,
                               text=True, timeout=120)
        log(f"the whole table:\n{final.stdout}{final.stderr[-1500:]}")
    (OUT / "timing.json").write_text(json.dumps(timing, indent=1))
    # the device returns files only a few folders deep: pack every finished run into one archive
    subprocess.run(["tar", "czf", str(OUT / "runs.tar.gz"), "--exclude=groups", "-C", str(runs), "."], check=False)
    log(f"done; {left():.0f} s of the budget left")
    if RETURN:
        for name in ("log.txt", "timing.json", "runs.tar.gz"):
            shutil.copy2(OUT / name, RETURN)


if __name__ == "__main__":
    main()
