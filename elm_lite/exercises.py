"""Self-checks for the notebooks' exercises.

Each ``check_*`` runs the learner's function on random inputs, compares it with the course's
reference implementation and prints (and returns) a helpful verdict: when the answer matches a
typical mistake, the message names that mistake. The learner's function cannot fool or freeze a
check: each call runs in a forked copy of the process with a deadline that no ``except:`` can swallow
(the copy names the line it is stuck in and is ended; a thread it leaves running is reported; the
learner's own timers are untouched), gets copies of its inputs (changing them in place is reported),
must return numbers (``None`` and text are named), and an exception or ``sys.exit`` inside it
becomes a message showing its line -- never a traceback from inside the checker. A fork costs about
30-90 ms per call on the 2-core VM (``benchmarks/exercise_check_overhead.py``). Solutions live
apart, in :mod:`elm_lite.solutions`.
"""
from __future__ import annotations

import copy
import inspect
import os
import pickle
import select
import signal
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from . import losses, metrics
from .data import batch_class_stats
from .recipes import ELM_RECOMMENDED


@dataclass
class CheckResult:
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def _ipython_display_(self) -> None:
        """A check cell ends with the check's call: its message is printed once, not echoed again."""

    def __repr__(self) -> str:
        return ("PASSED: " if self.passed else "NOT YET: ") + self.message


DEADLINE_S = 10.0  # seconds one call of a learner's function may take (the course's cases take milliseconds)


class _Deadline(BaseException):
    """Raised into a learner's function when its deadline passes, where there is no fork (a
    BaseException, so that an ``except Exception`` inside the learner's loop cannot swallow it)."""


@contextmanager
def _deadline(seconds: float):
    """Interrupt the code run inside after ``seconds`` with :class:`_Deadline` (a timer signal, in the main
    thread; off it, no deadline) -- the fallback of :func:`_call` where there is no ``os.fork`` (Windows).
    An ``except:`` in the learner's loop can swallow it, and it replaces a timer the learner had set."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _Deadline
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _where_frames(frames: list) -> str:
    """``" (line N of NAME: CODE)"``: the deepest of ``frames`` (``traceback.FrameSummary``) in the learner's
    own code (frames of installed libraries, of the standard library and of this package are skipped)."""
    library = (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"], str(Path(__file__).parent))
    own = [f for f in frames if not f.filename.startswith(library)] or frames
    if not own:
        return ""
    f = own[-1]
    return f" (line {f.lineno} of {f.name}: {f.line.strip()})" if f.line else f" (line {f.lineno} of {f.name})"


def _where(error: BaseException) -> str:
    """Where ``error`` was raised in the learner's code (:func:`_where_frames`)."""
    return _where_frames(traceback.extract_tb(error.__traceback__)[1:])  # the first frame is the checker's call


def _too_slow(deadline_s: float, where: str) -> str:
    return (f"your function did not return within {deadline_s:g} s{where}: an endless loop? Check that the loop's "
            "condition changes (its counter is increased).")


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


def _argument_names(fn: Callable, n: int) -> list[str]:
    """The learner's own names for the first ``n`` parameters of ``fn`` (``argument k`` where unknown)."""
    try:
        names = [p.name for p in inspect.signature(fn).parameters.values()][:n]
    except (TypeError, ValueError):
        names = []
    return names + [f"argument {k + 1}" for k in range(len(names), n)]


