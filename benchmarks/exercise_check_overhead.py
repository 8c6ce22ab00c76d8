"""What running a learner's answer in a forked copy costs (elm_lite.exercises._call): one exercise
check with the reference answer, the answer run in a forked copy (the default) against the same
check run in this process (the timer-signal path, what the check did before). Prints a table with
the machine named; the median of ``--repeats`` checks each.

    OMP_NUM_THREADS=1 python benchmarks/exercise_check_overhead.py --repeats 20
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    import torch  # noqa: F401  (a kernel that runs the course has torch loaded: the fork copies it)

    from elm_lite import exercises, solutions
    checks = {"01.1 balanced error (numpy)": (exercises.check_balanced_error, solutions.balanced_error),
              "02.1 LA loss (torch)": (exercises.check_la_loss, solutions.my_la_loss)}
    in_process = lambda fn, case, deadline_s: exercises._call_here(fn, case, deadline_s)  # noqa: E731
    forked = exercises._call
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; median of {args.repeats} checks")
    print(f"{'check':32s} {'calls':>5s} {'in process':>11s} {'forked':>9s} {'per call':>10s}")
    for name, (check, answer) in checks.items():
        calls, quiet = [], contextlib.redirect_stdout(io.StringIO())   # each check prints its verdict
        exercises._call = lambda fn, case, deadline_s: (calls.append(1), forked(fn, case, deadline_s))[1]
        with quiet:
            check(answer)
        n = len(calls)
        times = {}
        for label, call in (("in process", in_process), ("forked", forked)):
            exercises._call = call
            samples = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    assert check(answer).passed
                samples.append(time.perf_counter() - start)
            times[label] = statistics.median(samples)
        exercises._call = forked
        print(f"{name:32s} {n:5d} {times['in process'] * 1e3:9.1f} ms {times['forked'] * 1e3:6.1f} ms "
              f"{(times['forked'] - times['in process']) / n * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
