"""`dlc train`, `eval` and `predict` as a user runs them: files written, nothing overwritten, bad data
stopped before any output, a diverging run stopped with its cause."""
import json

import numpy as np
import pytest


def test_train_writes_history_checkpoints_and_plot(dlc, tmp_path):
    out = tmp_path / "run"
    rc, stdout, err = dlc("train", "xor", "--set", "hidden=8", "--epochs", "40", "--out", out, "--seed", "1")
    assert rc == 0, err
    for f in ("history.csv", "history.json", "best.npz", "last.npz", "checkpoints/epoch-040.npz"):
        assert (out / f).is_file(), f
    pytest.importorskip("matplotlib")
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    hist = json.loads((out / "history.json").read_text())
    assert len(hist) == 40 and hist[-1]["loss"] < hist[0]["loss"]
    assert "epoch 40/40" in stdout and "best checkpoint" in stdout
    # eval of the best checkpoint reproduces the number printed at the end of training
    rc, ev, err = dlc("eval", "xor", "--set", "hidden=8", "--weights", out / "best.npz")
    assert rc == 0 and ev.split()[1] in stdout.splitlines()[-1]
    rc, pred, err = dlc("predict", "xor", "--set", "hidden=8", "--weights", out / "best.npz", "-o", tmp_path / "p.npy")
    assert rc == 0 and np.load(tmp_path / "p.npy").shape == (4, 1)


