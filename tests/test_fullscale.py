"""Full-scale machinery on CPU with generated images: recipe, CLI, checkpoints and resume."""
import json

import numpy as np
import pytest
import torch

from elm_lite.cli import main
from elm_lite.engine.checkpoints import load_checkpoint
from elm_lite.engine.cifar import fake_cifar, load_cifar_lt
from elm_lite.engine.fullscale import lr_schedule, summarize_runs, train_cifar
from elm_lite.engine.ladder import ladder_table, speed_ladder

pytestmark = pytest.mark.slow   # whole runs, subprocesses: make check leaves these out

TINY = dict(model="small_cnn", epochs=4, batch_size=32, lr=0.05, projection_dim=16)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "fake.npz"
    np.savez(path, **fake_cifar(10, n_per_class=40, n_test_per_class=10))
    return path


@pytest.fixture(scope="module")
def data(npz):
    return load_cifar_lt("cifar10", rho=10, npz=npz)


def test_standard_schedule():
    recipe = dict(epochs=200, warmup_epochs=5, decay_at=(0.8, 0.9), decay_to=(0.01, 0.0001))
    lr = [lr_schedule(recipe, e) for e in range(1, 201)]
    assert lr[0] == pytest.approx(0.2) and lr[4] == 1.0 and lr[159] == 1.0
    assert lr[160] == 0.01 and lr[179] == 0.01 and lr[180] == 0.0001 and lr[199] == 0.0001


def test_run_writes_results_and_improves_over_chance(data, tmp_path):
    results = train_cifar(data, "la", out_dir=tmp_path, progress=False, **{**TINY, "epochs": 6})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["balanced_accuracy"] == results["balanced_accuracy"] > 0.3  # chance is 0.1
    for key in ("per_class_accuracy", "shot_accuracy", "per_class_spread", "seconds_per_epoch", "hardware", "versions"):
        assert key in saved
    assert len(saved["per_class_spread"]) == 10 and (tmp_path / "embeddings.npz").exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_margin_summary_gives_split_means_and_extremes_not_a_ratio():
    """Margins can be negative or zero: a few / many ratio of them would mean nothing (issue 31)."""
    from elm_lite.engine.fullscale import margin_summary
    out = margin_summary(np.array([0.3, -0.1, 0.2, np.nan]), [500, 50, 10, 5])   # many, medium, few, few (absent)
    assert out == pytest.approx({"many": 0.3, "medium": -0.1, "few": 0.2, "min": -0.1, "max": 0.3})
    assert all(np.isnan(v) for v in margin_summary(np.full(3, np.nan), [500, 50, 10]).values())


def test_elm_run_uses_two_views_and_a_projection(data, tmp_path):
    results = train_cifar(data, "elm", progress=False, **{**TINY, "epochs": 1})
    assert np.isfinite(results["history"]["loss"][0])
    # geometry where the contrastive term acts (the projection) beside the backbone's
    assert len(results["per_class_projection_spread"]) == len(results["per_class_projection_margin"]) == 10
    assert set(results["projection_margin"]) == set(results["margin"]) == {"many", "medium", "few", "min", "max"}
    assert "projection_spread" not in train_cifar(data, "la", progress=False, **{**TINY, "epochs": 1})
    strong = train_cifar(data, "elm", progress=False, **{**TINY, "epochs": 1, "view_augment": "strong"})
    assert strong["recipe"]["view_augment"] == "strong" and np.isfinite(strong["history"]["loss"][0])
    with pytest.raises(ValueError, match="view_augment"):
        train_cifar(data, "elm", progress=False, **{**TINY, "epochs": 1, "view_augment": "simclr"})