def _call(fn: Callable, case: tuple, deadline_s: float):
    """``(value, None)`` from ``fn`` called on a copy of ``case``, or ``(None, message)`` when it did
    not return within ``deadline_s``, raised, exited, changed its inputs in place or left a thread running.

    The call runs in a forked copy of this process (a closure or a lambda from a notebook cell works
    as it is): at the deadline the copy reports the line it is in and is ended, so no ``except:`` in
    the learner's loop can swallow the deadline, a thread it started dies with it, and no timer or
    signal of this process -- the learner's own ``signal.setitimer`` included -- is touched. Without
    ``os.fork`` (Windows), or once this process has used CUDA (a forked copy cannot), the call runs here
    under a timer signal (:func:`_deadline`)."""
    if not hasattr(os, "fork") or torch.cuda.is_initialized():
        return _call_here(fn, case, deadline_s)
    for stream in (sys.stdout, sys.stderr):   # text printed before the fork is not printed twice
        stream.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # the copy: answers through the pipe and never returns into the caller's code
        os.close(read_end)
        try:
            _answer_in_child(fn, case, deadline_s, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        answer = _collect(pid, read_end, deadline_s)
    finally:
        os.close(read_end)
        os.kill(pid, signal.SIGKILL)   # a copy that has exited is a zombie until waited for: the kill is harmless
        _, status = os.waitpid(pid, 0)
    if answer is None:   # the copy closed the pipe without a word
        return None, (f"your function ended the Python process ({_ended(status)}) before returning; a function "
                      "returns its answer (no os._exit, no os.kill of its own process).")
    return answer


STUCK_SIGNAL = signal.SIGUSR1 if hasattr(signal, "SIGUSR1") else None   # "say where you are, then stop"
GRACE_S = 2.0   # how long a copy past its deadline may take to say where it is before it is killed


def _send(fd: int, answer: tuple) -> None:
    try:
        data = pickle.dumps(answer)
    except Exception:   # a value that cannot be sent back is no number anyway
        value = answer[0]
        data = pickle.dumps((None, f"your function returned {type(value).__name__} {repr(value)[:57]}; return a "
                                   "number or an array of numbers."))
    while data:
        data = data[os.write(fd, data):]


def _answer_in_child(fn: Callable, case: tuple, deadline_s: float, fd: int) -> None:
    """In the forked copy: call ``fn`` and send ``(value, failure)`` through ``fd``."""
    torch.set_num_threads(1)   # the parent's thread pool does not exist in the copy

    def stuck(signum, frame):   # the parent's deadline passed: name the line, end at once (os._exit in _call)
        _send(fd, (None, _too_slow(deadline_s, _where_frames(traceback.extract_stack(frame)))))
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)
    signal.signal(STUCK_SIGNAL, stuck)
    before = set(threading.enumerate())
    value, failure = _call_here(fn, case, None)
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    if failure is None and left:
        failure = (f"your function left {len(left)} thread(s) running ({', '.join(t.name for t in left)}); a "
                   "check's function returns its answer with nothing left running (join a thread you start, "
                   "t.join(), before returning).")
        value = None
    signal.signal(STUCK_SIGNAL, signal.SIG_IGN)
    _send(fd, (value, failure))
    for stream in (sys.stdout, sys.stderr):
        stream.flush()


def _collect(pid: int, fd: int, deadline_s: float):
    """The copy's answer ``(value, failure)`` from ``fd`` (None if it sent none); at ``deadline_s`` it is
    asked where it is (``STUCK_SIGNAL``), and given up on if it does not say within :data:`GRACE_S`."""
    chunks, start, asked = [], time.monotonic(), False
    while True:
        left = start + deadline_s + (GRACE_S if asked else 0) - time.monotonic()
        if left <= 0:
            if asked:
                return None, _too_slow(deadline_s, " (it did not answer when asked where it was: stuck in a "
                                                   "long call outside Python?)")
            os.kill(pid, STUCK_SIGNAL)
            asked = True
            continue
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    return pickle.loads(b"".join(chunks)) if chunks else None


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _call_here(fn: Callable, case: tuple, deadline_s: float | None):
    """:func:`_call` in this process: under a timer signal (``deadline_s``), or without a deadline (None)."""
    given = copy.deepcopy(case)
    try:
        with _deadline(deadline_s) if deadline_s is not None else nullcontext():
            value = fn(*given)
    except _Deadline as e:
        return None, _too_slow(deadline_s, _where(e))
    except SystemExit as e:
        return None, (f"your function called sys.exit({e.code!r}) (SystemExit){_where(e)}; a function returns its "
                      "answer, it does not stop the program.")
    except Exception as e:  # the learner's code failed: report it, do not crash
        return None, f"your function raised {type(e).__name__}: {e}{_where(e)}"
    changed = [name for name, before, after in zip(_argument_names(fn, len(case)), case, given)
               if not _same(before, after)]
    if changed:
        return None, (f"your function changed its input {', '.join(changed)} in place; work on a copy "
                      "(x = x.copy() for an array, x = x.clone() for a tensor) or build a new result.")
    return value, None


