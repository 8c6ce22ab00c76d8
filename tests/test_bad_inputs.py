"""Bad and edge inputs across the API and the CLI: each one is refused with the right exception
and a message that names the argument (or file) and what was expected -- never a silent NaN, a
silently wrong result, a traceback from the CLI, or a hang."""
import functools
import http.server
import json
import re
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

import elm_lite as el
from elm_lite import exercises, methods, metrics, solutions, widgets
from elm_lite import losses as L
from elm_lite.cli import main
from elm_lite.data import batch_class_stats, longtail_counts
from elm_lite.engine.checkpoints import RunHooks
from elm_lite.engine.cifar import fake_cifar, fetch_url, load_cifar_lt
from elm_lite.engine.fullscale import check_recipe, prepare_run_folder, resolve_device, train_cifar
from elm_lite.engine.ladder import speed_ladder
from elm_lite.engine.runfiles import RunFolderLocked
from elm_lite.engine.table import train_table
from elm_lite.params import check_parameters
from elm_lite.recipes import drw_epoch
from elm_lite.results import check_run_results, load_results

ROOT = Path(__file__).resolve().parents[1]
COUNTS = [500, 200, 50, 10, 5]
TOY = el.make_toy("gaussian", 3, 40, 4, n_test_per_class=5)


def _fit(**kw):
    model = el.MLP(2, 3, hidden=8, embed_dim=4)
    args = {"x": TOY.x_train, "y": TOY.y_train, "epochs": 2, "progress": False, **kw}
    return el.fit(model, args.pop("x"), args.pop("y"), **args)


class _NoParameters(torch.nn.Module):
    n_classes = 3

    def forward(self, x):
        return x[:, :1].repeat(1, 3), x


def _images(**change):
    arrays = fake_cifar(10, n_per_class=30, n_test_per_class=5)
    return {**arrays, **change}


