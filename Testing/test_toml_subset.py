"""The built-in TOML reader (Python 3.9 without tomli, e.g. Slicer 5.8) against tomllib."""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys

import pytest

from RevGANCore import toml_subset
from RevGANCore.errors import ConfigError

tomllib = pytest.importorskip("tomllib")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.toml"), recursive=True))

EVERY_FEATURE = r"""# a comment
title = "basic \"quoted\" \\ \t tab \u00e9 \U0001F600"
path = 'C:\literal\path'
"quoted key" = 1
dotted.key = -17
big = 1_000_000
plus = +3
ratio = 6.5e-3
small = -2E+2
whole = 3.0
not_a_number = nan
negative_nan = -nan
endless = inf
minus_endless = -inf
plus_endless = +inf
on = true
off = false
empty = []
sizes = [32, 64,
   64,   # trailing comment inside the array
]
nested = [[1, 2], ["a", 'b']]

[model.generator]   # header comment
ngf = 16
  [ model . discriminator ]
ndf = 8
"""


def _comparable(value):
    """NaN never equals itself: compare through JSON with NaN spelled as a string."""
    return json.loads(json.dumps(value, sort_keys=True).replace("NaN", '"NaN"'))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_shipped_config_reads_as_tomllib_reads_it(path):
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    assert toml_subset.loads(text, path) == tomllib.loads(text)


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_every_supported_feature_reads_as_tomllib_reads_it(newline):
    text = EVERY_FEATURE.replace("\n", newline)
    ours = toml_subset.loads(text, "features.toml")
    assert _comparable(ours) == _comparable(tomllib.loads(text))
    assert math.isnan(ours["not_a_number"]) and ours["endless"] == math.inf
    assert isinstance(ours["whole"], float) and isinstance(ours["big"], int)


MALFORMED = [
    ("a = 1\na = 2\n", 2, "set twice"),
    ("[x]\nb = 1\n[x]\n", 3, "defined twice"),
    ("a = 1\n[a]\n", 2, "already a value"),
    ("a = \"open\n", 1, "not closed"),
    ("a = 'open\n", 1, "not closed"),
    ("\n\nsizes = [1, 2\n", 3, "not closed"),
    ("\nsizes = [1,\n 2,\n", 2, "not closed"),
    ("sizes = [1 2]\n", 1, "separated by ','"),
    ("a = 1 2\n", 1, "unexpected text"),
    ("a 1\n", 1, "expected '='"),
    ("a =\n", 1, "expected a value"),
    ("a = yes\n", 1, "expected a value"),
    ("a = 01\n", 1, "cannot read the value"),
    ("a = 1.\n", 1, "cannot read the value"),
    ("a = \"\\q\"\n", 1, "unknown escape"),
    ("a = \"\\u12\"\n", 1, "hexadecimal digits"),
    ("[x\n", 1, "must end with ']'"),
    ("= 1\n", 1, "expected a key"),
]


@pytest.mark.parametrize("text,line,words", MALFORMED, ids=[m[2] + str(i) for i, m in enumerate(MALFORMED)])
def test_malformed_toml_gives_one_line_with_file_and_line(text, line, words):
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(text)  # really malformed, not merely outside the subset
    with pytest.raises(ConfigError) as raised:
        toml_subset.loads(text, "bad.toml")
    message = str(raised.value)
    assert message.startswith(f"bad.toml:{line}: ") and words in message and "\n" not in message


UNSUPPORTED = [
    ("a = {x = 1}\n", "inline tables"),
    ("[[runs]]\nx = 1\n", "arrays of tables"),
    ('a = """\nmany\n"""\n', "multi-line strings"),
    ("a = '''x'''\n", "multi-line strings"),
    ("when = 1979-05-27\n", "dates"),
    ("mask = 0xff\n", "hex"),
]


@pytest.mark.parametrize("text,words", UNSUPPORTED, ids=[u[1] for u in UNSUPPORTED])
def test_valid_toml_outside_the_subset_is_refused_not_guessed(text, words):
    tomllib.loads(text)  # valid TOML
    with pytest.raises(ConfigError) as raised:
        toml_subset.loads(text, "rich.toml")
    assert str(raised.value).startswith("rich.toml:1: ") and words in str(raised.value)
    assert "tomli" in str(raised.value)


def test_configs_load_in_a_python_without_tomllib_or_tomli(tmp_path):
    """What Slicer 5.8's Python 3.9 sees: neither module importable (None in sys.modules
    makes `import` raise ImportError)."""
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = 0\n[data\n", encoding="utf-8")
    script = (
        "import sys, json\n"
        "sys.modules['tomllib'] = None\nsys.modules['tomli'] = None\n"
        "from RevGANCore.config import read_config_file\n"
        "from RevGANCore.errors import ConfigError\n"
        "values = {p: read_config_file(p) for p in sys.argv[2:]}\n"
        "try:\n    read_config_file(sys.argv[1])\nexcept ConfigError as error:\n    values['error'] = str(error)\n"
        "print(json.dumps(values))\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", script, str(bad)] + CONFIGS, env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    values = json.loads(done.stdout)
    from RevGANCore.config import read_config_file

    for path in CONFIGS:
        assert values[path] == read_config_file(path), path  # `extends` included
    assert values["error"] == f"{bad}:2: a table header must end with ']'"
