"""The ROAR/KAR benchmark command on a tiny configuration: results, cells recomputed by hand, resume, refusals, errors."""

import json
import shutil
import warnings

import keras
import numpy as np
import pytest

from pgig_tf.cli import roar_benchmark as cli
from pgig_tf.datasets.digits import build_digits_cnn, load_digits_images
from pgig_tf.evaluation.roar import Retrainer, channel_means, modified_images, replaced_pixels
from pgig_tf.files import read_npz
from pgig_tf.validation import SoftmaxOutputWarning

# 2 baselines + 2 methods x 2 kinds x 1 fraction x 2 seeds = 10 trainings of one epoch on 64 digits
TINY = ["--methods", "gradient,random", "--fractions", "30", "--seeds", "2", "--epochs", "1"]
TINY += ["--num-train", "64", "--num-test", "40", "--quiet"]
IN_PROCESS = ["--workers", "0"]  # trained here, so that the trainings can be recomputed (or stood in for) here
# the bookkeeping tests: 2 baselines + 1 method x 2 kinds x 2 fractions x 2 seeds = 10 stand-in trainings
BOOKKEEPING = ["--methods", "random", "--fractions", "70,30", "--seeds", "2", "--num-train", "64", "--num-test", "40"]
BOOKKEEPING += ["--workers", "0", "--quiet"]
CELLS = 10
DATA = {}


def digits():
    if not DATA:
        DATA["data"] = load_digits_images(0)
    return DATA["data"]


def untrained_cnn(args):
    """Stands in for the cached trained CNN: the same architecture with seeded initial weights (no training)."""
    keras.utils.set_random_seed(0)
    return build_digits_cnn(), 0.1, digits()


