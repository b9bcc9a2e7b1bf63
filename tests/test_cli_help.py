"""``--help`` pages: what they tell a user survives rich's markup."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize("command", ["validate", "export"])
def test_help_names_the_tflite_extra_with_its_brackets(cli, command):
    # rich reads "[tflite]" as a style tag and drops it unless escaped, which printed the
    # install hint as pip install "natv2"
    res = cli(command, "--help")
    assert res.code == 0, res.err
    text = re.sub(r"[\s│╭╮╰╯─]+", "", res.out)
    assert 'pipinstall"natv2[tflite]"' in text, res.out