def test_existing_output_is_never_overwritten(dlc, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, stdout, err = dlc("train", "xor", "--epochs", "1", "--out", out)
    assert rc == 1 and "already exists" in err and "--force" in err
    assert (out / "keep.txt").read_text() == "mine"
    rc, stdout, err = dlc("train", "xor", "--epochs", "1", "--out", out, "--force")
    assert rc == 0 and not (out / "keep.txt").exists()


def _csv(tmp_path, text):
    p = tmp_path / "d.csv"
    p.write_text(text)
    return p


BAD_DATA = [
    ("wrong-feature-count", lambda t: "xor", "features"),
    ("missing-file", lambda t: str(t / "nope.npz"), "no such file"),
    ("empty-file", lambda t: str(_csv(t, "")), "empty"),
    ("nan-in-inputs", lambda t: str(_csv(t, "\n".join(",".join(["0.5"] * 64 + ["1"]) for _ in range(9)) + "\n" + ",".join(["nan"] * 64 + ["1"]) + "\n")), "NaN"),
    ("label-out-of-range", lambda t: str(_csv(t, "\n".join(",".join(["0.5"] * 64 + [str(i * 7)]) for i in range(10)) + "\n")), "outside"),
    ("float-labels-for-classes", lambda t: str(_csv(t, "\n".join(",".join(["0.5"] * 64 + [f"{i}.5"]) for i in range(10)) + "\n")), "float targets"),
]


@pytest.mark.parametrize("name,spec,needle", BAD_DATA, ids=[b[0] for b in BAD_DATA])
def test_bad_data_stops_before_any_output(dlc, tmp_path, name, spec, needle):
    out = tmp_path / "run"
    rc, stdout, err = dlc("train", "mlp", "--data", spec(tmp_path), "--epochs", "1", "--out", out)
    assert rc == 1, err
    assert "Traceback" not in err and needle.lower() in err.lower(), err
    assert not out.exists()


DIVERGES = """model d(x: f32[B, 2]) -> (y: f32[B, 2]) {
    param w: [2] = 1.0
    y = x * w
    return y
} train {
    loss = sum(log(w))
    optimizer = sgd(lr=0.4)
    batch_size = 4
}
"""


@pytest.mark.parametrize("target", ["reference", "cpu"])
def test_nonfinite_loss_stops_with_its_cause(dlc, tmp_path, target):
    model = tmp_path / "d.dln"
    model.write_text(DIVERGES)
    data = tmp_path / "x.npy"
    np.save(data, np.ones((5, 2), np.float32))  # 4 train examples: one step per epoch
    out = tmp_path / "run"
    rc, stdout, err = dlc("train", model, "--data", data, "--epochs", "5", "--out", out, "--target", target)
    assert rc == 1
    assert "epoch 3" in err and "step 3" in err and "log" in err, err
    assert (out / "last.npz").is_file()  # the last good weights stay


@pytest.mark.slow
def test_train_mlp_on_digits_end_to_end(dlc, tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    rc, stdout, err = dlc("train", "mlp", "--out", out, "--target", "cpu")  # compiled, as users run it
    assert rc == 0, err
    final = stdout.strip().splitlines()[-1]
    acc = float(final.split("accuracy")[1].split()[0])
    assert acc >= 0.97, final  # the default settings in zoo/mlp.dln, seed 0
    rc, ev, err = dlc("eval", "mlp", "--weights", out / "best.npz", "--target", "cpu")
    assert rc == 0 and f"accuracy {acc:.4f}" in ev


def test_ctrl_c_keeps_the_last_checkpoint(dlc, tmp_path, monkeypatch):
    from runtime.model import Model
    calls = {"n": 0}
    real = Model.train_on_batch

    def interrupted(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # the first batch of the third epoch (xor: one batch per epoch)
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(Model, "train_on_batch", interrupted)
    out = tmp_path / "run"
    rc, stdout, err = dlc("train", "xor", "--epochs", "10", "--out", out)
    assert rc == 130 and "interrupted" in err and "last.npz" in err
    assert (out / "last.npz").is_file() and (out / "checkpoints" / "epoch-002.npz").is_file()
    assert not (out / "checkpoints" / "epoch-003.npz").exists()
    assert len(json.loads((out / "history.json").read_text())) == 2


def test_an_interrupted_run_resumes_to_the_same_result(dlc, tmp_path, monkeypatch):
    """Invariant 7: stop a run after 3 of 6 epochs, resume it, and get the same weights as a run that
    was never interrupted (dropout's random numbers, Adam's moments and the shuffling included)."""
    from runtime.model import Model
    args = ["train", "mlp", "--data", "spirals?n=200", "--set", "inputs=2", "--set", "classes=2",
            "--set", "h1=16", "--set", "h2=8", "--batch-size", "32", "--epochs", "6"]
    rc, _, err = dlc(*args, "--out", tmp_path / "straight")
    assert rc == 0, err
    calls = {"n": 0}
    real = Model.train_on_batch

    def interrupted(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3 * 5 + 2:  # 160 train examples / 32 = 5 batches an epoch: stop inside epoch 4
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(Model, "train_on_batch", interrupted)
    rc, _, err = dlc(*args, "--out", tmp_path / "resumed")
    assert rc == 130
    monkeypatch.setattr(Model, "train_on_batch", real)
    rc, out, err = dlc(*args, "--out", tmp_path / "resumed", "--resume")
    assert rc == 0, err
    assert "epoch 4/6" in out and "epoch 1/6" not in out
    with np.load(tmp_path / "straight" / "last.npz") as a, np.load(tmp_path / "resumed" / "last.npz") as b:
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])
    h = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert [r["epoch"] for r in h] == [1, 2, 3, 4, 5, 6]


def test_bad_set_in_train_points_into_the_command_line(dlc, tmp_path):
    rc, out, err = dlc("train", "mlp", "--set", "widht=3", "--out", tmp_path / "run")
    assert rc == 1 and "<command line>:1:21: error[E0130]" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag,value", [("--epochs", "0"), ("--batch-size", "-4"), ("--lr", "abc")])
def test_bad_training_flags(dlc, tmp_path, flag, value):
    rc, out, err = dlc("train", "xor", flag, value, "--out", tmp_path / "run")
    assert rc == 2 and flag in err and "Traceback" not in err and not (tmp_path / "run").exists()