class StandIn:
    """Stands in for the retraining: an accuracy that depends on the data and the seed; counts the trainings and
    raises after `stop_after` of them."""

    def __init__(self, stop_after=None):
        self.calls, self.stop_after = 0, stop_after

    def accuracy(self, x_train, y_train, x_test, y_test, seed):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt("stopped")
        self.calls += 1
        value = np.abs(x_train).sum() + 3 * np.abs(x_test).sum() + 7 * int(y_train.sum()) + seed
        return int(value * 1000) % 41 / 40


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real run: the CNN retrained (one epoch on 64 digits) for every cell."""
    out = tmp_path_factory.mktemp("tiny")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "explained_model", untrained_cnn)
        results = cli.main(TINY + IN_PROCESS + ["--out", str(out)])
    return out, results


@pytest.fixture
def patched(monkeypatch):
    """use(stop_after) makes the runs use a new `StandIn` (returned) for the retraining."""
    monkeypatch.setattr(cli, "explained_model", untrained_cnn)

    def use(stop_after=None):
        stand_in = StandIn(stop_after)
        monkeypatch.setattr(cli, "make_retrainer", lambda args: stand_in)
        return stand_in

    return use


@pytest.fixture(scope="module")
def bookkeeping_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bookkeeping")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "explained_model", untrained_cnn)
        patch.setattr(cli, "make_retrainer", lambda args: StandIn())
        results = run(out)
    return out, results


def run(out, *extra):
    return cli.main(BOOKKEEPING + ["--out", str(out), *extra])


def copy_of(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished[0], out)
    return out


@pytest.mark.slow  # seconds of whole runs; the default suite stays under 6 minutes
def test_results_hold_every_cell_with_its_summary_and_area(tiny_run):
    out, results = tiny_run
    assert json.loads((out / "results.json").read_text()) == results
    assert results["settings"]["fractions"] == [30] and results["settings"]["seeds"] == [0, 1]
    baseline = results["baseline_accuracy"]
    assert len(baseline["values"]) == 2 and baseline["mean"] == pytest.approx(np.mean(baseline["values"]))
    assert baseline["std"] == pytest.approx(np.std(baseline["values"], ddof=1))
    assert list(results["methods"]) == ["gradient", "random"]
    for r in results["methods"].values():
        for kind in ("roar", "kar"):
            cell = r[kind]["30"]
            assert list(r[kind]) == ["30"] and len(cell["values"]) == 2
            assert all(0 <= v <= 1 and (v * 40) == round(v * 40) for v in cell["values"])  # 40 test digits
            assert cell["mean"] == pytest.approx(np.mean(cell["values"]))
            assert cell["std"] == pytest.approx(np.std(cell["values"], ddof=1))
            assert r[f"{kind}_area"] == pytest.approx(0.3 * (baseline["mean"] + cell["mean"]) / 2, abs=1e-12)
    assert (out / "roar.png").read_bytes()[:4] == b"\x89PNG"
    state = json.loads((out / "checkpoint.json").read_text())
    assert len(state["cells"]) == 10
    assert state["cells"]["gradient/kar/30/1"] == results["methods"]["gradient"]["kar"]["30"]["values"][1]


@pytest.mark.slow  # seconds of whole runs; the default suite stays under 6 minutes
def test_maps_and_cells_match_a_computation_by_hand(tiny_run):
    out, results = tiny_run
    from pgig_tf.analyzers import create_analyzer

    x_train, y_train, x_test, y_test = digits()
    entries, verified = read_npz(out / "maps" / "gradient.npz", "maps", "")
    assert verified and entries["maps"].shape == (1797, 32, 32, 1)
    model = untrained_cnn(None)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftmaxOutputWarning)  # the softmax output is explained on purpose
        direct = create_analyzer("gradient", model).analyze(x_test[:3], y_test[:3])
    np.testing.assert_allclose(entries["maps"][len(x_train) : len(x_train) + 3], direct, rtol=1e-5, atol=1e-7)
    maps = entries["maps"]
    fill = channel_means(x_train[:64])
    retrainer = Retrainer(build_digits_cnn, epochs=1)  # one held model: bit for bit a fresh one (test_roar.py)
    for kind, seed in (("roar", 1), ("kar", 0)):
        # ROAR at 30 % replaces the top 30 %; KAR at 30 % keeps the top 70 % and replaces the rest
        fraction, keep = (0.3, False) if kind == "roar" else (0.7, True)
        train = modified_images(x_train[:64], maps[:64], fraction, keep=keep, fill=fill)
        test = modified_images(x_test[:40], maps[len(x_train) :][:40], fraction, keep=keep, fill=fill)
        assert replaced_pixels(maps[:64], fraction, keep=keep).sum(axis=(1, 2)).tolist() == [307] * 64
        accuracy = retrainer.accuracy(train, y_train[:64], test, y_test[:40], seed)
        assert accuracy == results["methods"]["gradient"][kind]["30"]["values"][seed]
    baseline = retrainer.accuracy(x_train[:64], y_train[:64], x_test[:40], y_test[:40], 1)
    assert baseline == results["baseline_accuracy"]["values"][1]


@pytest.mark.slow  # a few seconds of whole command runs; the default suite keeps its quicker kin
def test_worker_processes_give_the_same_cells_for_any_number_of_workers(tiny_run, tmp_path, monkeypatch):
    """One thread per worker: 1 or 2 workers train alike; the cells stay close to the in-process ones."""
    monkeypatch.setattr(cli, "explained_model", untrained_cnn)
    cells = {}
    for workers in ("1", "2"):
        out = tmp_path / f"workers{workers}"
        cli.main(TINY + ["--workers", workers, "--out", str(out)])
        state = json.loads((out / "checkpoint.json").read_text())
        assert state["settings"]["training_threads"] == "one per worker process"
        cells[workers] = state["cells"]
    assert cells["1"] == cells["2"] and len(cells["1"]) == 10
    in_process = json.loads((tiny_run[0] / "checkpoint.json").read_text())
    assert in_process["settings"]["training_threads"] == "TensorFlow's default, in the main process"
    assert set(in_process["cells"]) == set(cells["1"])
    # other thread counts sum in another order: at most a few of the 40 test digits flip
    assert all(abs(cells["1"][key] - value) <= 3 / 40 for key, value in in_process["cells"].items())
    # a checkpoint of in-process trainings is not resumed by workers (nor the reverse)
    copy = copy_of(tiny_run, tmp_path)
    with pytest.raises(SystemExit, match=r"training_threads"):
        cli.main(TINY + ["--workers", "2", "--out", str(copy)])


def test_a_stopped_run_resumes_without_retraining_a_cell(bookkeeping_run, tmp_path, patched, capsys):
    out = tmp_path / "out"
    stand_in = patched(stop_after=4)
    with pytest.raises(KeyboardInterrupt):
        run(out)
    first = json.loads((out / "checkpoint.json").read_text())["cells"]
    assert len(first) == 4 and stand_in.calls == 4
    assert not (out / "results.json").exists()
    stand_in = patched()
    capsys.readouterr()
    cli.main(BOOKKEEPING[:-1] + ["--out", str(out)])  # not quiet
    assert "resuming: 4 of 10 trainings done" in capsys.readouterr().out
    assert stand_in.calls == CELLS - 4
    expected = (bookkeeping_run[0] / "results.json").read_text()
    assert (out / "results.json").read_text() == expected
    cells = json.loads((out / "checkpoint.json").read_text())["cells"]
    assert len(cells) == CELLS and {key: cells[key] for key in first} == first
    # finished: a restart trains nothing and writes the same results
    stand_in = patched(stop_after=0)
    run(out)
    assert stand_in.calls == 0 and (out / "results.json").read_text() == expected


def test_a_checkpoint_of_other_settings_is_refused_before_any_work(bookkeeping_run, tmp_path, monkeypatch):
    out = copy_of(bookkeeping_run, tmp_path)
    monkeypatch.setattr(cli, "explained_model", lambda args: pytest.fail("work started"))
    with pytest.raises(SystemExit) as stopped:
        run(out, "--seeds", "3")
    message = str(stopped.value)
    assert repr(str(out / "checkpoint.json")) in message and "seeds: [0, 1] there, [0, 1, 2] now" in message
    assert "--fresh" in message


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda text: text[: len(text) // 2], "not valid JSON"),
        (lambda text: text.replace('"random/roar/30/0": ', '"random/roar/30/0": 7, "x": '), "damaged: cell"),
        (lambda text: "[]", "not a checkpoint"),
    ],
)
def test_a_damaged_checkpoint_is_refused_with_its_name(bookkeeping_run, tmp_path, monkeypatch, damage, problem):
    out = copy_of(bookkeeping_run, tmp_path)
    path = out / "checkpoint.json"
    path.write_text(damage(path.read_text()))
    monkeypatch.setattr(cli, "explained_model", lambda args: pytest.fail("work started"))
    with pytest.raises(SystemExit) as stopped:
        run(out)
    assert repr(str(path)) in str(stopped.value) and problem in str(stopped.value)


def test_damaged_or_foreign_maps_are_refused_and_fresh_starts_over(bookkeeping_run, tmp_path, patched):
    out = copy_of(bookkeeping_run, tmp_path)
    maps = out / "maps" / "random.npz"
    raw = bytearray(maps.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    maps.write_bytes(bytes(raw))
    stand_in = patched(stop_after=0)
    with pytest.raises(SystemExit) as stopped:
        run(out)
    assert repr(str(maps)) in str(stopped.value) and "damaged" in str(stopped.value)
    assert "--fresh" in str(stopped.value)
    # maps of another model (the checkpoint gone): refused, naming what differs
    shutil.copy(bookkeeping_run[0] / "maps" / "random.npz", maps)
    (out / "checkpoint.json").unlink()

    def other_model(args):
        keras.utils.set_random_seed(1)
        return build_digits_cnn(), 0.1, digits()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "explained_model", other_model)
        with pytest.raises(SystemExit) as stopped:
            run(out)
    assert repr(str(maps)) in str(stopped.value) and "model_sha256" in str(stopped.value)
    assert stand_in.calls == 0
    stand_in = patched()
    assert run(out, "--fresh") == bookkeeping_run[1]
    assert stand_in.calls == CELLS


def test_quick_and_default_settings():
    quick = cli.parse_args(["--quick"])
    assert quick.methods == ["gradient", "pgig", "random"] and quick.fractions == [30, 70] and quick.seeds == 1
    assert quick.epochs == 10 and quick.replacement == "mean" and quick.num_train is None
    full = cli.parse_args([])
    assert full.methods == list(cli.DEFAULT_METHODS) and len(full.methods) == 12 and "random" in full.methods
    assert full.fractions == [10, 30, 50, 70, 90] and full.seeds == 3 and full.out.endswith("roar")
    mixed = cli.parse_args(["--quick", "--seeds", "2", "--fractions", "12.5,50"])
    assert mixed.seeds == 2 and mixed.fractions == [12.5, 50] and mixed.methods == ["gradient", "pgig", "random"]
    assert cli.fraction_key(12.5) == "12.5" and cli.fraction_key(50) == "50"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--fractions", "0,50"], "(0, 100]"),
        (["--fractions", "50,101"], "(0, 100]"),
        (["--fractions", "ten"], "percentages"),
        (["--fractions", "30,30"], "twice"),
        (["--seeds", "0"], "--seeds must be positive"),
        (["--epochs", "0"], "--epochs must be positive"),
        (["--num-train", "0"], "--num-train must be positive"),
        (["--methods", "gradient,no_such"], "unknown method(s) no_such"),
        (["--methods", "gradient,gradient"], "each once"),
        (["--replacement", "blur"], "invalid choice"),
        (["--workers", "-1"], "--workers must be 0 (in this process) or a positive number of processes, got -1"),
    ],
)
def test_bad_arguments_stop_before_anything_is_written(argv, words, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv + ["--out", str(tmp_path / "out")])
    assert stopped.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_quick_run_of_the_command(tmp_path):
    """The command as documented: --quick with the digits CNN (trained here, under op determinism, and cached)."""
    out = tmp_path / "out"
    results = cli.main(["--quick", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet"] + IN_PROCESS)
    # the baseline with seed 0 is the cached CNN's own training: the same seed, data, hyperparameters and threads
    assert results["baseline_accuracy"]["values"] == [results["model"]["test_accuracy"]]
    assert results["model"]["test_accuracy"] > 0.9 and results["model"]["test_images"] == 359
    assert list(results["methods"]) == ["gradient", "pgig", "random"]
    baseline = results["baseline_accuracy"]["mean"]
    for r in results["methods"].values():
        assert sorted(r) == ["kar", "kar_area", "roar", "roar_area"]
        for kind in ("roar", "kar"):
            cells = [r[kind]["30"], r[kind]["70"]]
            assert all(c["std"] is None and len(c["values"]) == 1 for c in cells)
            assert all(round(c["mean"] * 359) == pytest.approx(c["mean"] * 359) for c in cells)  # 359 test digits
            by_hand = 0.3 * (baseline + cells[0]["mean"]) / 2 + 0.4 * (cells[0]["mean"] + cells[1]["mean"]) / 2
            assert r[f"{kind}_area"] == pytest.approx(by_hand, abs=1e-12)
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["gradient.npz", "pgig.npz", "random.npz"]
    assert (out / "roar.png").read_bytes()[:4] == b"\x89PNG"


class Recording(StandIn):
    """A `StandIn` that keeps the training and test images of every training, in order."""

    def __init__(self):
        super().__init__()
        self.data = []

    def accuracy(self, x_train, y_train, x_test, y_test, seed):
        self.data.append((x_train, x_test))
        return super().accuracy(x_train, y_train, x_test, y_test, seed)


@pytest.mark.slow  # a flag's whole command runs; the default suite stays under 6 minutes
def test_absolute_replaces_the_pixels_of_largest_magnitude(tmp_path, monkeypatch):
    """--absolute: ROAR and KAR rank pixels by |attribution| (the library's absolute=True), not by the signed value."""
    monkeypatch.setattr(cli, "explained_model", untrained_cnn)
    runs = {}
    for flag in ((), ("--absolute",)):
        recording = Recording()
        monkeypatch.setattr(cli, "make_retrainer", lambda args, recording=recording: recording)
        out = tmp_path / ("absolute" if flag else "signed")
        argv = ["--methods", "gradient", "--fractions", "30", "--seeds", "1", "--num-train", "64", "--num-test", "40"]
        results = cli.main(argv + ["--workers", "0", "--quiet", "--out", str(out), *flag])
        assert results["settings"]["absolute"] is bool(flag)
        assert len(recording.data) == 3  # the baseline, then gradient's ROAR and KAR at 30 %
        runs[flag] = recording.data, read_npz(out / "maps" / "gradient.npz", "maps", "")[0]["maps"]
    x_train, _, x_test, _ = digits()
    fill = channel_means(x_train[:64])
    data, maps = runs[("--absolute",)]
    assert (maps < 0).any() and (maps > 0).any()  # signed maps: |map| ranks the pixels otherwise
    for (train, test), (fraction, keep) in zip(data[1:], ((0.3, False), (0.7, True))):
        for images, part in ((train, maps[:64]), (test, maps[len(x_train) :][:40])):
            source = x_train[:64] if images is train else x_test[:40]
            expected = modified_images(source, part, fraction, keep=keep, fill=fill, absolute=True)
            np.testing.assert_array_equal(images, expected)
            changed = np.any(images != source, axis=-1)  # only pixels of the |map| ranking's replaced share
            assert changed.any() and not (changed & ~replaced_pixels(part, fraction, keep=keep, absolute=True)).any()
    signed_train = runs[()][0][1][0]
    np.testing.assert_array_equal(signed_train, modified_images(x_train[:64], maps[:64], 0.3, keep=False, fill=fill))
    assert not np.array_equal(signed_train, data[1][0])  # the two rankings replace other pixels