API_CASES = [
    # losses: empty batches, counts, constants
    ("LA on an empty batch", lambda: L.LogitAdjustedLoss(COUNTS)(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)),
     ValueError, r"batch is empty"),
    ("Balanced Softmax on an empty batch", lambda: L.BalancedSoftmaxLoss(COUNTS)(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)),
     ValueError, r"batch is empty"),
    ("LDAM on an empty batch", lambda: L.LDAMLoss(COUNTS)(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)),
     ValueError, r"batch is empty"),
    ("hinge on an empty batch", lambda: L.MulticlassHingeLoss(COUNTS)(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)),
     ValueError, r"batch is empty"),
    ("hinge margin out of range", lambda: L.MulticlassHingeLoss(COUNTS, margin=20.0), ValueError, r"^margin must be .*\[0.0, 10.0\]"),
    ("hinge n^-1/4 margin out of range", lambda: L.MulticlassHingeLoss(COUNTS, margin=20.0, schedule="n^-1/4"),
     ValueError, r"^margin must be"),
    ("counts reported at full precision", lambda: L.LogitAdjustedLoss([1, -1e-300]), ValueError, r"counts .*-1e-300"),
    ("counts empty", lambda: L.LogitAdjustedLoss([]), ValueError, r"counts must be a 1-D .*at least 2"),
    ("counts with a zero", lambda: L.LogitAdjustedLoss([5, 0]), ValueError, r"counts must be finite and > 0"),
    ("tau negative", lambda: L.LogitAdjustedLoss(COUNTS, tau=-1), ValueError, r"^tau must be a number in"),
    ("SupCon temperature 0", lambda: L.SupConLoss(0.0), ValueError, r"^temperature must be a number in"),
    ("SupCon averaging", lambda: L.SupConLoss(anchor_average="median"), ValueError, r"anchor_average must be one of"),
    ("margin placement", lambda: L.EmbeddingMarginLoss(COUNTS, placement="middle"), ValueError, r"placement must be one of"),
    ("ELM logit term", lambda: L.ELMLoss(COUNTS, logit="focal"), ValueError, r"logit must be 'la' or 'ldam'"),
    ("post-hoc shape", lambda: L.posthoc_adjust(torch.zeros(3, 4), COUNTS), ValueError, r"4 classes but counts has 5"),
    # methods and recipes
    ("unknown method", lambda: methods.get("focal"), ValueError, r"unknown method 'focal'; choose one of"),
    ("bad method constant", lambda: methods.get("la").build_loss(COUNTS, temperature=2), ValueError,
     r"bad constants for method 'la'"),
    ("DRW without epochs", lambda: methods.get("ldam-drw").build_loss(COUNTS), ValueError, r"pass epochs="),
    ("DRW with 0 epochs", lambda: drw_epoch(0), ValueError, r"epochs must be an integer >= 1"),
    ("recipe: epochs 0", lambda: check_recipe({"epochs": 0}), ValueError, r"epochs=0 is out of range: .*integer >= 1"),
    ("recipe: negative lr", lambda: check_recipe({"lr": -0.1}), ValueError, r"lr=-0.1 is out of range: .*> 0"),
    ("recipe: model", lambda: check_recipe({"model": "vgg"}), ValueError, r"model='vgg' is out of range: .*one of"),
    ("recipe: decay lists", lambda: check_recipe({"decay_at": (0.8,)}), ValueError, r"decay_at=.* one per decay_to"),
    ("recipe: unknown entry", lambda: check_recipe({"momentum": 0.5}), ValueError, r"unknown recipe entries \['momentum'\]"),
    ("recipe: negative weight decay", lambda: check_recipe({"weight_decay": -1.0}), ValueError, r"weight_decay=-1.0 .*>= 0"),
    ("device tpu", lambda: resolve_device("tpu"), ValueError, r"device='tpu' is not a device .*'cpu'"),
    ("device cuda without GPU", lambda: resolve_device("cuda:3") if not torch.cuda.is_available() else resolve_device("cuda:99"),
     ValueError, r"device='cuda:\d+' but"),
    # fit
    ("fit: NaN inputs", lambda: _fit(x=np.where(np.arange(len(TOY.y_train))[:, None] == 0, np.nan, TOY.x_train)),
     ValueError, r"x contains 2 NaN or inf"),
    ("fit: lr 0", lambda: _fit(lr=0.0), ValueError, r"lr must be a finite number > 0, got 0.0"),
    ("fit: lr NaN", lambda: _fit(lr=float("nan")), ValueError, r"lr must be a finite number > 0"),
    ("fit: weight decay", lambda: _fit(weight_decay=-1e-4), ValueError, r"weight_decay must be a finite number >= 0"),
    ("fit: epochs 0", lambda: _fit(epochs=0), ValueError, r"epochs must be an integer >= 1, got 0"),
    ("fit: batch size 0", lambda: _fit(batch_size=0), ValueError, r"batch_size must be None .* >= 1, got 0"),
    ("checkpoints every 0 epochs", lambda: RunHooks(every=0), ValueError, r"checkpoint_every must be an integer >= 1"),
    ("train: checkpoint every 0", lambda: train_cifar(None, checkpoint_every=0), ValueError,
     r"checkpoint_every must be an integer >= 1"),
    ("fit: optimizer", lambda: _fit(optimizer="rmsprop"), ValueError, r"optimizer must be 'adam' or 'sgd'"),
    ("fit: sampling", lambda: _fit(sampling="balanced"), ValueError, r"sampling must be one of \('uniform', 'class_balanced'\)"),
    ("re-weighting scheme", lambda: L.ReweightedLoss(COUNTS, "sqrt"), ValueError, r"scheme must be one of"),
    ("fit: views without augmentation", lambda: _fit(n_views=2), ValueError, r"n_views > 1 needs an augment"),
    ("fit: a model without parameters", lambda: el.fit(_NoParameters(), TOY.x_train, TOY.y_train, progress=False),
     ValueError, r"has no parameters"),
    ("fit: a diverging loss", lambda: _fit(loss_fn=lambda logits, y: logits.sum() * float("nan")),
     FloatingPointError, r"loss became nan in epoch 1.*lower the learning rate"),
    ("fit: labels beyond the model", lambda: _fit(y=TOY.y_train + 5), ValueError, r"labels must be in \[0, 3\)"),
    ("predict without parameters", lambda: el.predict(_NoParameters(), TOY.x_test[:4]).shape == (4,), None, None),
    # data
    ("rho True", lambda: longtail_counts(100, 5, True), ValueError, r"rho .* got True \(a bool\)"),
    ("rho below 1", lambda: longtail_counts(100, 5, 0.5), ValueError, r"rho .*>= 1, got 0.5"),
    ("n_max 0", lambda: longtail_counts(0, 5, 10), ValueError, r"n_max must be an integer >= 1"),
    ("negative counts in a batch", lambda: batch_class_stats([10, -5, 3], 4), ValueError,
     r"counts must be .*non-negative whole numbers"),
    ("fractional counts in a batch", lambda: batch_class_stats([10, 2.5], 4), ValueError, r"non-negative whole numbers"),
    ("batch larger than the data", lambda: batch_class_stats([3, 2], 10), ValueError, r"batch_size=10 exceeds"),
    ("float images", lambda: load_cifar_lt(arrays=_images(x_train=_images()["x_train"] / 255.0)), ValueError,
     r"x_train must be uint8 .*\(x \* 255\).round\(\).astype\(np.uint8\)"),
    ("int16 images above 255", lambda: load_cifar_lt(arrays=_images(x_test=_images()["x_test"].astype(np.int16) + 200)),
     ValueError, r"x_test must hold pixels in \[0, 255\], got values .* to 4\d\d"),
    ("channels-first images", lambda: load_cifar_lt(arrays=_images(x_train=_images()["x_train"].transpose(0, 3, 1, 2))),
     ValueError, r"x_train must have shape \(N, 32, 32, 3\).*transpose"),
    ("no class 0", lambda: load_cifar_lt(arrays=_images(y_train=_images()["y_train"] % 9 + 1)), ValueError,
     r"y_train has no example of class\(es\) \[0\]"),
    ("a 5-class set as CIFAR-10", lambda: load_cifar_lt(arrays=fake_cifar(5, n_per_class=30, n_test_per_class=5)),
     ValueError, r"y_train has no example of class\(es\) \[5, 6, 7, 8, 9\]"),
    ("labels beyond the classes", lambda: load_cifar_lt(arrays=_images(y_test=_images()["y_test"] + 1)), ValueError,
     r"y_test must hold integer labels in \[0, 10\)"),
    ("float labels", lambda: load_cifar_lt(arrays=_images(y_train=_images()["y_train"].astype(float))), ValueError,
     r"y_train must hold integer labels"),
    ("missing arrays", lambda: load_cifar_lt(arrays={"x_train": np.zeros((1, 32, 32, 3), np.uint8)}), ValueError,
     r"arrays lacks the arrays \['y_train', 'x_test', 'y_test'\]"),
    ("missing npz", lambda: load_cifar_lt(npz="/nonexistent/cifar.npz"), FileNotFoundError, r"npz='/nonexistent/cifar.npz' does not exist"),
    ("unknown dataset", lambda: load_cifar_lt("imagenet"), ValueError, r"name must be one of"),
    # metrics
    ("balanced accuracy of nothing", lambda: metrics.balanced_accuracy([], []), ValueError, r"y_true and y_pred are empty"),
    ("per-class accuracy of nothing", lambda: metrics.per_class_accuracy([], [], 3), ValueError, r"are empty"),
    ("lengths differ", lambda: metrics.balanced_accuracy([0, 1], [0]), ValueError, r"same length, got 2 and 1"),
    ("a label of 10**6", lambda: metrics.confusion_matrix([0, 10**6], [0, 1]), ValueError,
     r"n_classes must be an integer in \[1, 100000\] .*got 1000001"),
    ("a huge n_classes", lambda: metrics.confusion_matrix([0, 1], [0, 1], 10**6), ValueError, r"n_classes must be an integer in"),
    ("spread of NaN embeddings", lambda: metrics.embedding_spread(np.full((4, 3), np.nan), [0, 0, 1, 1]), ValueError,
     r"z contains 12 NaN or inf"),
    ("spread of nothing", lambda: metrics.embedding_spread(np.zeros((0, 3)), []), ValueError, r"z and y are empty"),
    ("negative label", lambda: metrics.balanced_accuracy([0, -1], [0, 0]), ValueError, r"y_true holds a negative label"),
    # runs and results
    ("empty run folder", lambda: prepare_run_folder("", False, False), ValueError, r"out_dir is empty"),
    ("resume without a folder", lambda: prepare_run_folder(None, True, False), ValueError, r"resume=True needs out_dir"),
    ("results without fields", lambda: check_run_results({"loss": "la"}), ValueError, r"lacks \['dataset'"),
    ("results from the future", lambda: check_run_results({"schema_version": 99}), ValueError,
     r"schema_version 99; this elm_lite reads up to"),
    ("speed ladder with 0 epochs", lambda: speed_ladder(None, epochs=0), ValueError, r"epochs must be an integer >= 1, got 0"),
    ("train an unknown method", lambda: train_cifar(None, "focal"), ValueError, r"unknown method 'focal'"),
]