def _as_array(value) -> np.ndarray:
    """``value`` as a float array; text, ``None`` and other non-numbers raise ``TypeError`` naming them."""
    if value is None:
        raise TypeError("your function returned None -- did you forget `return`?")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = np.asarray(None)
    if array.dtype.kind not in "biuf":  # text ("0.54" would pass as a number), objects, complex numbers
        shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
        raise TypeError(f"your function returned {type(value).__name__} {shown}; return a number or an array "
                        "of numbers" + (", not text." if isinstance(value, (str, bytes)) or array.dtype.kind in "US"
                                        else "."))
    return array.astype(float)


def _run(fn: Callable, cases: list, reference: Callable, mistakes: dict[str, Callable],
         tol: float = 1e-5, *, deadline_s: float | None = None) -> CheckResult:
    """Compare ``fn(*case)`` with ``reference(*case)`` on every case; on a mismatch, name the first
    typical mistake whose output matches the learner's. Each call of ``fn`` gets its own copy of the
    case and ``deadline_s`` seconds (default :data:`DEADLINE_S`); a call that overruns, raises, exits,
    changes its inputs or returns no numbers fails the check with a message (:func:`_call`)."""
    if not callable(fn):
        return CheckResult(False, f"pass your function itself (e.g. check(my_function), no parentheses); got "
                                  f"{type(fn).__name__} {fn!r:.60}.")
    deadline_s = DEADLINE_S if deadline_s is None else deadline_s
    for case in cases:
        expected = _as_array(reference(*copy.deepcopy(case)))
        got, failure = _call(fn, case, deadline_s)
        if failure:
            return CheckResult(False, failure)
        try:
            got = _as_array(got)
        except TypeError as e:
            return CheckResult(False, f"{e} Expected numbers of shape {expected.shape}.")
        if got.shape != expected.shape:
            return CheckResult(False, f"your function returned shape {got.shape}, expected {expected.shape}.")
        if not np.allclose(got, expected, rtol=tol, atol=tol, equal_nan=True):
            for hint, wrong in mistakes.items():
                try:
                    if np.allclose(got, _as_array(wrong(*copy.deepcopy(case))), rtol=tol, atol=tol, equal_nan=True):
                        return CheckResult(False, hint)
                except Exception:
                    continue
            return CheckResult(False, f"values differ: expected {np.round(expected, 4).tolist()}, "
                                      f"got {np.round(got, 4).tolist()}.")
    return CheckResult(True, f"matches the reference on {len(cases)} random cases.")


def _report(result: CheckResult) -> CheckResult:
    print(repr(result))
    return result


def _random_counts(rng, c):
    return np.sort(rng.integers(1, 500, size=c))[::-1].astype(float)


# ----------------------------------------------------------------------------- notebook 01


def check_balanced_error(fn: Callable) -> CheckResult:
    """Exercise 01.1: ``fn(cm)`` -> balanced error from a confusion matrix (rows: true class);
    classes with no test example are left out."""
    rng = np.random.default_rng(0)
    cases = [(rng.integers(0, 20, size=(c, c)),) for c in (2, 3, 5)]
    cm = rng.integers(1, 20, size=(4, 4))
    cm[2] = 0  # a class with no test example
    cases.append((cm,))

    def reference(m):
        support = m.sum(1)
        return 1 - np.mean(np.diag(m)[support > 0] / support[support > 0])
    return _report(_run(fn, cases, reference, {
        "you computed the standard error (all mistakes / all examples); the balanced error averages the "
        "per-class error rates, each class counting the same":
            lambda m: 1 - np.trace(m) / m.sum(),
        "that is the balanced accuracy; the question asks for the error, 1 - accuracy":
            lambda m: np.mean(np.diag(m)[m.sum(1) > 0] / m.sum(1)[m.sum(1) > 0]),
        "you divided by column sums (predictions per class); per-class error divides by the row sums "
        "(true examples per class)":
            lambda m: 1 - np.nanmean(np.diag(m) / np.where(m.sum(0) > 0, m.sum(0), np.nan)),
        "a class with no test example should be left out, not counted as 0 % or 100 % error":
            lambda m: 1 - np.mean(np.diag(m) / np.maximum(m.sum(1), 1)),
    }))


