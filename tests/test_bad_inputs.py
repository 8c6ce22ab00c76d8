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
from elm_lite.engine.loop import fit_at_scale
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
    args = {"x": TOY.x_train, "y": TOY.y_train, "epochs": 2, **kw}
    return el.fit(model, args.pop("x"), args.pop("y"), **args)


def _fit_at_scale(**kw):
    return fit_at_scale(el.MLP(2, 3, hidden=8, embed_dim=4), TOY.x_train, TOY.y_train, epochs=2, progress=False, **kw)


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
     ValueError, r"logits must be a non-empty .*got Tensor of shape \(0, 5\)"),
    ("Balanced Softmax on an empty batch", lambda: L.BalancedSoftmaxLoss(COUNTS)(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)),
     ValueError, r"logits must be a non-empty .*got Tensor of shape \(0, 5\)"),
    ("LDAM on an empty batch", lambda: L.LDAMLoss(COUNTS)(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)),
     ValueError, r"logits must be a non-empty .*got Tensor of shape \(0, 5\)"),
    ("hinge on an empty batch", lambda: L.MulticlassHingeLoss(COUNTS)(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)),
     ValueError, r"logits must be a non-empty .*got Tensor of shape \(0, 5\)"),
    ("hinge margin out of range", lambda: L.MulticlassHingeLoss(COUNTS, margin=20.0), ValueError, r"^margin must be a finite number >= 0 and <= 10, got 20.0"),
    ("hinge n^-1/4 margin out of range", lambda: L.MulticlassHingeLoss(COUNTS, margin=20.0, schedule="n^-1/4"),
     ValueError, r"^margin must be"),
    ("counts reported at full precision", lambda: L.LogitAdjustedLoss([1, -1e-300]), ValueError, r"counts .*-1e-300"),
    ("counts empty", lambda: L.LogitAdjustedLoss([]), ValueError, r"counts must be a 1-D .*at least 2"),
    ("counts with a zero", lambda: L.LogitAdjustedLoss([5, 0]), ValueError, r"counts must be .*all finite and > 0 .*got .*\[5, 0\]"),
    ("tau negative", lambda: L.LogitAdjustedLoss(COUNTS, tau=-1), ValueError, r"^tau must be a finite number >= 0 and <= 10, got -1\."),
    ("SupCon temperature 0", lambda: L.SupConLoss(0.0), ValueError, r"^temperature must be a finite number >= 0.001 and <= 100, got 0.0"),
    ("SupCon averaging", lambda: L.SupConLoss(anchor_average="median"), ValueError, r"anchor_average must be one of"),
    ("margin placement", lambda: L.EmbeddingMarginLoss(COUNTS, placement="middle"), ValueError, r"placement must be one of"),
    ("ELM logit term", lambda: L.ELMLoss(COUNTS, logit="focal"), ValueError, r"logit must be one of \['la', 'ldam'\], got 'focal'"),
    ("post-hoc shape", lambda: L.posthoc_adjust(torch.zeros(3, 4), COUNTS), ValueError, r"logits must be .*shape \(batch, 5\), got Tensor of shape \(3, 4\)"),
    # methods and recipes
    ("unknown method", lambda: methods.get("mixup"), ValueError, r"unknown method 'mixup'; choose one of"),
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
    ("fit_at_scale: optimizer", lambda: _fit_at_scale(optimizer="rmsprop"), ValueError,
     r"optimizer must be one of .*'adam', 'sgd'"),
    ("fit: sampling", lambda: _fit(sampling="balanced"), ValueError, r"sampling must be one of \['uniform', 'class_balanced'\]"),
    ("re-weighting scheme", lambda: L.ReweightedLoss(COUNTS, "sqrt"), ValueError, r"scheme must be one of"),
    ("fit: a view that is no augmentation", lambda: _fit(views=[None, None]), ValueError,
     r"views\[0\] is None; views must hold one augmentation"),
    ("fit_at_scale: views without augmentation", lambda: _fit_at_scale(n_views=2), ValueError,
     r"n_views > 1 needs an augment"),
    ("fit: a model without parameters", lambda: el.fit(_NoParameters(), TOY.x_train, TOY.y_train),
     ValueError, r"has no parameters"),
    ("fit: a diverging loss", lambda: _fit(loss_fn=lambda logits, y: logits.sum() * float("nan")),
     FloatingPointError, r"loss became nan in epoch 1.*lower the learning rate"),
    ("fit: labels beyond the model", lambda: _fit(y=TOY.y_train + 5), ValueError, r"labels must be in \[0, 3\)"),
    ("predict without parameters", lambda: el.predict(_NoParameters(), TOY.x_test[:4]).shape == (4,), None, None),
    # data
    ("rho True", lambda: longtail_counts(100, 5, True), ValueError, r"^rho .* must be a finite number >= 1, got True\. Use rho=1"),
    ("rho below 1", lambda: longtail_counts(100, 5, 0.5), ValueError, r"rho .*>= 1, got 0.5"),
    ("n_max 0", lambda: longtail_counts(0, 5, 10), ValueError, r"n_max must be an integer >= 1"),
    ("negative counts in a batch", lambda: batch_class_stats([10, -5, 3], 4), ValueError,
     r"counts must be .*integer array .*values in \[0, inf\), got .*\[10, -5, 3\]"),
    ("fractional counts in a batch", lambda: batch_class_stats([10, 2.5], 4), ValueError, r"counts must be .*integer array .*got .*values 2.5 to 10"),
    ("batch larger than the data", lambda: batch_class_stats([3, 2], 10), ValueError, r"batch_size must be an integer >= 1 and <= 5, got 10. \(the data hold 5"),
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
    ("balanced accuracy of nothing", lambda: metrics.balanced_accuracy([], []), ValueError, r"y_true must be a non-empty .*got ndarray of shape \(0,\)"),
    ("per-class accuracy of nothing", lambda: metrics.per_class_accuracy([], [], 3), ValueError, r"y_true must be a non-empty"),
    ("lengths differ", lambda: metrics.balanced_accuracy([0, 1], [0]), ValueError, r"y_pred must be .*shape \(2,\).*got .*shape \(1,\)"),
    ("a label of 10**6", lambda: metrics.confusion_matrix([0, 10**6], [0, 1]), ValueError,
     r"n_classes \(inferred from the largest label\) must be an integer >= 1 and <= 100000, got 1000001. Check the "),
    ("a huge n_classes", lambda: metrics.confusion_matrix([0, 1], [0, 1], 10**6), ValueError, r"^n_classes must be an integer >= 1 and <= 100000, got 1000000"),
    ("spread of NaN embeddings", lambda: metrics.embedding_spread(np.full((4, 3), np.nan), [0, 0, 1, 1]), ValueError,
     r"z must be .*finite values \(no NaN or inf\), got .*12 NaN.*did training diverge"),
    ("spread of nothing", lambda: metrics.embedding_spread(np.zeros((0, 3)), []), ValueError, r"y must be a non-empty"),
    ("negative label", lambda: metrics.balanced_accuracy([0, -1], [0, 0]), ValueError, r"y_true must be .*values in \[0, inf\), got .*\[0, -1\]"),
    # runs and results
    ("empty run folder", lambda: prepare_run_folder("", False, False), ValueError, r"out_dir is empty"),
    ("resume without a folder", lambda: prepare_run_folder(None, True, False), ValueError, r"resume=True needs out_dir"),
    ("results without fields", lambda: check_run_results({"method": "la"}), ValueError, r"lacks \['dataset'"),
    ("results from the future", lambda: check_run_results({"schema_version": 99}), ValueError,
     r"schema_version 99; this elm_lite reads up to"),
    ("speed ladder with 0 epochs", lambda: speed_ladder(None, epochs=0), ValueError, r"epochs must be an integer >= 1, got 0"),
    ("train an unknown method", lambda: train_cifar(None, "mixup"), ValueError, r"unknown method 'mixup'"),
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
    ("unknown method", ["--method", "mixup"], r"--method: invalid choice: 'mixup'"),
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
    for extra, message in (([], r"already holds a finished run \(checkpoint.pt, results.json, embeddings.npz\); "
                                r"continue it .*--resume.*--overwrite"),
                           (["--resume", "--method", "ce"], r"different run; it differs in .*method"),
                           (["--resume", "--epochs", "2"], r"epochs: checkpoint 1, this run 2")):
        with pytest.raises(SystemExit) as stop:
            main(run + extra)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "Traceback" not in err and __import__("re").search(message, err), err
    main(run + ["--overwrite", "--method", "ce"])
    assert '"method": "ce"' in (tmp_path / "run" / "results.json").read_text()


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
     r"^parameter N_EVAL must be an integer >= 1 and <= 1000000, got 0 \(int\)\.$"),
    ("parameters: RHO NaN", lambda: _params("02", RHO=float("nan")), ValueError,
     r"parameter RHO must be a finite number >= 1 and <= 1000, got nan"),
    ("parameters: EPOCHS as text", lambda: _params("03", EPOCHS="30"), ValueError,
     r"parameter EPOCHS must be an integer >= 1, got '30' \(str\)\. papermill's -r"),
    ("parameters: an empty sweep", lambda: _params("04", SWEEP_LAMS=[]), ValueError,
     r"parameter SWEEP_LAMS must be a non-empty list of numbers in \[0, 2\], got \[\]"),
    ("parameters: temperature 0", lambda: _params("04", TEMPERATURE=0.0), ValueError,
     r"parameter TEMPERATURE must be a finite number >= 0.05 and <= 1"),
    ("parameters: an unknown method", lambda: _params("06", METHOD="mixup"), ValueError,
     r"parameter METHOD must be one of \['ce', 'la', .*\], got 'mixup'"),
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
    (["--methods", "la,la"], r"--methods: methods repeat in 'la,la'; each run needs its own method and seed"),
    (["--methods", "la,ce,la", "--separate"], r"--methods: methods repeat in 'la,ce,la'"),
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
        main(["table", "--npz", str(npz / "ok.npz"), "--rho", "10", "--methods", "la", "--seeds", "0", "--model",
              "small_cnn", "--epochs", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {tmp_path}/la-s0/results.json is damaged (Unterminated string") and "--overwrite" in err[0]


# ----------------------------------------------------------------------------- reliability round three (issue 32):
# nothing finished is overwritten, no check hangs, nothing silently wrong; each case with what it now answers


def _finished_run(tmp, checkpoint=False):
    """A run folder as a finished run (or a table's run) leaves it: results.json, maybe a checkpoint."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "results.json").write_text('{"method": "la"}')
    if checkpoint:
        (tmp / "checkpoint.pt").write_bytes(b"")
    return tmp


def _app(**sliders):
    """An App whose view is its values (no training): what it computes with is what it shows."""
    import ipywidgets as W
    import plotly.graph_objects as go
    controls = {name: W.FloatSlider(value=low, min=low, max=high) for name, (low, high) in sliders.items()}
    return widgets.App(controls, lambda **v: v, lambda v, widget=False: go.FigureWidget() if widget else go.Figure(),
                       lambda v: str(v))


def _scores(x):   # a predict_fn that returns class scores (N, C) instead of labels
    return np.stack([-x[:, 0], x[:, 0], x[:, 1]], 1)


ROUND_THREE_CASES = [  # (id, call (gets a fresh folder), error or None (a sensible result), message)
    # data loss
    ("train into a table's run folder (results.json only)", lambda tmp: prepare_run_folder(_finished_run(tmp), False,
                                                                                          False),
     ValueError, r"^{tmp} already holds a finished run \(results.json\); start over with overwrite=True "
                 r"\(--overwrite\), or use another folder\.$"),
    ("a finished run whose checkpoint was deleted", lambda tmp: prepare_run_folder(_finished_run(tmp), False, False),
     ValueError, r"already holds a finished run"),
    ("--resume into a table's run folder", lambda tmp: prepare_run_folder(_finished_run(tmp), True, False), ValueError,
     r"^resume: {tmp} holds a finished run \(results.json\) but no checkpoint.pt, so there is nothing to continue"),
    ("--resume of a finished run with its checkpoint", lambda tmp: prepare_run_folder(
        _finished_run(tmp, checkpoint=True), True, False) == tmp, None, None),
    ("--overwrite of a finished run", lambda tmp: not (prepare_run_folder(_finished_run(tmp), False, True)
                                                      / "results.json").exists(), None, None),
    # a crash: values the code cannot build
    ("notebook 02: RHO 1e9", lambda tmp: _params("02", RHO=1e9), ValueError,
     r"^parameter RHO must be a finite number >= 1 and <= 1000, got 1000000000.0"),
    ("an app's view at rho 1e9", lambda tmp: widgets.head_count(500, 1e9), ValueError,
     r"^rho=1e\+09 would need a head class of 1,000,000,000 examples .* at most 100,000: use rho <= 1000"),
    ("notebook 01: N_MAX 1e9", lambda tmp: _params("01", N_MAX=10**9), ValueError,
     r"^parameter N_MAX must be an integer >= 1 and <= 100000"),
    ("notebook 02: TAU 5 (the app's slider ends at 3)", lambda tmp: _params("02", TAU=5.0), ValueError,
     r"^parameter TAU must be a finite number >= 0 and <= 3"),
    ("notebook 04: TEMPERATURE 0.001", lambda tmp: _params("04", TEMPERATURE=0.001), ValueError,
     r"^parameter TEMPERATURE must be a finite number >= 0.05 and <= 1"),
    ("notebook 04: -p SWEEP_LAMS '[0.5]'", lambda tmp: _params("04", SWEEP_LAMS="[0.5]"), ValueError,
     r"got '\[0.5\]' \(str\)\. papermill's -p and -r pass a list as text; pass it as YAML: papermill -y "
     r"\"SWEEP_LAMS: \[0.5\]\"\.$"),
    # apps never clamp
    ("logit_margin_app(tau=5)", lambda tmp: widgets.logit_margin_app(tau=5), ValueError,
     r"^tau must be a number in \[0, 3\] \(the range of this app's tau slider\), got 5; choose a value inside it"),
    ("longtail_app(rho=5000)", lambda tmp: widgets.longtail_app(rho=5000), ValueError,
     r"^rho must be a number in \[1, 1000\] \(the range of this app's rho slider\), got 5000"),
    ("app.update(tau=7)", lambda tmp: _app(tau=(0, 3)).update(tau=7), ValueError, r"^tau must be a number in \[0, 3\]"),
    ("app.update(tau=2.5) computes with 2.5", lambda tmp: _app(tau=(0, 3)).update(tau=2.5) == {"tau": 2.5}, None, None),
    ("a static page's grid value outside the slider", lambda tmp: "Left out: 1 settings the app refuses (margin = 5)"
     in __import__("html").unescape(__import__("elm_lite.static_apps").static_apps.static_app(
         _app(margin=(0, 0.4)), {"margin": [0.1, 5.0]})), None, None),
    # silently wrong
    ("a diverging run (e.g. TEMPERATURE 0.001 trained together)", lambda tmp: _fit(
        loss_fn=lambda logits, y: logits.sum() * float("nan")), FloatingPointError,
     r"lower the learning rate \(lr=.*\), or raise a contrastive term's temperature if it is far below 0.1"),
    ("--decay-at 0.9,0.8", lambda tmp: check_recipe({"decay_at": (0.9, 0.8), "decay_to": (0.0001, 0.01)}), ValueError,
     r"^recipe entry decay_at=\(0.9, 0.8\) is out of range: it must be increasing \(e.g. 0.8,0.9"),
    ("monte_carlo_errors with class scores (N, C)", lambda tmp: el.data.monte_carlo_errors(_scores, TOY, 10),
     ValueError, r"^predict_fn\(x\) must be an integer array of shape \(30,\), got ndarray of shape \(30, 3\), dtype "
                 r"float32.* class scores \(N, C\)\? take their argmax"),
    ("an lr_schedule returning -1", lambda tmp: _fit_at_scale(lr_schedule=lambda epoch: -1), ValueError,
     r"^lr_schedule\(1\) returned -1; it must return a learning-rate multiplier >= 0"),
    ("embedding_spread of all-zero embeddings", lambda tmp: np.isnan(metrics.embedding_spread(
        np.zeros((4, 3)), [0, 0, 1, 1])).all(), None, None),
    ("embedding_margin of all-zero embeddings", lambda tmp: np.isnan(metrics.embedding_margin(
        np.zeros((4, 3)), [0, 0, 1, 1])).all(), None, None),
    ("shot_split with a NaN count", lambda tmp: metrics.shot_split([500, float("nan"), 5]), ValueError,
     r"^train_counts must be .*values in \[0, inf\), got ndarray of shape \(3,\), dtype float64, values 5 to 500, 1 NaN"),
    ("capstone seeds (0, 0)", lambda tmp: __import__("elm_lite.capstone").capstone.logit_toy_rows(TOY, seeds=(0, 0)),
     ValueError, r"^seeds must be distinct \(each seed is one independent run\), got \[0, 0\]"),
    # unhelpful errors, now named with their fix
    ("an npz with an empty split", lambda tmp: load_cifar_lt("cifar10", rho=5, arrays=_images(
        x_test=np.zeros((0, 32, 32, 3), np.uint8), y_test=np.zeros(0, np.int64))), ValueError,
     r"^arrays: the test split is empty \(x_test holds 0 images\)"),
    ("a .npy renamed .npz", lambda tmp: (np.save(tmp / "x.npy", np.zeros(3)), (tmp / "x.npy").rename(tmp / "x.npz"),
                                         load_cifar_lt(npz=tmp / "x.npz")), ValueError,
     r"holds a single array of shape \(3,\) \(a .npy file renamed\?\), not the named arrays \['x_train'"),
    ("rho above the head class's size", lambda tmp: load_cifar_lt("cifar10", rho=1e6, arrays=_images()), ValueError,
     r"^rho=1e\+06 is too large for these data: class 0 \(the head\) has 30 images, .* Use rho <= 30 \(--rho\)"),
    ("a run.lock naming this very process", lambda tmp: train_cifar(None, out_dir=_lock(tmp, __import__("os").getpid())),
     RunFolderLocked, r"^run folder {tmp} has a stale lock: it names process \d+ .*which is this very process's PID, "
                      r"yet this process never took it .*a restarted container"),
    ("a leftover WORLD_SIZE", lambda tmp: _with_env(WORLD_SIZE="2")(
        __import__("elm_lite.engine.fullscale").engine.fullscale.distributed_requested), UserWarning,
     r"WORLD_SIZE=2 is set but this process was not started by torchrun .*training in one process.*--ddp"),
    ("--ddp without torchrun's variables", lambda tmp: _with_env(WORLD_SIZE="2")(
        __import__("elm_lite.engine.fullscale").engine.fullscale.distributed_requested, True), ValueError,
     r"^data-parallel training \(ddp\) needs the environment variables \['RANK', 'MASTER_ADDR', 'MASTER_PORT'\]"),
    ("numpy scalars for epochs, lr, seed, batch_size", lambda tmp: _fit(epochs=np.int64(2), lr=np.float32(0.01),
                                                                     seed=np.int64(0), batch_size=np.int64(16)).epoch
     == [1, 2], None, None),
    ("numpy scalars in a recipe (JSON-safe)", lambda tmp: json.dumps(check_recipe({"epochs": np.int64(3),
                                                                                  "lr": np.float32(0.5)})), None, None),
    ("int32 labels for SupConLoss", lambda tmp: _same_for_int32(L.SupConLoss(0.1), torch.randn(6, 4)), None, None),
    ("int32 labels for ReweightedLoss", lambda tmp: _same_for_int32(L.ReweightedLoss([5, 3, 2]), torch.randn(6, 3)),
     None, None),
]


def _with_env(**env):
    def call(fn, *args):
        import os
        saved = {k: os.environ.get(k) for k in [*env, "TORCHELASTIC_RUN_ID", "RANK", "MASTER_ADDR", "MASTER_PORT"]}
        for k in saved:
            os.environ.pop(k, None)
        os.environ.update(env)
        try:
            return fn(*args)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return call


def _same_for_int32(loss, first):
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return torch.equal(loss(first, y), loss(first, y.int()))


@pytest.mark.parametrize("call,error,message", [c[1:] for c in ROUND_THREE_CASES], ids=[c[0] for c in ROUND_THREE_CASES])
def test_round_three(call, error, message, tmp_path):
    if error is None:
        with __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            assert call(tmp_path)
        return
    expect = pytest.warns if issubclass(error, Warning) else pytest.raises
    with expect(error, match=message.replace("{tmp}", re.escape(str(tmp_path)))):
        call(tmp_path)


TABLE_ARGS = ["--rho", "10", "--model", "small_cnn", "--epochs", "1", "--batch-size", "32"]


def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_train_never_overwrites_a_tables_finished_run(npz, tmp_path, capsys):
    """Data loss 1: `table --methods la --seeds 0 --out R`, then `train --method ce --out R/la-s0`."""
    main(["table", "--npz", str(npz / "ok.npz"), "--methods", "la", "--seeds", "0", "--out", str(tmp_path),
          *TABLE_ARGS])
    before = (tmp_path / "la-s0" / "results.json").read_text()
    train = ["train", "--npz", str(npz / "ok.npz"), "--method", "ce", "--out", str(tmp_path / "la-s0"), *TABLE_ARGS]
    assert "already holds a finished run (results.json, embeddings.npz)" in _cli_error(train, capsys)
    assert "nothing to continue" in _cli_error(train + ["--resume"], capsys)
    assert (tmp_path / "la-s0" / "results.json").read_text() == before
    main(["table", "--npz", str(npz / "ok.npz"), "--methods", "la", "--seeds", "0", "--out", str(tmp_path),
          *TABLE_ARGS])   # the table still takes its run as finished
    assert json.loads((tmp_path / "table.json").read_text())["trained_now"] == []


def _flip_a_weight_byte(checkpoint: Path) -> None:
    """One changed byte inside the largest tensor of a torch zip (stored, so its CRC no longer matches)."""
    import zipfile
    with zipfile.ZipFile(checkpoint) as z:
        entry = max(z.infolist(), key=lambda i: i.file_size)
    data = bytearray(checkpoint.read_bytes())
    start = entry.header_offset + 30 + len(entry.filename.encode()) + int.from_bytes(
        data[entry.header_offset + 28:entry.header_offset + 30], "little")
    data[start + entry.file_size // 2] ^= 0x40
    checkpoint.write_bytes(bytes(data))


def test_a_corrupted_checkpoint_is_refused_and_resume_says_what_it_continues(npz, tmp_path, capsys):
    run = ["train", "--npz", str(npz / "ok.npz"), "--out", str(tmp_path), *TABLE_ARGS]
    main(run)
    capsys.readouterr()
    main(run + ["--resume"])   # a finished run with its checkpoint: continues nothing, and says so
    assert f"resume: continuing {tmp_path}/checkpoint.pt after epoch 1" in capsys.readouterr().err
    _flip_a_weight_byte(tmp_path / "checkpoint.pt")
    assert re.search(r"checkpoint .*checkpoint.pt is damaged: .* fails its CRC check", _cli_error(run + ["--resume"],
                                                                                                   capsys))


def test_two_tables_sharing_out_both_stay_in_table_json(tmp_path):
    for names, overwrite in ((["ce"], False), (["la"], False), (["la"], True)):   # --overwrite clears la's only
        table = train_table(TABLE_DATA, names, [0], tmp_path, device="cpu", model="small_cnn", epochs=1,
                            batch_size=16, progress=False, overwrite=overwrite)
    assert sorted(r["method"] for r in table["runs"]) == ["ce", "la"] and table["from_other_tables"] == ["ce-s0"]
    assert table["trained_now"] == ["la-s0"]
    on_disk = json.loads((tmp_path / "table.json").read_text())
    assert sorted(r["method"] for r in on_disk["runs"]) == ["ce", "la"] and "ce " in on_disk["table"]


def test_a_separate_table_resumes_its_unfinished_run(tmp_path, capfd):
    recipe = dict(device="cpu", model="small_cnn", epochs=2, batch_size=16, progress=False, checkpoint_every=1)
    seen = []

    def stop_after_epoch_1(epoch, model, history):
        seen.append(history.loss[-1])
        raise KeyboardInterrupt   # after epoch 1's checkpoint: an interrupted table

    with pytest.raises(KeyboardInterrupt):
        train_cifar(TABLE_DATA, "la", out_dir=tmp_path / "la-s0", seed=0, on_epoch_end=stop_after_epoch_1, **recipe)
    table = train_table(TABLE_DATA, ["la"], [0], tmp_path, separate=True, **recipe)
    assert f"resume: continuing {tmp_path}/la-s0/checkpoint.pt after epoch 1" in capfd.readouterr().err
    results = json.loads((tmp_path / "la-s0" / "results.json").read_text())
    assert results["history"]["loss"][0] == seen[0] and table["trained_now"] == ["la-s0"]


def test_compile_checkpoints_resume_without_compile_and_back():
    from elm_lite.engine.checkpoints import compile_neutral
    plain = el.MLP(2, 3, hidden=8, embed_dim=4)
    compiled = torch.compile(el.MLP(2, 3, hidden=8, embed_dim=4))   # lazy: nothing compiles until a call
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    plain.load_state_dict(compile_neutral(compiled.state_dict(), plain))
    compiled.load_state_dict(compile_neutral(plain.state_dict(), compiled))
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), compiled.state_dict().values()))


# exercise checks survive a learner's bugs


def _swallows(m):   # a bare except: catches every exception, a deadline's too
    while True:
        try:
            pass
        except:  # noqa: E722
            pass


def _leaves_a_thread(m):
    threading.Thread(target=time.sleep, args=(3600,), name="forgotten").start()
    return solutions.balanced_error(m)


def _ends_the_process(m):
    __import__("os")._exit(0)


@pytest.mark.parametrize("fn,message", [
    (_swallows, r"^your function did not return within 1 s \(line \d+ of _swallows: .*\): an endless loop\?"),
    (_leaves_a_thread, r"^your function left 1 thread\(s\) running \(forgotten\); .*join"),
    (_ends_the_process, r"^your function ended the Python process \(exit status 0\) before returning"),
], ids=["a bare except in an endless loop", "a non-daemon thread left running", "os._exit"])
def test_exercise_checks_survive_learners_bugs(fn, message, monkeypatch):
    monkeypatch.setattr(exercises, "DEADLINE_S", 1.0)
    start = time.monotonic()
    result = exercises.check_balanced_error(fn)
    assert time.monotonic() - start < 1.0 + exercises.GRACE_S + 2
    assert not result.passed and re.search(message, result.message), result.message
    assert [t.name for t in threading.enumerate() if t.name == "forgotten"] == []


def test_an_exercise_check_leaves_the_learners_timer_alone():
    import signal
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30)
        assert exercises.check_balanced_error(solutions.balanced_error).passed
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 20 < remaining <= 30 and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# DDP only when asked, a rendezvous that gives up, SIGTERM honoured while waiting


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _waiting_for_a_peer(tmp_path, npz):
    """`train --ddp` as rank 0 of 2, once it listens for its missing peer (the rendezvous has begun)."""
    import os
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    waiting = subprocess.Popen([sys.executable, "-m", "elm_lite", "train", "--npz", str(npz / "ok.npz"), "--ddp",
                                "--out", str(tmp_path / "run"), *TABLE_ARGS], env=env, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT)
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return waiting
        time.sleep(0.1)
    waiting.kill()
    raise AssertionError("train --ddp never began its rendezvous")


@pytest.mark.slow
def test_a_rendezvous_without_its_peer_gives_up_and_sigterm_ends_it(npz, tmp_path):
    import signal
    waiting = _waiting_for_a_peer(tmp_path, npz)
    time.sleep(1)
    start = time.monotonic()
    waiting.send_signal(signal.SIGTERM)
    waiting.wait(timeout=10)
    assert time.monotonic() - start < 5 and waiting.returncode != 0
    code = ("import sys; from elm_lite.engine import fullscale as f\n"
            "try: f._init_distributed(True, timeout_s=3)\n"
            "except TimeoutError as e: print(e); sys.exit(0)\n")
    import os
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and time.monotonic() - start < 30, done.stderr[-2000:]
    assert re.search(r"data-parallel rendezvous at 127.0.0.1:\d+ failed within 3 s .*are all WORLD_SIZE=2 processes",
                     done.stdout), done.stdout