@pytest.mark.parametrize("call,error,message", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input(call, error, message):
    if error is None:  # an edge case with a sensible result
        assert call()
        return
    with pytest.raises(error, match=message):
        call()


def test_counts_keep_full_precision():
    loss = L.LogitAdjustedLoss([1, 1e-300])
    assert loss.counts[1].item() == 1e-300


def test_a_folder_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"out_dir .*file exists and is not a folder"):
        prepare_run_folder(tmp_path / "file", False, False)


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Sends a 1 MB response one byte every 0.2 s (a server that never quite stops)."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(10**6))
        self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def test_a_trickling_download_hits_its_deadline(tmp_path):
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Trickle) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        start = time.monotonic()
        with pytest.raises(TimeoutError, match=r"took longer than 1 s .*bytes received"):
            fetch_url(f"http://127.0.0.1:{server.server_address[1]}/x", tmp_path / "x", deadline_s=1.0, progress=False)
        assert time.monotonic() - start < 5
        server.shutdown()


# ----------------------------------------------------------------------------- the CLI: one line, exit code 2


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    np.savez(folder / "ok.npz", **fake_cifar(10, n_per_class=30, n_test_per_class=5))
    np.savez(folder / "float.npz", **_images(x_train=_images()["x_train"] / 255.0))
    (folder / "truncated.npz").write_bytes((folder / "ok.npz").read_bytes()[:5000])
    (folder / "a_file").write_text("not a folder")
    return folder


