"""The Python examples of docs/python.md run as written (blocks marked "not tested" are skipped)."""
import os
import pathlib
import re

import pytest

DOC = pathlib.Path(os.environ.get("TESSERA_REPO_ROOT", pathlib.Path(__file__).resolve().parents[2])) / "docs" / "python.md"


def _blocks(text):
    out = []
    for m in re.finditer(r"(<!-- not tested[^>]*-->\s*)?```python\n(.*?)```", text, re.S):
        if not m.group(1):
            out.append(m.group(2))
    return out


EXAMPLES = _blocks(DOC.read_text())


def test_docs_have_examples():
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("index", range(len(EXAMPLES)), ids=lambda i: f"example{i + 1}")
def test_doc_example_runs(tmp_path, monkeypatch, capsys, index):
    monkeypatch.chdir(tmp_path)
    exec(compile(EXAMPLES[index], f"docs/python.md example {index + 1}", "exec"), {"__name__": "__doc_example__"})
