"""Rules every test keeps, checked on the tests' own source (CI runs this with the rest).

1. A test skips only through `tests.support.prereq.require`, so that SYSCRIBE_REQUIRE_REAL=1 (CI) turns
   every missing prerequisite into a failure: no `pytest.skip`, `skipif`, `importorskip` or `xfail`
   anywhere else.
2. A test reads nothing outside the repository: files it reads live in tests/data/ (or tmp_path). A
   path into this machine's private or shared places (/work, /home, /root, /tmp, /mnt, /opt, /srv,
   /var/tmp, ...) handed to Path(), open() or os.* is refused; the system interfaces that real tests
   exercise (/proc, /sys, /dev, /etc, /run, /usr, /bin, ...) are what they test, not data. A string
   naming a folder under this workplace's /work is refused wherever it is.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
# The one place allowed to skip.
PREREQ = TESTS / "support" / "prereq.py"
SKIPS = {"skip", "skipif", "importorskip", "xfail"}
PRIVATE = re.compile(r"/(work|home|root|tmp|var/tmp|mnt|media|opt|srv|scratch|data|shared)(/|$)")
WORK = "/" + "work/"  # spelt so that this module does not name it
WORKPLACE = re.compile(r"(^|[^\w.])" + WORK)
# Calls whose first argument is a path that is opened, read, listed or looked at.
PATH_CALLS = {
    "Path", "PurePath", "open", "stat", "lstat", "listdir", "scandir", "walk", "exists", "isfile",
    "isdir", "readlink", "read_bytes", "read_text", "load", "glob", "iglob", "copy", "copyfile",
}


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _leading_text(node: ast.expr) -> str | None:
    """The literal start of a string argument (a plain string, or an f-string's first part)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def problems(source: str, name: str) -> list[str]:
    """What in this test module's source breaks the rules, one line each."""
    found: list[str] = []
    tree = ast.parse(source, name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in SKIPS:
            dotted = _dotted(node)
            if dotted.startswith(("pytest.", "unittest.")) or dotted.startswith("mark."):
                found.append(f"{name}:{node.lineno}: {dotted} skips without tests.support.prereq.require")
        elif isinstance(node, ast.ImportFrom) and node.module in ("pytest", "unittest"):
            for alias in node.names:
                if alias.name in SKIPS:
                    found.append(f"{name}:{node.lineno}: imports {node.module}.{alias.name}: skip only "
                                 "through tests.support.prereq.require")
        elif isinstance(node, ast.Call) and node.args and _name(node.func) in PATH_CALLS:
            text = _leading_text(node.args[0])
            if text is not None and PRIVATE.match(text):
                found.append(f"{name}:{node.lineno}: reads {text!r}, outside the repository: put the "
                             "file in tests/data/ or make it in tmp_path")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and WORKPLACE.search(node.value):
            found.append(f"{name}:{node.lineno}: names {node.value[:60]!r}, a folder of this machine, "
                         "not of the repository")
    return found


def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if p != PREREQ)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(TESTS)))
def test_every_test_module_keeps_the_rules(path: Path) -> None:
    assert problems(path.read_text(), str(path.relative_to(ROOT))) == []


@pytest.mark.parametrize(
    ("source", "wanted"),
    [
        ("import pytest\ndef test_a():\n    pytest.skip('no')\n", "pytest.skip skips"),
        ("import pytest\n@pytest.mark.skipif(True, reason='x')\ndef test_a(): pass\n", "pytest.mark.skipif"),
        ("import pytest\nyaml = pytest.importorskip('yaml')\n", "pytest.importorskip"),
        ("import pytest\n@pytest.mark.xfail\ndef test_a(): pass\n", "pytest.mark.xfail"),
        ("from pytest import skip\n", "imports pytest.skip"),
        ("from pathlib import Path\nC = Path('{W}shared/corpus/x.txt')\n", "reads '{W}shared"),
        ("def test_a():\n    open('/home/me/log').read()\n", "reads '/home/me/log'"),
        ("import os\ndef test_a():\n    os.stat(f'/tmp/{1}')\n", "reads '/tmp/'"),
        ("X = 'see {W}shared/corpus'\n", "names 'see {W}shared"),
    ],
)
def test_the_rules_catch(source: str, wanted: str) -> None:
    found = problems(source.replace("{W}", WORK), "t.py")
    assert any(wanted.replace("{W}", WORK) in problem for problem in found), found


def test_the_rules_let_through() -> None:
    clean = (
        "from pathlib import Path\nfrom tests.support.prereq import require\n"
        "DATA = Path(__file__).parent / 'data' / 'x.txt'\n"
        "def test_a(tmp_path):\n    require('root')\n    Path('/proc/self/status').read_text()\n"
        "    annotation = 'of:/tmp/out.json'\n    skip = 'skip'\n"
    )
    assert problems(clean, "t.py") == []