TRAIN = ["train", "--model", "small_cnn", "--epochs", "1", "--batch-size", "32", "--rho", "10"]
CLI_CASES = [
    ("seed -1", ["--seed", "-1"], r"--seed: must be >= 0 and <= 4294967295, got -1"),
    ("seed too large", ["--seed", str(2**32)], r"--seed: must be >= 0 and <= 4294967295"),
    ("data seed -1", ["--data-seed", "-1"], r"--data-seed: must be >= 0"),
    ("checkpoint every 0", ["--checkpoint-every", "0"], r"--checkpoint-every: must be >= 1, got 0"),
    ("epochs 0", ["--epochs", "0"], r"--epochs: must be >= 1, got 0"),
    ("epochs not a number", ["--epochs", "ten"], r"--epochs: expected an integer, got 'ten'"),
    ("lr 0", ["--lr", "0"], r"--lr: must be > 0, got 0"),
    ("lr nan", ["--lr", "nan"], r"--lr: must be > 0, got nan"),
    ("weight decay negative", ["--weight-decay", "-1"], r"--weight-decay: must be >= 0"),
    ("decay-at garbage", ["--decay-at", "a,b"], r"--decay-at: expected comma-separated numbers"),
    ("decay lists of other lengths", ["--decay-at", "0.5"], r"decay_at=\(0.5,\) is out of range: .*one per decay_to"),
    ("model vgg", ["--model", "vgg"], r"model='vgg' is out of range: it must be one of"),
    ("rho 0.5", ["--rho", "0.5"], r"--rho: must be >= 1, got 0.5"),
    ("device tpu", ["--device", "tpu"], r"device='tpu' is not a device"),
    ("empty out", ["--out", ""], r"--out is empty"),
    ("resume and overwrite", ["--resume", "--overwrite"], r"--resume continues a run and --overwrite starts it over"),
    ("unknown loss", ["--loss", "focal"], r"--loss: invalid choice: 'focal'"),
    ("missing npz", ["--npz", "{dir}/none.npz"], r"npz='.*none.npz' does not exist"),
    ("truncated npz", ["--npz", "{dir}/truncated.npz"], r"npz='.*truncated.npz' is not a readable .npz file .*truncated"),
    ("float images", ["--npz", "{dir}/float.npz"], r"x_train must be uint8 pixels in \[0, 255\]"),
    ("out is a file", ["--out", "{dir}/a_file"], r"out_dir .*a_file exists and is not a folder"),
    ("5 classes as CIFAR-100", ["--dataset", "cifar100-lt"], r"y_train has no example of class\(es\) \[10, 11"),
]


