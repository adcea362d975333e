"""Multi-scale total variation and AUTVC on maps whose values are known."""

import numpy as np
import pytest

from pgig_tf.evaluation.smoothness import autvc, multiscale_total_variation, total_variation


def test_total_variation_of_a_checkerboard_and_a_constant():
    board = (np.indices((4, 4)).sum(0) % 2).astype(float)[None]
    assert total_variation(board)[0] == pytest.approx(2.0)  # every neighbour differs by 1, both directions
    assert total_variation(np.ones((1, 4, 4)))[0] == 0.0


def test_multiscale_values_and_normalisation():
    board = (np.indices((8, 8)).sum(0) % 2).astype(float)
    maps = np.stack([board, 5 * board, np.zeros((8, 8))])[..., None]
    tv = multiscale_total_variation(maps, scales=(1, 2))
    np.testing.assert_allclose(tv[:, 0], [2.0, 2.0, 0.0])  # scale-free: 5x the map, same TV
    np.testing.assert_allclose(tv[:, 1], [0.0, 0.0, 0.0])  # 2x2 blocks of a checkerboard average to 0.5
    np.testing.assert_allclose(autvc(maps, scales=(1, 2)), [1.0, 1.0, 0.0])


def test_smoother_map_has_lower_autvc():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (1, 32, 32, 3))
    ramp = np.broadcast_to(np.linspace(0, 1, 32)[None, None, :, None], (1, 32, 32, 3))
    assert autvc(ramp)[0] < autvc(noise)[0] / 2


def test_scale_too_large():
    with pytest.raises(ValueError, match="scale 8 is too large for 8x8 maps"):
        multiscale_total_variation(np.zeros((1, 8, 8, 1)), scales=(1, 8))
