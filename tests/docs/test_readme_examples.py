"""The README: its Python example runs and makes the heatmap it promises; its commands, links and size hold."""

import os

import numpy as np
from markdown_code import REPOSITORY, code_blocks, relative_links

README = os.path.join(REPOSITORY, "README.md")


def test_readme_python_blocks_run_and_save_the_heatmaps(tmp_path, monkeypatch):
    blocks = code_blocks(README)
    assert len(blocks) == 1 and blocks[0][2] is None  # the first example, run whole
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_example"}
    for line, code, _ in blocks:
        exec(compile(code, f"README.md:{line}", "exec"), namespace)

    images, pgig_maps, ig_maps = namespace["images"], namespace["pgig_maps"], namespace["ig_maps"]
    assert images.shape == pgig_maps.shape == ig_maps.shape == (6, 8, 8, 1)
    assert np.all(np.isfinite(pgig_maps)) and np.abs(pgig_maps).max() > 0
    # the PGIG maps are not Integrated Gradients' maps under another name
    assert not np.allclose(pgig_maps, ig_maps)

    import matplotlib.image

    picture = matplotlib.image.imread(tmp_path / "heatmaps.png")
    # plot_heatmap_grid at 100 dpi: 0.9 + 1 inch per row (6 images) high; 1.5 (row labels) + 1 per column
    # (image + 2 methods) + 1.2 (colour bar) wide
    assert picture.shape[:2] == (690, 570)
    red = (picture[..., 0] > 0.9) & (picture[..., 1] < 0.5) & (picture[..., 2] < 0.5)
    blue = (picture[..., 2] > 0.9) & (picture[..., 0] < 0.5) & (picture[..., 1] < 0.5)
    assert red.sum() > 100 and blue.sum() > 100  # the heatmaps are drawn in both colours


def test_readme_gives_the_two_commands_and_their_run_times():
    text = open(README, encoding="utf-8").read()
    assert 'pip install -e ".[cpu,test]" && python scripts/degradation_benchmark.py' in text
    assert "python -m pytest -q" in text
    assert "2½–8½ minutes on a 2-core CPU" in text.replace("\n", " ")
    assert "about 4 minutes on a 2-core CPU" in text.replace("\n", " ")


def test_readme_links_point_to_files_of_the_repository():
    links = relative_links(README)
    assert "docs/getting-started.md" in links and "docs/api/index.md" in links
    missing = [link for link in links if not os.path.exists(os.path.join(REPOSITORY, link.split("#")[0]))]
    assert missing == []


def test_readme_is_at_most_12_kb():
    assert os.path.getsize(README) <= 12 * 1024