@pytest.mark.parametrize("extra,message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_option_is_one_line_and_exit_2(npz, tmp_path, capsys, extra, message):
    extra = [a.replace("{dir}", str(npz)) for a in extra]
    argv = TRAIN + ["--npz", str(npz / "ok.npz"), "--out", str(tmp_path / "run")] + extra
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "Traceback" not in err and "error:" in err.strip().splitlines()[-1]
    assert __import__("re").search(message, err), err


def test_cli_refuses_to_overwrite_and_to_resume_another_run(npz, tmp_path, capsys):
    run = TRAIN + ["--npz", str(npz / "ok.npz"), "--out", str(tmp_path / "run")]
    main(run)
    for extra, message in (([], r"already holds a run .*--resume.*--overwrite"),
                           (["--resume", "--loss", "ce"], r"different run; it differs in .*method"),
                           (["--resume", "--epochs", "2"], r"epochs: checkpoint 1, this run 2")):
        with pytest.raises(SystemExit) as stop:
            main(run + extra)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "Traceback" not in err and __import__("re").search(message, err), err
    main(run + ["--overwrite", "--loss", "ce"])
    assert '"loss": "ce"' in (tmp_path / "run" / "results.json").read_text()


def test_cli_resume_without_a_checkpoint_says_it_starts_fresh(npz, tmp_path):
    with pytest.warns(UserWarning, match=r"resume: no checkpoint in .*new; starting a fresh run"):
        main(TRAIN + ["--npz", str(npz / "ok.npz"), "--out", str(tmp_path / "new"), "--resume"])


def test_cli_bench_epochs_0(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["bench", "--epochs", "0"])
    assert stop.value.code == 2 and "--epochs: must be >= 1, got 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- tables, run folders, exercise checks,
# apps and shipped data, notebook parameters: each case refused with its message, or a sensible result


@functools.cache
def _sweeps():
    from elm_lite.results import load_results
    return load_results("workshop_sweeps.npz")


@functools.cache
def _defaults(notebook: str) -> dict:
    """A notebook's parameters cell, run: its parameters at their defaults."""
    path = next((ROOT / "notebooks").glob(f"{notebook}*.ipynb"))
    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    values = {}
    exec(cell.source, {}, values)
    return values


def _params(notebook: str, **change):
    return check_parameters(notebook, {**_defaults(notebook), **change})


def _panel(view: str, value):
    return getattr(widgets, f"{view}_panel_view")(value, sweeps=_sweeps())


MORE_API_CASES = [
    # tables
    ("table: a method twice", lambda: train_table(None, ["la", "la"], [0], "unused"), ValueError,
     r"methods repeat in \['la', 'la'\]; each run of a table is one method and one seed, name each once"),
    ("table: a seed twice", lambda: train_table(None, ["la"], [1, 1], "unused"), ValueError, r"seeds repeat in \[1, 1\]"),
    # apps and shipped data
    ("shipped results: a path outside", lambda: load_results("../results.py"), ValueError,
     r"name='../results.py' is not a shipped results file; load_results reads one of \['cifar10_lt_cpu.json'"),
    ("shipped results: the folder's README", lambda: load_results("README.md"), ValueError,
     r"name='README.md' is not a shipped results file"),
    ("shipped results: not a name", lambda: load_results(None), ValueError, r"name=None is not a shipped results file"),
    ("shipped results: a shipped name", lambda: "runs" in load_results("cifar_lt_gpu.json"), None, None),
    ("imbalance panel: NaN", lambda: _panel("imbalance", float("nan")), ValueError,
     r"^rho must be a number in \[1, \d+\] \(the precomputed grid: 1, .*\), got nan\.$"),
    ("imbalance panel: text", lambda: _panel("imbalance", "100"), ValueError, r"^rho must be a number in .*got '100'"),
    ("imbalance panel: beyond the grid", lambda: _panel("imbalance", 1e6), ValueError, r"^rho must be .*got 1000000.0"),
    ("margin panel: inf", lambda: _panel("margin", float("inf")), ValueError, r"^tau must be a number in \[0, .*got inf"),
    ("margin panel: negative tau", lambda: _panel("margin", -1), ValueError, r"^tau must be a number in .*got -1\."),
    ("tightening panel: a bool", lambda: _panel("tightening", True), ValueError, r"^lam must be a number .*got True"),
    ("methods panel: unknown measure", lambda: _panel("methods", "accuracy"), ValueError,
     r"^measure must be one of \['balanced_accuracy', .*\], got 'accuracy'"),
    ("methods panel: a number", lambda: _panel("methods", 0), ValueError, r"^measure must be one of .*got 0\."),
    ("imbalance panel: between grid points", lambda: _panel("imbalance", 99.0)["rho"] in _sweeps()["rhos"], None, None),
    # notebook parameters
    ("parameters: papermill -r SMOKE False", lambda: _params("01", SMOKE="False"), ValueError,
     r"parameter SMOKE must be True or False, got 'False' \(str\)\. papermill's -r passes text; pass it with -p"),
    ("parameters: N_EVAL 0, under its own name", lambda: _params("02", N_EVAL=0), ValueError,
     r"^parameter N_EVAL must be an integer >= 1, got 0 \(int\)\.$"),
    ("parameters: RHO NaN", lambda: _params("02", RHO=float("nan")), ValueError,
     r"parameter RHO must be a finite number >= 1, got nan"),
    ("parameters: EPOCHS as text", lambda: _params("03", EPOCHS="30"), ValueError,
     r"parameter EPOCHS must be an integer >= 1, got '30' \(str\)\. papermill's -r"),
    ("parameters: an empty sweep", lambda: _params("04", SWEEP_LAMS=[]), ValueError,
     r"parameter SWEEP_LAMS must be a non-empty list of numbers in \[0, 100\], got \[\]"),
    ("parameters: temperature 0", lambda: _params("04", TEMPERATURE=0.0), ValueError,
     r"parameter TEMPERATURE must be a finite number >= 0.001"),
    ("parameters: an unknown loss", lambda: _params("06", LOSS="focal"), ValueError,
     r"parameter LOSS must be one of \['ce', 'la', .*\], got 'focal'"),
    ("parameters: EPOCHS None is allowed", lambda: _params("06", EPOCHS=None) is None, None, None),
    ("parameters: a bool as a seed", lambda: _params("05", SEED=True), ValueError,
     r"parameter SEED must be an integer in \[0, 2\*\*32\), got True \(bool\)"),
    ("parameters: one missing", lambda: check_parameters("workshop", {"SMOKE": True}), ValueError,
     r"parameter RECOMPUTE is missing: the notebook's parameters cell defines it"),
    ("parameters: an unknown notebook", lambda: check_parameters("99", {}), ValueError,
     r"notebook must be one of \['01', .*'workshop'\], got '99'"),
]


@pytest.mark.parametrize("call,error,message", [c[1:] for c in MORE_API_CASES], ids=[c[0] for c in MORE_API_CASES])
def test_more_api_bad_input(call, error, message):
    test_api_bad_input(call, error, message)


def _stuck(m):
    i = 0
    while i < 3:
        pass


def _leaves(m):
    sys.exit("bye")


def _fills(m):
    m[m.sum(1) == 0] = 1
    return solutions.balanced_error(m)


CHECK_CASES = [  # a learner's function for exercise 01.1 (balanced error from a confusion matrix)
    ("returns None", lambda m: None, r"^your function returned None -- did you forget `return`\? Expected numbers"),
    ("returns the right number as text", lambda m: str(solutions.balanced_error(m)),
     r"^your function returned str '0\.\d+'; return a number or an array of numbers, not text\."),
    ("returns a list of text", lambda m: [str(solutions.balanced_error(m))], r"returned list \['0\.\d+'\]; .*not text"),
    ("returns a dict", lambda m: {"error": 0.5}, r"^your function returned dict \{'error': 0\.5\}; return a number"),
    ("returns a complex number", lambda m: 0.5 + 0j, r"returned complex \(0\.5\+0j\); return a number"),
    ("returns the wrong shape", lambda m: np.zeros(3), r"^your function returned shape \(3,\), expected \(\)\."),
    ("never returns", _stuck, r"^your function did not return within 1 s \(line \d+ of _stuck: while i < 3:\): an endless"),
    ("calls sys.exit", _leaves, r"^your function called sys.exit\('bye'\) \(SystemExit\) \(line \d+ of _leaves: "
                                r"sys.exit\(\"bye\"\)\); a function returns its answer"),
    ("raises", lambda m: m.reshape(7), r"^your function raised ValueError: cannot reshape .*\(line \d+ of <lambda>: "),
    ("changes its input", _fills, r"^your function changed its input m in place; work on a copy"),
    ("is not a function", 0.5, r"^pass your function itself \(e.g. check\(my_function\), no parentheses\); got float"),
    ("the reference solution", solutions.balanced_error, None),
]


@pytest.mark.parametrize("fn,message", [c[1:] for c in CHECK_CASES], ids=[c[0] for c in CHECK_CASES])
def test_exercise_check_bad_function(fn, message, monkeypatch, capsys):
    monkeypatch.setattr(exercises, "DEADLINE_S", 1.0)
    result = exercises.check_balanced_error(fn)
    assert result.passed == (message is None)
    assert message is None or re.search(message, result.message), result.message
    assert capsys.readouterr().out.startswith("PASSED" if message is None else "NOT YET")


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _lock(tmp, pid, host=None, text=None):
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "run.lock").write_text(text if text is not None else
                                  json.dumps({"pid": pid, "host": host or socket.gethostname(), "since": "today",
                                              "command": "elm-lite train"}))
    return tmp


