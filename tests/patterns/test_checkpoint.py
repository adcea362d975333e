"""fit_patterns checkpoints: resumed exactly with any batch size; other data, model or kind refused; damage detected."""

import json

import keras
import numpy as np
import pytest

from conftest import damaged_copies, flip, set_random_weights
from pgig_tf import fit_patterns
from pgig_tf.files import CHECKSUM_KEY, CorruptFileError
from pgig_tf.model.fingerprint import OtherModelError


def data_of(count, seed=5):
    return np.random.default_rng(seed).normal(0, 1, (count, 9, 9, 2)).astype(np.float32)


def killed_after(data, batch_size, batches):
    """The batches of `data`, until the process is 'killed' before batch number `batches` (0-based)."""
    for index, start in enumerate(range(0, len(data), batch_size)):
        if index == batches:
            raise KeyboardInterrupt("killed")
        yield data[start : start + batch_size]


def interrupted(model, data, path, batch_size, batches, checkpoint_every):
    with pytest.raises(KeyboardInterrupt):
        fit_patterns(
            model,
            killed_after(data, batch_size, batches),
            verbose=False,
            checkpoint=path,
            checkpoint_every=checkpoint_every,
        )
    with np.load(path) as saved:
        return json.loads(str(saved["__pgig_tf_checkpoint__"]))


def assert_patterns_close(got, expected):
    assert list(got) == list(expected)
    for name in expected:
        scale = np.abs(expected[name]).max()
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6 * scale, err_msg=name)


@pytest.mark.parametrize("resume_batch_size", [64, 30, 7, 97])
def test_a_checkpoint_resumed_with_another_batch_size_gives_the_uninterrupted_patterns(
    conv_model, tmp_path, resume_batch_size
):
    # 96 of 150 samples counted in batches of 32; resumed from the array in batches of 64 (the batch
    # 64..127 is split at 96), 30 (split at 96 = 90 + 6), 7 (at 96 = 91 + 5) or 97 (the first batch
    # is split at 96, leaving one sample to count)
    data = data_of(150)
    path = tmp_path / "fit.npz"
    header = interrupted(conv_model, data, path, batch_size=32, batches=4, checkpoint_every=3)
    assert (header["num_samples"], header["batch_size"], header["batches_done"]) == (96, 32, 3)
    resumed = fit_patterns(conv_model, data, batch_size=resume_batch_size, verbose=False, checkpoint=path)
    whole = fit_patterns(conv_model, data, batch_size=50, verbose=False)
    assert resumed.num_samples == whole.num_samples == 150
    assert_patterns_close(resumed, whole)
    # the samples counted were not counted twice: the patterns of the first 96 + the last 54 differ from
    # those of the first 64 + the last 54 (what skipping by batch count would have given)
    dropped = fit_patterns(conv_model, np.concatenate([data[:64], data[96:]]), batch_size=50, verbose=False)
    assert max(np.abs(dropped[n] - whole[n]).max() for n in whole) > 1e-3


def test_a_checkpoint_refuses_other_data_fewer_samples_another_model_or_kind(conv_model, tmp_path):
    data = data_of(60)
    path = tmp_path / "fit.npz"
    interrupted(conv_model, data, path, batch_size=10, batches=5, checkpoint_every=2)  # 40 samples counted
    other = data.copy()
    other[37, 4, 4, 1] += 1.0  # one value among the samples counted
    with pytest.raises(
        ValueError,
        match=r"written for other data: the first 40 samples of this data differ from the "
        r"40 it has counted .* resume it with the same data in the same order",
    ):
        fit_patterns(conv_model, other, batch_size=16, verbose=False, checkpoint=path)
    with pytest.raises(ValueError, match=r"written for other data"):  # same samples, another order
        fit_patterns(conv_model, data[::-1], batch_size=10, verbose=False, checkpoint=path)
    with pytest.raises(ValueError, match=r"has counted 40 samples, but this data holds only 30: it is other data"):
        fit_patterns(conv_model, data[:30], verbose=False, checkpoint=path)
    retrained = set_random_weights(keras.models.clone_model(conv_model), 3)
    with pytest.raises(
        OtherModelError,
        match=r"checkpoint .* was written for another model than .*: layer 'c1' "
        r"weights differ; .*Delete it or use another checkpoint path",
    ):
        fit_patterns(retrained, data, verbose=False, checkpoint=path)
    with pytest.raises(
        ValueError,
        match=r"belongs to another model or kind: it was written with kind='relu', this "
        r"fit has kind='linear'",
    ):
        fit_patterns(conv_model, data, kind="linear", verbose=False, checkpoint=path)
    # each refusal left the checkpoint as it was: the right data still resumes it
    resumed = fit_patterns(conv_model, data, batch_size=25, verbose=False, checkpoint=path)
    assert_patterns_close(resumed, fit_patterns(conv_model, data, verbose=False))


def test_a_damaged_checkpoint_raises_corrupt_file_error(conv_model, tmp_path):
    data = data_of(30)
    path = tmp_path / "fit.npz"
    interrupted(conv_model, data, path, batch_size=10, batches=2, checkpoint_every=1)
    cases = [(what, damaged) for what, damaged in damaged_copies(path, tmp_path) if what != "missing"]
    assert len(cases) == 14  # a missing checkpoint is no damage: the fit starts afresh
    for what, damaged in cases:
        with pytest.raises(CorruptFileError) as caught:
            fit_patterns(conv_model, data, verbose=False, checkpoint=damaged)
        message = str(caught.value)
        assert message.startswith(f"{str(damaged)!r} cannot be read as a fit_patterns checkpoint: "), what
        assert message.endswith("Delete it to start the fit afresh, or pass another checkpoint path."), what
    raw = open(path, "rb").read()
    outcomes = {"CorruptFileError": 0, "resumed exactly": 0}
    expected = fit_patterns(conv_model, data, verbose=False)
    for at in range(0, len(raw), len(raw) // 25):  # 26 single inverted bytes across the file
        (tmp_path / "flipped.npz").write_bytes(flip(raw, at))
        try:
            resumed = fit_patterns(conv_model, data, verbose=False, checkpoint=tmp_path / "flipped.npz")
        except CorruptFileError:
            outcomes["CorruptFileError"] += 1
            continue
        assert_patterns_close(resumed, expected)  # the byte was no part of the contents
        outcomes["resumed exactly"] += 1
    assert outcomes["CorruptFileError"] >= 20


def test_a_checkpoint_of_the_previous_version_resumes_by_sample_count_with_a_warning(conv_model, tmp_path):
    data = data_of(40)
    path = tmp_path / "fit.npz"
    interrupted(conv_model, data, path, batch_size=10, batches=3, checkpoint_every=2)  # 20 samples
    with np.load(path) as saved:
        sums = {k: saved[k] for k in saved.files if "/" in k}
    old = tmp_path / "old.npz"
    with open(old, "wb") as file:  # the previous version's layout: sums, progress and kind, nothing else
        np.savez(file, **sums, __progress__=np.array([2, 20], np.int64), __kind__=np.array("relu"))
    with pytest.warns(
        UserWarning,
        match=r"written by an earlier pgig_tf without a model or data fingerprint: "
        r"resuming after its 20 samples",
    ):
        resumed = fit_patterns(conv_model, data, batch_size=15, verbose=False, checkpoint=old)
    assert_patterns_close(resumed, fit_patterns(conv_model, data, verbose=False))
    with np.load(old) as saved:
        assert CHECKSUM_KEY not in saved.files  # not rewritten: the last batch did not reach checkpoint_every
