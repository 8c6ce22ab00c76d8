"""Bad and edge inputs across the API and the CLI: each one is refused with the right exception
and a message that names the argument (or file) and what was expected -- never a silent NaN, a
silently wrong result, a traceback from the CLI, or a hang."""
import http.server
import socketserver
import threading
import time

import numpy as np
import pytest
import torch

import elm_lite as el
from elm_lite import losses as L
from elm_lite import methods, metrics
from elm_lite.cli import main
from elm_lite.data import batch_class_stats, fake_cifar, fetch_url, load_cifar_lt, longtail_counts
from elm_lite.fullscale import check_recipe, prepare_run_folder, resolve_device, speed_ladder, train_cifar
from elm_lite.recipes import drw_epoch
from elm_lite.results import check_run_results

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
    ("ELM lam warm-up", lambda: L.ELMLoss(COUNTS, lam_warmup=-1), ValueError, r"lam_warmup must be an integer >= 0"),
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
    ("fit: checkpoint every 0", lambda: _fit(checkpoint_every=0), ValueError, r"checkpoint_every must be an integer >= 1"),
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