def check_p_no_example(fn: Callable) -> CheckResult:
    """Exercise 01.3: ``fn(n_c, total, batch)`` -> P(a batch drawn without replacement holds no
    example of a class with ``n_c`` of ``total`` examples)."""
    cases = [(5, 728, 32), (15, 728, 32), (50, 12406, 128), (1, 10, 9)]
    return _report(_run(fn, cases, lambda n, total, b: batch_class_stats([n, total - n], b)["p_none"][0], {
        "that is the with-replacement answer (1 - n/N)^B; a batch is drawn without replacement, so each "
        "draw changes the pool: multiply (N - n - k) / (N - k) for k = 0 .. B-1":
            lambda n, total, b: (1 - n / total) ** b,
        "that is the probability of at least one example; the question asks for none":
            lambda n, total, b: 1 - batch_class_stats([n, total - n], b)["p_none"][0],
    }))


# ----------------------------------------------------------------------------- notebook 02


def _logit_cases(seed=0):
    rng = np.random.default_rng(seed)
    cases = []
    for c, tau in ((3, 1.0), (5, 0.5), (4, 2.0)):
        logits = torch.tensor(rng.normal(size=(7, c)) * 2)
        labels = torch.tensor(rng.integers(0, c, size=7))
        cases.append((logits, labels, torch.tensor(_random_counts(rng, c)), tau))
    return cases


def check_la_loss(fn: Callable) -> CheckResult:
    """Exercise 02.1: ``fn(logits, labels, counts, tau)`` -> logit-adjusted cross-entropy (mean)."""
    def log_prior(counts):
        return torch.log(counts / counts.sum())
    return _report(_run(fn, _logit_cases(), lambda lo, y, n, tau: losses.LogitAdjustedLoss(n, tau).double()(lo, y), {
        "wrong sign: the LA loss *adds* tau * log(prior) to the logits during training (subtracting is the "
        "post-hoc rule used at prediction time)":
            lambda lo, y, n, tau: F.cross_entropy(lo - tau * log_prior(n), y),
        "tau is missing: scale the adjustment by tau":
            lambda lo, y, n, tau: F.cross_entropy(lo + log_prior(n), y),
        "you returned the sum over the batch; take the mean":
            lambda lo, y, n, tau: F.cross_entropy(lo + tau * log_prior(n), y, reduction="sum"),
        "that is plain cross-entropy: the adjustment tau * log(prior) is not applied":
            lambda lo, y, n, tau: F.cross_entropy(lo, y),
        "you used the prior itself, not its logarithm":
            lambda lo, y, n, tau: F.cross_entropy(lo + tau * n / n.sum(), y),
    }))


def check_ldam_margins(fn: Callable) -> CheckResult:
    """Exercise 02.2: ``fn(counts, max_m)`` -> LDAM margins ``m_y`` proportional to ``n_y^(-1/4)``,
    the largest equal to ``max_m``."""
    rng = np.random.default_rng(1)
    cases = [(_random_counts(rng, c), m) for c, m in ((3, 0.5), (6, 0.3), (10, 1.0))]

    def scaled(m, max_m):
        return m * max_m / np.max(m)
    return _report(_run(fn, cases, lambda n, max_m: losses.ldam_margins(n, max_m), {
        "exponent: LDAM's margins scale as n^(-1/4), not n^(-1/2)":
            lambda n, max_m: scaled(np.asarray(n) ** -0.5, max_m),
        "the margins must be largest for the *rarest* class: use a negative exponent, n^(-1/4)":
            lambda n, max_m: scaled(np.asarray(n) ** 0.25, max_m),
        "not scaled: divide by the largest n^(-1/4) and multiply by max_m so the rarest class gets max_m":
            lambda n, max_m: np.asarray(n) ** -0.25,
        "scaled so that the margins *sum* to max_m; the *largest* one should equal max_m":
            lambda n, max_m: np.asarray(n) ** -0.25 * max_m / np.sum(np.asarray(n) ** -0.25),
    }))