def test_interrupted_run_resumes_to_the_same_result(data, tmp_path):
    full = train_cifar(data, "la", out_dir=tmp_path / "full", checkpoint_every=2, progress=False, **TINY)
    # "kill" the same 4-epoch run right after its epoch-2 checkpoint
    def kill_after_epoch_2(epoch, *_):
        if epoch == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_cifar(data, "la", out_dir=tmp_path / "cut", checkpoint_every=2, progress=False,
                    on_epoch_end=kill_after_epoch_2, **TINY)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 2
    resumed = train_cifar(data, "la", out_dir=tmp_path / "cut", checkpoint_every=2, resume=True, progress=False, **TINY)
    assert resumed["history"]["epoch"] == [1, 2, 3, 4]
    np.testing.assert_allclose(resumed["history"]["loss"], full["history"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(resumed["per_class_accuracy"], full["per_class_accuracy"])


def test_truncated_checkpoint_is_detected(data, tmp_path):
    train_cifar(data, "la", out_dir=tmp_path, checkpoint_every=1, progress=False, **{**TINY, "epochs": 1})
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(ValueError, match="damaged or incomplete"):
        train_cifar(data, "la", out_dir=tmp_path, resume=True, progress=False, **TINY)


def test_cli_train(npz, tmp_path, capsys):
    main(["train", "--dataset", "cifar10-lt", "--rho", "10", "--npz", str(npz), "--method", "ldam-drw",
          "--model", "small_cnn", "--epochs", "2", "--batch-size", "32", "--out", str(tmp_path / "run")])
    assert "balanced accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "results.json").read_text())["method"] == "ldam-drw"


@pytest.mark.parametrize("argv,message", [
    (["train", "--dataset", "imagenet-lt", "--out", "x"], "invalid choice"),
    (["train", "--method", "mixup", "--out", "x"], "invalid choice"),   # focal is a method now (issue 34)
])
def test_cli_rejects_unknown_names(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_cli_bad_data_leaves_nothing_behind(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        main(["train", "--rho", "0.5", "--npz", "missing.npz", "--out", str(out)])
    assert stop.value.code == 2 and "--rho: must be >= 1, got 0.5" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["train", "--root", str(tmp_path / "none"), "--out", str(out)])
    assert stop.value.code == 2 and "cifar-10-python.tar.gz" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_loss_and_recipe_entries(data):
    with pytest.raises(ValueError, match="unknown method 'mixup'"):
        train_cifar(data, "mixup", progress=False)
    with pytest.raises(ValueError, match="unknown recipe entries"):
        train_cifar(data, "la", progress=False, momentum=0.5)


def test_speed_ladder_runs_on_cpu(data):
    ladder = speed_ladder(data, device="cpu", epochs=1, model="small_cnn", batch_size=32, run_epochs=10)
    assert [r["rung"].split()[0] for r in ladder["rows"]] == ["DataLoader,", "GPU-resident", "+", "+", "ELM"]
    for row in ladder["rows"]:
        if "error" not in row:  # run_s extrapolates the first epoch plus nine steady ones
            assert row["run_s"] == pytest.approx(row["first_epoch_s"] + 9 * row["steady_s_per_epoch"])
    table = ladder_table(ladder)
    assert table.count("\n") == 6 and "DataLoader" in table and "compile" in table and "ELM" in table


def test_summarize_runs(data):
    runs = [train_cifar(data, method, seed=s, progress=False, **{**TINY, "epochs": 1})
            for method in ("ce", "la") for s in (0, 1)]
    table = summarize_runs(runs)
    lines = table.splitlines()
    assert len(lines) == 4 and "ce" in lines[1] and "la" in lines[2] and " 2 " in lines[1]
    ce = [100 * r["balanced_accuracy"] for r in runs if r["method"] == "ce"]    # ± is the sample std (ddof = 1)
    assert f"{np.mean(ce):9.1f} ± {np.std(ce, ddof=1):3.1f}" in lines[1] and "ddof = 1" in lines[3]


@pytest.mark.parametrize("change,field", [
    ({"batch_size": 16}, "batch_size"),
    ({"method": "ce"}, "method"),                    # the la -> ce
    ({"method": "ldam-drw", "first": "ldam"}, "method"),
    ({"method": "supcon-la", "first": "elm"}, "method"),
    ({"epochs": 3}, "epochs"),                       # the schedule depends on the number of epochs
    ({"lr": 0.02}, "lr"),
    ({"weight_decay": 0.0}, "recipe"),
    ({"seed": 1}, "seed"),
    ({"data_seed": 1}, "data_seed"),
    ({"data": "other"}, "data_sha256"),              # another npz of the same size
])
def test_resume_refuses_a_checkpoint_of_another_run(data, tmp_path, change, field):
    """Run identity: any difference in what is trained is refused, naming the differing field."""
    change = dict(change)
    first, method = change.pop("first", "la"), change.pop("method", None)
    seed, data_seed, other = change.pop("seed", 0), change.pop("data_seed", None), change.pop("data", None)
    train_cifar(data, first, out_dir=tmp_path, checkpoint_every=1, progress=False, **{**TINY, "epochs": 2})
    again = data
    if data_seed is not None:
        again = load_cifar_lt("cifar10", rho=10, seed=data_seed, arrays=fake_cifar(10, n_per_class=40))
    if other is not None:
        again = load_cifar_lt("cifar10", rho=10, arrays=fake_cifar(10, n_per_class=40, seed=7))
    with pytest.raises(ValueError, match=f"different run.*{field}"):
        train_cifar(again, method or first, out_dir=tmp_path, resume=True, seed=seed, progress=False,
                    **{**TINY, "epochs": 2, **change})


def test_every_recipe_entry_has_its_cli_flag():
    from elm_lite.cli import RECIPE_FLAGS
    from elm_lite.recipes import CIFAR_RECIPE
    assert set(RECIPE_FLAGS) == set(CIFAR_RECIPE)


def test_run_folder_is_never_overwritten_silently(data, tmp_path):
    train_cifar(data, "la", out_dir=tmp_path, progress=False, **{**TINY, "epochs": 1})
    with pytest.raises(ValueError, match="already holds a (finished )?run.*--resume.*--overwrite"):
        train_cifar(data, "la", out_dir=tmp_path, progress=False, **{**TINY, "epochs": 1})
    def stop_early(*_):  # the old run's results must not survive a new run that stops early
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_cifar(data, "ce", out_dir=tmp_path, overwrite=True, progress=False, on_epoch_end=stop_early,
                    **{**TINY, "epochs": 2})
    assert not (tmp_path / "results.json").exists()
    again = train_cifar(data, "ce", out_dir=tmp_path, overwrite=True, progress=False, **{**TINY, "epochs": 1})
    assert again["method"] == "ce" and load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    with pytest.warns(UserWarning, match="starting a fresh run"):
        train_cifar(data, "la", out_dir=tmp_path / "new", resume=True, progress=False, **{**TINY, "epochs": 1})
    with pytest.raises(ValueError, match="out_dir is empty"):
        train_cifar(data, "la", out_dir="", progress=False, **{**TINY, "epochs": 1})


def test_finished_run_resumed_with_fewer_epochs_is_refused(data, tmp_path):
    train_cifar(data, "la", out_dir=tmp_path, progress=False, **{**TINY, "epochs": 2})
    with pytest.raises(ValueError, match="epochs: checkpoint 2, this run 1"):
        train_cifar(data, "la", out_dir=tmp_path, resume=True, progress=False, **{**TINY, "epochs": 1})


def test_collect_tool_gathers_a_runs_tarball(data, tmp_path):
    """tools/collect_gpu_results.py: the device check's runs.tar.gz -> the two files notebook 06 reads."""
    import subprocess
    import sys
    import tarfile
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    runs = tmp_path / "runs"
    for method in ("la", "elm"):
        train_cifar(data, method, out_dir=runs / f"{method}_s0", progress=False, **{**TINY, "epochs": 1})
    (runs / "ladder").mkdir()
    ladder = {"setup": "tiny", "run_epochs": 200,
              "rows": [{"rung": "a", "first_epoch_s": 2.0, "steady_s_per_epoch": 1.0, "run_s": 201.0}]}
    (runs / "ladder" / "ladder.json").write_text(json.dumps(ladder))
    with tarfile.open(tmp_path / "runs.tar.gz", "w:gz") as tar:
        for p in sorted(runs.glob("*/*")):
            if p.name in ("results.json", "embeddings.npz", "ladder.json"):
                tar.add(p, arcname=str(p.relative_to(runs)))
    out = tmp_path / "out"
    out.mkdir()
    tool = root / "tools" / "collect_gpu_results.py"
    done = subprocess.run([sys.executable, str(tool), str(tmp_path / "runs.tar.gz"), "--out", str(out)],
                          capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr
    shipped = json.loads((out / "cifar_lt_gpu.json").read_text())
    assert sorted(r["method"] for r in shipped["runs"]) == ["elm", "la"]
    # each run names the full constants of what it trained (its placement and averaging among them)
    assert {r["method_identity"]["constants"].get("placement") for r in shipped["runs"]} == {None, "centroid"}
    # the ladder gains the whole runs' compiled rungs only for compiled runs (these were not)
    assert [r["rung"] for r in shipped["ladder"]["rows"]] == ["a"]
    with np.load(out / "cifar_lt_gpu_embeddings.npz") as f:
        assert sorted(f.files) == ["elm_features", "elm_labels", "la_features", "la_labels"]
        assert len(f["la_features"]) == len(f["la_labels"]) > 0


def test_step_anatomy_benchmark_counts_each_phase():
    """benchmarks/step_anatomy.py: every phase of a step is counted; ELM runs more eager operations."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from step_anatomy import SYNCS, one_step
    la, elm = (one_step(method, torch.device("cpu"), batch_size=16) for method in ("la", "elm"))
    assert la.pop(SYNCS) == 0                               # ELM's, on a CPU: F.one_hot's own checks
    elm.pop(SYNCS)
    assert len(la) == len(elm) == 8 and all(n > 0 for n in la.values())
    eager = lambda t: sum(n for phase, n in t.items() if "compiled" not in phase)  # noqa: E731
    assert eager(elm) > 4 * eager(la)  # the contrastive term and the second view (notebook 06, exercise 4)
    loss = lambda t: sum(n for phase, n in t.items() if "loss" in phase)  # noqa: E731
    assert loss(elm) > eager(elm) / 2  # most of them in the loss


def test_save_atomic_creates_the_folder_and_leaves_no_temporary(tmp_path):
    from elm_lite.engine.runfiles import save_atomic
    target = tmp_path / "new" / "folder" / "results.json"
    save_atomic({"a": 1}, target)
    assert json.loads(target.read_text()) == {"a": 1} and [p.name for p in target.parent.iterdir()] == ["results.json"]


def test_speed_benchmarks_run(tmp_path):
    """benchmarks/minimal_loop.py (the reference for train's speed) and benchmarks/profile_train.py (where
    an epoch's time goes) run end to end on tiny data on the CPU."""
    import sys
    from pathlib import Path

    from elm_lite.engine.cifar import fake_cifar
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import minimal_loop
    import profile_train
    np.savez(tmp_path / "fake.npz", **fake_cifar(n_per_class=300, n_test_per_class=2))
    common = ["--npz", str(tmp_path / "fake.npz"), "--model", "small_cnn", "--device", "cpu"]
    out = minimal_loop.main([*common, "--epochs", "2"])
    assert out["first_epoch_s"] > 0 and out["steady_s_per_epoch"] > 0
    (row,) = profile_train.main([*common, "--methods", "la"])
    assert row["method"] == "la" and row["epoch_wall_s"] > 0


def test_resume_refuses_a_checkpoint_whose_history_another_version_wrote(tmp_path):
    """A checkpoint written before History's fields changed (e.g. val_balanced_accuracy, now
    held_out_balanced_accuracy) is refused by name before anything is loaded, not with a TypeError."""
    from elm_lite.engine.checkpoints import resume_or_start, save_checkpoint
    from elm_lite.models import LinearModel
    from elm_lite.train import History
    model = LinearModel(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gens = [torch.Generator().manual_seed(0)]
    old = {**History().as_dict(), "val_balanced_accuracy": []}
    old.pop("held_out_balanced_accuracy")
    save_checkpoint(tmp_path / "checkpoint.pt", model, opt, gens, 2, [History()], {"epochs": 3})
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    ckpt["histories"] = [old]
    from elm_lite.engine.runfiles import save_atomic
    save_atomic(ckpt, tmp_path / "checkpoint.pt")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"records its history with the fields .*'val_balanced_accuracy'.*another "
                                         r"version wrote it\. Start over"):
        resume_or_start(True, tmp_path / "checkpoint.pt", {"epochs": 3}, model, opt, gens, 1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
