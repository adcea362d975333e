"""fit_patterns checkpoints whose header names another format or version, or that are another kind of file."""

import json

import numpy as np
import pytest

from pgig_tf import Patterns, create_analyzer, fit_patterns
from pgig_tf.files import CHECKSUM_KEY, CorruptFileError, write_npz

KEY = "__pgig_tf_checkpoint__"


def checkpoint_of(model, path):
    """A complete checkpoint of a fit on 20 samples (written every batch)."""
    data = np.random.default_rng(2).normal(0, 1, (20, 9, 9, 2)).astype(np.float32)
    fit_patterns(model, data, batch_size=10, verbose=False, checkpoint=path, checkpoint_every=1)
    with np.load(path) as saved:
        return data, {k: saved[k] for k in saved.files if k != CHECKSUM_KEY}


def signed_with_header(entries, path, **changes):
    """The entries with header fields changed, written with a valid checksum: intact, but of another format."""
    header = json.loads(str(entries[KEY]))
    header.update(changes)
    write_npz(path, {**entries, KEY: np.array(json.dumps(header))})
    return path


@pytest.mark.parametrize(
    "changes, said",
    [
        ({"format": "pgig_tf.patterns"}, "it has format 'pgig_tf.patterns' version 2; this pgig_tf reads version 2"),
        ({"format_version": 3}, "it has format 'pgig_tf.fit_checkpoint' version 3; this pgig_tf reads version 2"),
        ({"format_version": 1}, "it has format 'pgig_tf.fit_checkpoint' version 1; this pgig_tf reads version 2"),
    ],
)
def test_a_checkpoint_of_another_format_or_version_is_refused(conv_model, tmp_path, changes, said):
    data, entries = checkpoint_of(conv_model, tmp_path / "fit.npz")
    path = signed_with_header(entries, tmp_path / "other.npz", **changes)
    with pytest.raises(CorruptFileError) as caught:
        fit_patterns(conv_model, data, verbose=False, checkpoint=path)
    assert str(caught.value) == (
        f"{str(path)!r} cannot be read as a fit_patterns checkpoint: {said}. "
        "Delete it to start the fit afresh, or pass another checkpoint path."
    )


def test_the_unchanged_header_resumes(conv_model, tmp_path):
    # the control for the refusals above: rewriting the same header gives a checkpoint that resumes
    data, entries = checkpoint_of(conv_model, tmp_path / "fit.npz")
    path = signed_with_header(entries, tmp_path / "same.npz")
    resumed = fit_patterns(conv_model, data, verbose=False, checkpoint=path)
    assert resumed.num_samples == 20


def test_other_pgig_tf_files_and_foreign_archives_are_refused_saying_what_they_are(conv_model, tmp_path):
    data = np.random.default_rng(3).normal(0, 1, (8, 9, 9, 2)).astype(np.float32)
    patterns = fit_patterns(conv_model, data, verbose=False).save(tmp_path / "patterns.npz")
    analyzer = create_analyzer("gradient", conv_model).save(tmp_path / "analyzer.npz")
    foreign = tmp_path / "foreign.npz"
    with open(foreign, "wb") as file:
        np.savez(file, weights=np.zeros(3))
    expected = {
        patterns: "it is a patterns file (written by Patterns.save); read it with pgig_tf.Patterns.load(path)",
        analyzer: "it is an analyzer file (written by analyzer.save); read it with pgig_tf.load_analyzer(path, model)",
        foreign: "it has no checkpoint header",
    }
    for path, said in expected.items():
        with pytest.raises(CorruptFileError) as caught:
            fit_patterns(conv_model, data, verbose=False, checkpoint=path)
        assert str(caught.value) == (
            f"{str(path)!r} cannot be read as a fit_patterns checkpoint: {said}. "
            "Delete it to start the fit afresh, or pass another checkpoint path."
        )
    assert isinstance(Patterns.load(patterns), Patterns)  # each refused file was left as it was