# ----------------------------------------------------------------------------- notebook 03


def check_spread(fn: Callable) -> CheckResult:
    """Exercise 03.1: ``fn(z, y, c)`` -> spread of class ``c``: ``1 - mean cos(z_i, mu_c)`` over the
    normalised embeddings of class ``c``."""
    rng = np.random.default_rng(2)
    cases = []
    for n, e in ((20, 2), (30, 3), (25, 8)):
        z = rng.normal(size=(n, e)) * rng.uniform(0.5, 3, size=(n, 1)) + rng.normal(size=e)
        y = rng.integers(0, 3, size=n)
        cases.append((z, y, int(y[0])))

    def unit(a):
        return a / np.linalg.norm(a, axis=-1, keepdims=True)

    def mean_cos(members, mu):
        return np.mean(members @ mu / (np.linalg.norm(members, axis=1) * np.linalg.norm(mu)))
    return _report(_run(fn, cases, lambda z, y, c: metrics.embedding_spread(z, y)[c], {
        "normalise the embeddings before averaging: the class mean of raw vectors is pulled toward the "
        "longest ones":
            lambda z, y, c: 1 - mean_cos(unit(z[y == c]), z[y == c].mean(0)),
        "you returned the mean cosine (tightness); the spread is 1 - mean cosine":
            lambda z, y, c: metrics.embedding_spread(z, y)[c] * -1 + 1,
        "cosine needs unit vectors: you took plain dot products with an unnormalised mean":
            lambda z, y, c: 1 - np.mean(unit(z[y == c]) @ unit(z[y == c]).mean(0)),
    }))


# ----------------------------------------------------------------------------- notebook 04


def check_has_positive(fn: Callable) -> CheckResult:
    """Exercise 04.1: ``fn(labels)`` -> bool array: does each anchor have another example of its class?"""
    rng = np.random.default_rng(3)
    cases = [(rng.integers(0, k, size=n),) for n, k in ((10, 8), (32, 5), (6, 6))]
    return _report(_run(fn, cases, lambda y: np.bincount(y)[y] > 1, {
        "an anchor is not its own positive: count the *other* examples with the same label":
            lambda y: np.bincount(y)[y] > 0,
        "you returned the number of positives; the question asks whether there is one (a bool per anchor)":
            lambda y: np.bincount(y)[y] - 1,
    }))


# ----------------------------------------------------------------------------- notebook 05


def check_elm(fn: Callable) -> CheckResult:
    """Exercise 05.1: ``fn(logits, z, labels, counts, lam)`` -> the ELM total loss in the course's
    recommended form: LA plus ``lam`` times ``losses.EmbeddingMarginLoss`` with the embedding constants
    of :data:`~elm_lite.recipes.ELM_RECOMMENDED` (the centroid margin, per-class averaging)."""
    rng = np.random.default_rng(4)
    cases = []
    for b, lam in ((16, 0.5), (24, 1.0), (12, 2.0)):
        counts = torch.tensor(_random_counts(rng, 4))
        cases.append((torch.tensor(rng.normal(size=(b, 4))), torch.tensor(rng.normal(size=(b, 3))),
                      torch.tensor(rng.integers(0, 4, size=b)), counts, lam))
    embedding = {k: ELM_RECOMMENDED[k] for k in ("temperature", "delta_max", "placement", "anchor_average")}

    def parts(lo, z, y, n):
        return losses.LogitAdjustedLoss(n).double()(lo, y), losses.EmbeddingMarginLoss(n, **embedding).double()(z, y)
    return _report(_run(fn, cases, lambda lo, z, y, n, lam: losses.ELMLoss(n, lam=lam).double()(lo, z, y)[0], {
        "lambda is missing: weight the embedding term by lam":
            lambda lo, z, y, n, lam: sum(parts(lo, z, y, n)),
        "lambda weights the *embedding* term, not the logit term":
            lambda lo, z, y, n, lam: lam * parts(lo, z, y, n)[0] + parts(lo, z, y, n)[1],
        "the logit term should be the logit-adjusted loss, not plain cross-entropy":
            lambda lo, z, y, n, lam: F.cross_entropy(lo, y) + lam * parts(lo, z, y, n)[1],
        "the margin on the positives (placement='positive') is the form the margin study found inert; the "
        "course's recommended form puts it against the class centre: keep EmbeddingMarginLoss's defaults "
        "(recipes.ELM_RECOMMENDED)":
            lambda lo, z, y, n, lam: parts(lo, z, y, n)[0] + lam * losses.EmbeddingMarginLoss(
                n, placement="positive").double()(z, y),
    }))


