"""``natv2 space sample|decode`` through the CLI."""

from __future__ import annotations

import numpy as np

from natv2.space import RESOLUTIONS, SearchSpace
from natv2.supernet.config import layout_for


def test_sample_json(cli):
    """The R gene means the resolutions of the layout `natv2 search` would train: OFA's by
    default, or fitted to the dataset's image size with --layout data (mnist5k's 28 px unless
    --dataset says otherwise)."""
    for extra, grid in [
        ((), RESOLUTIONS),
        (("--layout", "data"), layout_for(28)["resolutions"]),
        (("--layout", "data", "--dataset", "cifar10"), layout_for(32)["resolutions"]),
        (("--layout", "imagenet"), RESOLUTIONS),
    ]:
        res = cli("space", "sample", "--encoding", "exits+parallel", "-n", "3", "--json", *extra)
        assert res.code == 0, res.err
        records = res.json()
        assert len(records) == 3
        space = SearchSpace("exits+parallel", grid=grid)
        for rec in records:
            assert rec["encoding"] == "exits+parallel"
            assert rec["id"] == space.decode(rec["vector"]).id
            assert rec["arch"]["resolution"] in grid
            np.testing.assert_array_equal(space.canonical(rec["vector"]), rec["vector"])


def test_sample_is_seeded_and_uniform_sampler_selectable(cli):
    a = cli("space", "sample", "-e", "baseline", "-n", "4", "--seed", "7", "--json").json()
    b = cli("space", "sample", "-e", "baseline", "-n", "4", "--seed", "7", "--json").json()
    c = cli("space", "sample", "-e", "baseline", "-n", "4", "--sampler", "uniform", "--json")
    assert a == b and c.code == 0 and len(c.json()) == 4


def test_decode_shows_canonical_vector(cli):
    levels = "9,9,0,5," + ",".join(["1,1,0,0"] * 4)
    res = cli("space", "decode", f"4,0,4,{levels}", "--encoding", "exits", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["canonical"] is False
    assert doc["vector"][3:7] == [9, 9, 5, 0]
    text = cli("space", "decode", f"4,0,4,{levels}", "--encoding", "exits")
    assert "stage 1: depth 3" in text.out and "canonical vector" in text.out


def test_bad_input_exits_2_with_one_line(cli):
    for args, needle in [
        (("space", "decode", "1,2,3", "-e", "baseline"), "has 22 genes"),
        (("space", "decode", "9," + ",".join(["1"] * 21), "-e", "baseline"), "position 1 (R)"),
        (("space", "sample", "-e", "nope"), "unknown encoding 'nope'"),
    ]:
        res = cli(*args)
        assert res.code == 2
        assert needle in res.err
        assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1
