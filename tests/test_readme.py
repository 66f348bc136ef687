"""The README stays true: every setting is documented with its default, the commands exist."""

import os
import re

from fleet.config import SETTINGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_readme_documents_every_setting_with_its_default():
    text = _readme()
    missing = [s.env for s in SETTINGS if f"| `{s.env}` | `{s.default}` |" not in text]
    assert missing == [], "README.md's configuration table is stale: run python -m fleet.config"


def test_readme_names_only_make_targets_that_exist():
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        targets = set(re.findall(r"^([a-z-]+):", f.read(), re.M))
    named = set(re.findall(r"`make ([a-z-]+)`", _readme()))
    assert {"run", "test"} <= named
    assert named <= targets
