"""Issue #27 part 4: the outside fault-injection suite's FAILs, one test each (named by
the suite's case id): a run touches only what it wrote, the sweep store's integrity is
checked, input is bounded and strict."""
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from threatlab import run, sweep
from threatlab.errors import ConfigError


def write(tmp_path, text, name="p.yaml"):
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return str(p)


# ------------------------------------------------------------------ S18 seeds

def test_s18_a_huge_seed_range_is_refused_before_it_is_built():
    with pytest.raises(ConfigError, match=r"names more than 10000 seeds; allowed: at most 10000"):
        sweep.parse_seeds("0-100000000")
    with pytest.raises(ConfigError, match="more than 10000"):
        sweep.parse_seeds("0-5000,6000-12000")
    assert len(sweep.parse_seeds("0-9999")) == sweep.MAX_SEEDS
    with pytest.raises(ConfigError, match="at most 10 digits"):
        sweep.parse_seeds("9" * 5000)


# ------------------------------------------------------- Y02-Y04 profile YAML

@pytest.mark.parametrize("text,line,key", [
    ("defaults:\n  seed: 1\n  seed: 2\n", 3, "seed"),                                     # Y02
    ("notebooks:\n  04_adversarial:\n    n_train: 1\n    n_train: 2\n", 4, "n_train"),     # Y03 nested
    ("description: a\ndefaults: {}\ndescription: b\n", 3, "description"),
])
def test_y02_y03_duplicate_keys_are_refused_naming_file_and_line(tmp_path, text, line, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^{path}:{line}: malformed YAML: duplicate key '{key}'"):
        run.load_profile(path)


def test_y04_an_alias_bomb_is_refused_at_once(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(8):  # 9**9 strings once expanded, from about 350 bytes
        lines.append(f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]")
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"^{path}:1: YAML anchor &a is not allowed in a profile"):
        run.load_profile(path)
    path = write(tmp_path, "defaults:\n  seed: 1\nnotebooks:\n  04_adversarial: *x\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: YAML alias \*x is not allowed"):
        run.load_profile(path)


def test_profile_not_utf8_or_not_a_mapping_is_one_line(tmp_path, capsys):
    path = write(tmp_path, b"defaults:\n  seed: \xff\xfe\n")
    with pytest.raises(ConfigError, match=rf"^{path}:1: the profile is not UTF-8 text"):
        run.load_profile(path)
    path = write(tmp_path, "- 1\n- 2\n", "list.yaml")
    assert run.main(["run", "--profile", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a profile must be a mapping" in err