def _damaged_results(tmp, text):
    (tmp / "la-s0").mkdir()
    (tmp / "la-s0" / "results.json").write_text(text)
    return tmp


TABLE_DATA = load_cifar_lt("cifar10", rho=5, arrays=fake_cifar(n_classes=10, n_per_class=12, seed=0))
FOLDER_CASES = [  # (id, set up the folder and call, error, message); {tmp} in a message: the folder
    ("lock: held by a live process", lambda tmp: train_cifar(None, out_dir=_lock(tmp, 1)), RunFolderLocked,
     r"^run folder {tmp} is in use by process 1 on .* \(since today: elm-lite train\); wait for it to finish"),
    ("lock: left by a dead process", lambda tmp: train_cifar(None, out_dir=_lock(tmp, _dead_pid())), RunFolderLocked,
     r"^run folder {tmp} has a stale lock: process \d+ on .* is no longer running\. If no other run uses this "
     r"folder, delete {tmp}/run.lock and run again \(--resume continues its checkpoint\)\.$"),
    ("lock: held on another host", lambda tmp: train_cifar(None, out_dir=_lock(tmp, _dead_pid(), "gpu-node-7")),
     RunFolderLocked, r"is in use by process \d+ on gpu-node-7"),
    ("lock: a damaged lock file", lambda tmp: train_cifar(None, out_dir=_lock(tmp, 0, text="{")), RunFolderLocked,
     r"^run folder {tmp} has a damaged lock file {tmp}/run.lock; if no run uses this folder, delete it"),
    ("lock: a table's run held", lambda tmp: train_table(TABLE_DATA, ["ce", "la"], [0], _lock(tmp / "la-s0", 1).parent,
                                                        device="cpu"), RunFolderLocked,
     r"^run folder {tmp}/la-s0 is in use by process 1"),
    ("table: a truncated results.json", lambda tmp: train_table(TABLE_DATA, ["la"], [0], _damaged_results(tmp, '{"a'),
                                                               device="cpu"), ValueError,
     r"^{tmp}/la-s0/results.json is damaged \(Unterminated string .*\); delete it to train that run again, or start "
     r"the table over with overwrite=True \(--overwrite\)\.$"),
    ("table: a results.json of something else", lambda tmp: train_table(TABLE_DATA, ["la"], [0], _damaged_results(
        tmp, "[1, 2]"), device="cpu"), ValueError, r"^{tmp}/la-s0/results.json must be a JSON object"),
]


@pytest.mark.parametrize("call,error,message", [c[1:] for c in FOLDER_CASES], ids=[c[0] for c in FOLDER_CASES])
def test_run_folder_bad_state(call, error, message, tmp_path):
    with pytest.raises(error, match=message.replace("{tmp}", re.escape(str(tmp_path)))):
        call(tmp_path)


@pytest.mark.parametrize("argv,message", [
    (["--losses", "la,la"], r"--losses: methods repeat in 'la,la'; each run needs its own method and seed"),
    (["--losses", "la,ce,la", "--separate"], r"--losses: methods repeat in 'la,ce,la'"),
])
def test_cli_table_repeated_methods(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["table", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and re.search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_cli_damaged_results_is_one_line_naming_the_file(npz, tmp_path, capsys):
    _damaged_results(tmp_path, '{"dataset": "cifar10", "recipe": {"lr')
    with pytest.raises(SystemExit) as stop:
        main(["table", "--npz", str(npz / "ok.npz"), "--rho", "10", "--losses", "la", "--seeds", "0", "--model",
              "small_cnn", "--epochs", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {tmp_path}/la-s0/results.json is damaged (Unterminated string") and "--overwrite" in err[0]
