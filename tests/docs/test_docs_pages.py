"""The documentation pages: every Python block runs (in page order, one namespace per page), and their links resolve."""

import glob
import os
import warnings

import pytest
from markdown_code import REPOSITORY, code_blocks

DOCS = os.path.join(REPOSITORY, "docs")
PAGES = sorted(os.path.relpath(p, DOCS) for p in glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True))
PAGES_WITH_CODE = [
    page for page in PAGES if any(reason is None for _, _, reason in code_blocks(os.path.join(DOCS, page)))
]


def test_the_pages_with_examples_are_found():
    assert {"getting-started.md", "user-guide.md", "evaluation.md"} <= set(PAGES_WITH_CODE)


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page}"}
    with warnings.catch_warnings():
        # the pages use none of pgig_tf's deprecated names
        warnings.filterwarnings("error", message="pgig_tf", category=DeprecationWarning)
        for line, code, reason in code_blocks(os.path.join(DOCS, page)):
            if reason is None:
                exec(compile(code, f"docs/{page}:{line}", "exec"), namespace)


@pytest.mark.parametrize("page", PAGES)
def test_blocks_that_are_not_run_say_why(page):
    for line, _, reason in code_blocks(os.path.join(DOCS, page)):
        assert reason is None or len(reason) > 10, f"docs/{page}:{line}"
