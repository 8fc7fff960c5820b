"""docs/bad-input.md is true: every bad-input case (tests/bad_input.py) is re-run here.
Fails when a case raises nothing, raises an unhelpful error (a bare KeyError /
IndexError / ...; the wrong exception type; an empty message), or when the document
differs from what the cases produce now (regenerate it:
``python -m tests.bad_input --write docs/bad-input.md``)."""
import os

import pytest

import onnx  # noqa: F401
import onnxruntime  # noqa: F401


# (skipped by conftest.py when libbnn.so is not built)

from tests import bad_input  # noqa: E402

DOC = os.path.join(bad_input.ROOT, "docs", "bad-input.md")


@pytest.fixture(scope="module")
def rows():
    return bad_input.run_cases()


def test_every_case_raises_a_specific_clear_error(rows):
    bad = ["%s: %s (%s: %s)" % (what, res["why"], res["type"], res["message"])
           for _, what, _, res in rows if not res["ok"]]
    assert not bad, "\n".join(bad)
    assert len(rows) >= 50


def test_no_temporary_paths_leak_into_the_table(rows):
    for _, what, _, res in rows:
        assert "/tmp/" not in res["message"] and "bnn-bad-input-" not in res["message"], what


def test_docs_bad_input_md_is_up_to_date(rows):
    assert os.path.exists(DOC), "docs/bad-input.md is missing: python -m tests.bad_input " \
                                "--write docs/bad-input.md"
    text = bad_input.render(rows)
    old = open(DOC).read()
    assert bad_input.comparable(old, rows) == bad_input.comparable(text, rows), \
        "docs/bad-input.md is out of date: python -m tests.bad_input --write docs/bad-input.md"
