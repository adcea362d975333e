"""Reading the fenced code blocks and relative links of the project's Markdown files, for the documentation tests."""

import os
import re

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A block preceded by this comment is shown but not run; the comment must say why.
# A block that only includes a file (pymdownx.snippets: --8<-- "path") is that file, tested on its own.
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>[^>]*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent> *)```(?P<language>[\w+-]*)[^\n]*$")


def code_blocks(path, language="python"):
    """[(line number, code, reason it is not run or None)] of the ```language blocks of the Markdown file `path`."""
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    blocks, index = [], 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        indent, start = len(match["indent"]), index
        body, index = [], index + 1
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index][indent:])
            index += 1
        index += 1
        if match["language"] == language:
            previous = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
            skip = NOT_RUN.search(previous)
            reason = skip["reason"] if skip else None
            included = [line for line in body if line.strip()]
            if len(included) == 1 and included[0].startswith("--8<--"):
                reason = f"the included file {included[0].split(None, 1)[1]}, run by its own test"
            blocks.append((start + 1, "\n".join(body) + "\n", reason))
    return blocks


def relative_links(path):
    """Targets of the Markdown links and images in `path` that are not web addresses or page anchors."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code blocks are code
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"^(https?:|mailto:|#)", t)]