# ----------------------------------------------------------------------------- the key losses, written out


def _embedding_cases(seed: int) -> list:
    """Batches ``(z (N, E) unnormalised, labels (N,), temperature)``; some anchors have no positive."""
    rng = np.random.default_rng(seed)
    cases = []
    for n, e, c, t in ((10, 3, 4, 0.1), (16, 5, 6, 0.5), (12, 4, 8, 0.2)):
        labels = np.concatenate([np.arange(c), rng.integers(0, c // 2, size=n - c)])  # rare classes once
        cases.append((torch.tensor(rng.normal(size=(n, e)) * rng.uniform(0.5, 2, size=(n, 1))),
                      torch.tensor(labels), t))
    return cases


def _supcon_variant(z, y, t, normalise=True, self_in_denominator=False, log_of_mean=False, count_all=False):
    """SupCon's L_out and its usual mistakes, written with masks: mean over anchors with a positive of
    ``-1/|P(i)| sum_p log(e^{s_ip/T} / sum_{a != i} e^{s_ia/T})``."""
    z = F.normalize(z, dim=1) if normalise else z
    s = z @ z.T / t
    eye = torch.eye(len(y), dtype=torch.bool)
    pos = (y[:, None] == y[None, :]) & ~eye
    log_prob = s - torch.logsumexp(s if self_in_denominator else s.masked_fill(eye, float("-inf")), 1, keepdim=True)
    n_pos = pos.sum(1)
    if log_of_mean:
        per = -(torch.logsumexp(log_prob.masked_fill(~pos, float("-inf")), 1) - torch.log(n_pos.clamp(min=1)))
    else:
        per = -(log_prob * pos).sum(1) / n_pos.clamp(min=1)
    per = torch.where(n_pos > 0, per, torch.zeros_like(per))
    return per.sum() / (len(y) if count_all else (n_pos > 0).sum().clamp(min=1))


def check_supcon(fn: Callable) -> CheckResult:
    """Exercise 04.2: ``fn(z, labels, temperature)`` -> the supervised contrastive loss (Khosla et al.
    2020, L_out) of a batch of unnormalised embeddings ``z (N, E)``: the mean over anchors with at least
    one positive of ``-1/|P(i)| sum_{p in P(i)} log(e^{z_i.z_p/T} / sum_{a != i} e^{z_i.z_a/T})``, on
    unit-length embeddings."""
    def reference(z, y, t):                       # the formula's mean over anchors (not the course's per-class)
        return losses.SupConLoss(t, anchor_average="all").double()(z, y)
    return _report(_run(fn, _embedding_cases(5), reference, {
        "normalise the embeddings first: SupCon compares cosines (unit-length z)":
            lambda z, y, t: _supcon_variant(z, y, t, normalise=False),
        "the anchor itself belongs in no sum: leave a = i out of the denominator":
            lambda z, y, t: _supcon_variant(z, y, t, self_in_denominator=True),
        "you took the log of the mean over positives (the L_in form); L_out averages the logs":
            lambda z, y, t: _supcon_variant(z, y, t, log_of_mean=True),
        "anchors without a positive must be skipped, not counted as 0 in the mean":
            lambda z, y, t: _supcon_variant(z, y, t, count_all=True),
        "the temperature is missing: divide every cosine by T":
            lambda z, y, t: _supcon_variant(z, y, 1.0),
    }))


def _centroid_variant(z, y, delta, t, leave_out=True, sign=1.0, margin_over_t=True, count_all=False):
    """The centroid margin term and its usual mistakes: for anchor i, ``-log softmax_k`` of
    ``(cos(z_i, c_k) - delta_{y_i} [k = y_i]) / T`` over the classes k present, ``c_k`` the mean of class
    k's unit embeddings (i left out of its own); the mean over anchors whose class has another member."""
    z = F.normalize(z, dim=1)
    c = int(delta.shape[0])
    member = F.one_hot(y, c).to(z.dtype)                                   # (N, C)
    sums = member.T @ z                                                    # (C, E)
    own = member if leave_out else torch.zeros_like(member)
    means = sums[None] - own[..., None] * z[:, None, :]                    # (N, C, E): i left out of its own
    count = member.sum(0)[None] - own                                      # (N, C)
    cos = (means * z[:, None, :]).sum(-1) / means.norm(dim=-1).clamp(min=1e-12)
    margin = sign * delta[y][:, None] * member
    logits = (cos - margin) / t if margin_over_t else cos / t - margin
    logits = logits.masked_fill(count == 0, float("-inf"))
    has_pos = (count * member).sum(1) > 0
    per = torch.logsumexp(logits, 1) - logits.gather(1, y[:, None]).squeeze(1)
    per = torch.where(has_pos, per, torch.zeros_like(per))
    return per.sum() / (len(y) if count_all else has_pos.sum().clamp(min=1))


def check_centroid_margin(fn: Callable) -> CheckResult:
    """Exercise 05.2: ``fn(z, labels, delta, temperature)`` -> the course's ELM embedding term (the
    centroid form): for each anchor i, ``-log`` of the softmax over the classes k in the batch of
    ``(cos(z_i, c_k) - delta_{y_i} [k = y_i]) / T``, with ``c_k`` the mean of class k's unit embeddings
    -- i left out of its own class -- averaged over the anchors whose class has another member.
    ``delta (C,)``: the embedding margin of each class."""
    rng = np.random.default_rng(6)
    cases = [(z, y, torch.tensor(rng.uniform(0.1, 0.8, size=int(y.max()) + 1)), t) for z, y, t in _embedding_cases(6)]

    def reference(z, y, delta, t):
        per, has_pos = losses.contrastive_terms(z, y, t, delta[y], "centroid", n_classes=len(delta))
        return losses.average_anchors(per, has_pos, y, "all")
    return _report(_run(fn, cases, reference, {
        "leave the anchor out of its own class's mean: otherwise a rare class's anchor is compared with "
        "itself and its class looks tighter than it is":
            lambda z, y, d, t: _centroid_variant(z, y, d, t, leave_out=False),
        "wrong sign: the margin is *subtracted* from the own class's cosine (the anchor must beat the "
        "other centres by delta)":
            lambda z, y, d, t: _centroid_variant(z, y, d, t, sign=-1.0),
        "the margin is missing: subtract delta of the anchor's class from its own-class cosine":
            lambda z, y, d, t: _centroid_variant(z, y, d * 0, t),
        "the margin is in cosine units: subtract it before dividing by T, (cos - delta) / T":
            lambda z, y, d, t: _centroid_variant(z, y, d, t, margin_over_t=False),
        "anchors whose class has no other member in the batch must be skipped, not counted as 0":
            lambda z, y, d, t: _centroid_variant(z, y, d, t, count_all=True),
    }))


# ----------------------------------------------------------------------------- notebook 07 (the capstone assignment)


def _verdict(low: float, high: float) -> int:
    return 1 if low > 0 else -1 if high < 0 else 0


def _paired_verdict_variant(rows, method, reference, paired=True, by_seed=True, quantile="t", sign=1.0,
                            interval=True):
    """The verdict of ``method`` against ``reference`` and its usual mistakes (see :func:`check_paired_verdict`)."""
    from scipy import stats

    def values(name):
        mine = [r for r in rows if r["method"] == name]
        return {r["seed"]: r["balanced_accuracy"] for r in (sorted(mine, key=lambda r: r["seed"]) if by_seed else mine)}

    def half(x):
        q = stats.t.ppf(0.975, len(x) - 1) if quantile == "t" else 1.96
        return q * np.std(x, ddof=1) / np.sqrt(len(x))
    a, b = values(method), values(reference)
    if not paired:
        a, b = np.array(list(a.values())), np.array(list(b.values()))
        return _verdict(a.mean() - half(a) - (b.mean() + half(b)), a.mean() + half(a) - (b.mean() - half(b)))
    d = sign * (np.array(list(a.values())) - np.array(list(b.values())) if not by_seed
                else np.array([a[s] - b[s] for s in sorted(a) if s in b]))
    if not interval:
        return _verdict(d.mean(), d.mean())
    return _verdict(d.mean() - half(d), d.mean() + half(d))


def _verdict_cases() -> list:
    """Decision-table rows ``(rows, method, reference)`` (CE, LA, ELM; four seeds), chosen so that every
    usual mistake gives another verdict on at least one case: a large seed effect shared by the methods
    (unpaired intervals overlap), seeds listed out of order (pairing by position scrambles), a mean
    difference within the noise, one between the normal and the t quantile, and a loss."""
    cases = []
    for base, diffs, order in (([0.55, 0.65, 0.60, 0.70], [0.030, 0.032, 0.028, 0.031], [0, 1, 2, 3]),
                               ([0.60, 0.50, 0.66, 0.57], [0.020, 0.021, 0.019, 0.020], [2, 0, 3, 1]),
                               ([0.60, 0.61, 0.62, 0.60], [0.010, 0.030, -0.025, 0.000], [1, 3, 0, 2]),
                               ([0.60, 0.61, 0.62, 0.60], [0.010, 0.030, 0.000, 0.030], [0, 1, 2, 3]),
                               ([0.60, 0.58, 0.62, 0.61], [-0.040, -0.030, -0.050, -0.045], [3, 2, 1, 0])):
        rows = [{"method": "CE", "seed": s, "balanced_accuracy": base[s] - 0.1} for s in order]
        rows += [{"method": "LA", "seed": s, "balanced_accuracy": base[s]} for s in range(4)]
        rows += [{"method": "ELM", "seed": s, "balanced_accuracy": base[s] + diffs[s]} for s in order]
        cases.append((rows, "ELM", "LA"))
    return cases


def check_paired_verdict(fn: Callable) -> CheckResult:
    """Exercise 07.1 (the capstone assignment): ``fn(rows, method, reference)`` -> ``1`` if ``method``
    beats ``reference`` beyond the seed noise, ``-1`` if it loses beyond it, ``0`` if the 95 % t-interval of
    the mean per-seed difference of ``balanced_accuracy`` contains zero. ``rows``: dicts with ``method``, ``seed`` and
    ``balanced_accuracy``, one per run, in any order."""
    def reference(rows, method, ref):
        from .capstone import paired_difference
        d = paired_difference(rows, method, ref)
        return _verdict(d["mean"] - d["half"], d["mean"] + d["half"])
    return _report(_run(fn, _verdict_cases(), reference, {
        "with a few seeds the interval uses Student's t quantile with n - 1 degrees of freedom "
        "(scipy.stats.t.ppf(0.975, n - 1), 3.18 for 4 seeds), not the normal 1.96":
            lambda rows, m, r: _paired_verdict_variant(rows, m, r, quantile="normal"),
        "you compared the means only; a difference counts only when its interval excludes zero (0: within "
        "the seed noise)":
            lambda rows, m, r: _paired_verdict_variant(rows, m, r, interval=False),
        "pair the runs by seed, not by their position in the list: the same seed is the same data order and "
        "initialisation":
            lambda rows, m, r: _paired_verdict_variant(rows, m, r, by_seed=False),
        "you compared the two methods' own intervals (unpaired); the seed-to-seed variation they share hides "
        "the difference: take the interval of the per-seed differences":
            lambda rows, m, r: _paired_verdict_variant(rows, m, r, paired=False),
        "wrong sign: the difference is method minus reference (1 when the method is better)":
            lambda rows, m, r: _paired_verdict_variant(rows, m, r, sign=-1.0),
    }))


def answered(result: CheckResult) -> bool:
    """Whether the learner's function ran and returned numbers of the expected shape: the check passed,
    or failed on the values only (a named mistake or "values differ"), not because the function raised,
    overran, returned nothing or the wrong shape. The first point of an nbgrader assignment's exercise."""
    return result.passed or not result.message.startswith(("your function", "pass your function"))
