"""Search space and encodings: canonical form, errors, samplers, special subnets, ids."""

from __future__ import annotations

import numpy as np
import pytest

from natv2.errors import EncodingError
from natv2.space import (
    ENCODINGS,
    LEVELS_PER_STAGE,
    N_STAGES,
    Arch,
    Block,
    SearchSpace,
    parse_vector,
    validate_arch,
)


def reached_depths(space: SearchSpace, vectors: np.ndarray) -> np.ndarray:
    """Depth of every stage that the subnet actually runs (stages past the exit excluded)."""
    out = []
    for v in vectors:
        arch = space.decode(v)
        out += [len(arch.active_blocks(s)) for s in range(arch.exit)]
    return np.asarray(out)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_random_vectors_decode_to_canonical_fixed_points(encoding):
    space = SearchSpace(encoding)
    rng = np.random.default_rng(0)
    raw = rng.integers(space.lower, space.upper + 1, size=(1000, space.length))
    batch = space.canonical_batch(raw)
    for v, fast in zip(raw, batch, strict=True):
        arch = space.decode(v)
        validate_arch(arch)
        canon = space.encode(arch)
        np.testing.assert_array_equal(canon, fast)
        np.testing.assert_array_equal(space.encode(space.decode(canon)), canon)
        assert space.decode(canon) == arch


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_vector_lengths_and_bounds_follow_the_paper(encoding):
    space = SearchSpace(encoding)
    assert space.length == (23 if "exits" in encoding else 22)
    assert space.upper[space.level_offset] == (63 if "parallel" in encoding else 9)
    # levels 1-2 of every stage can never be skipped; levels 3-4 can
    for s in range(N_STAGES):
        first = space.level_offset + s * LEVELS_PER_STAGE
        assert list(space.lower[first : first + 4]) == [1, 1, 0, 0]


def test_canonical_form_rules():
    space = SearchSpace("exits+parallel")
    levels = [9, 9, 0, 5] + [1, 1, 0, 0] * 4  # level 3 skipped while level 4 active
    v = space.canonical([4, 0, 4, *levels])
    assert list(v[3:7]) == [9, 9, 5, 0]
    # branch mask without the IRB (A=2: pointwise only) ignores E and K
    code = 1 + (2 - 1) * 9 + 8  # A=2, E6 K7
    v = space.canonical([4, 0, 4, code, *[1] * 19])
    assert v[3] == 1 + (2 - 1) * 9
    # stages past the exit become the smallest filler
    v = space.canonical([0, 0, 1, *[9] * 20])
    assert list(v[3 + 8 :]) == [1, 1, 0, 0] * 3
    arch = space.decode(v)
    assert arch.exit == 2 and arch.active_blocks(2) == ()


def test_restricted_space_snaps_and_bounds():
    space = SearchSpace("baseline", resolutions=(48, 64), widths=(1.0,))
    assert space.lower[0] == 0 and space.upper[0] == 4 and space.upper[1] == 0
    arch = space.decode([2, 0, *[1] * 20])  # 56 px is not allowed: snaps to the nearer (48 on ties)
    assert arch.resolution == 48
    assert space.decode([3, 0, *[1] * 20]).resolution == 64


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ([0, 0, 1], "has 22 genes"),
        ([5, 0, *[1] * 20], "position 1 (R) is 5, allowed range is 0..4"),
        ([0, 0, 1, 1, 1, 10, *[1] * 16], "position 6 (L4) is 10, allowed range is 0..9"),
        ([0, 0, 0, *[1] * 19], "position 3 (L1) is 0, allowed range is 1..9"),
        ([0, 0, -1, *[1] * 19], "position 3 (L1) is -1"),
    ],
)
def test_bad_vectors_give_one_clear_error(vector, message):
    with pytest.raises(EncodingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchSpace("baseline").decode(vector)


def test_unknown_encoding_and_bad_text():
    with pytest.raises(EncodingError, match="unknown encoding 'foo'"):
        SearchSpace("foo")
    with pytest.raises(EncodingError, match="comma-separated integers"):
        parse_vector("1,2,x")
    assert parse_vector("[1, 2,3]") == [1, 2, 3]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_natv2_sampler_is_uniform_in_stage_depth(encoding):
    space = SearchSpace(encoding)
    vectors = space.sample(30_000, np.random.default_rng(1), "natv2")
    depths = reached_depths(space, vectors[:6000]) if space.has_exits else None
    if depths is None:
        levels = vectors[:, space.level_offset :].reshape(-1, N_STAGES, LEVELS_PER_STAGE)
        depths = (levels != 0).sum(axis=2).ravel()
        total = (levels != 0).sum(axis=(1, 2))
        # network depth is uniform on 10..20 too
        for d in range(10, 21):
            assert abs((total == d).mean() - 1 / 11) < 0.02
    for d in (2, 3, 4):
        assert abs((depths == d).mean() - 1 / 3) < 0.03


@pytest.mark.parametrize("encoding", ["baseline", "parallel"])
def test_uniform_sampler_shows_the_deep_stage_bias(encoding):
    space = SearchSpace(encoding)
    vectors = space.sample(5000, np.random.default_rng(2), "uniform")
    levels = vectors[:, space.level_offset :].reshape(-1, N_STAGES, LEVELS_PER_STAGE)
    depths = (levels != 0).sum(axis=2).ravel()
    freq = {d: (depths == d).mean() for d in (2, 3, 4)}
    assert freq[4] > 0.75 and freq[4] > freq[3] > freq[2]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_maximal_and_minimal_subnets(encoding):
    space = SearchSpace(encoding)
    big, small = space.maximal(), space.minimal()
    assert big.resolution == 64 and big.width == 1.2 and big.exit == 5
    assert all(b == Block(7 if space.parallel else 1, 6, 7) for b in big.levels)
    assert small.resolution == 48 and small.width == 1.0
    assert small.exit == (1 if space.has_exits else 5)
    assert all(len(small.active_blocks(s)) == 2 for s in range(small.exit))
    for arch in (big, small):
        np.testing.assert_array_equal(space.canonical(space.encode(arch)), space.encode(arch))


def test_ids_are_stable_short_and_readable():
    space = SearchSpace("exits+parallel")
    v = space.sample(200, np.random.default_rng(3))
    ids = [space.decode(x).id for x in v]
    assert len(set(ids)) == len({tuple(x) for x in v})
    arch = space.maximal()
    assert arch.id.startswith("r64-w12-x5-d44444-") and len(arch.id) <= 32
    # the same Arch has the same id whichever encoding wrote it
    base = SearchSpace("baseline")
    a = base.decode([4, 1, *[9] * 20])
    assert SearchSpace("parallel").decode(SearchSpace("parallel").encode(a)).id == a.id
    # round trip through JSON
    assert Arch.from_dict(arch.to_dict()) == arch


def test_a_resolution_grid_gives_the_r_gene_its_pixels():
    """R indexes the supernet's resolutions: the paper's 48..64 by default, a fitted grid
    (natv2.supernet.config.layout_for) otherwise; a restriction keeps the gene's meaning."""
    grid = (20, 24, 28, 32, 36)
    space = SearchSpace("exits+parallel", grid=grid)
    v = space.encode(space.maximal())
    assert v[0] == 4 and space.decode(v).resolution == 36
    assert SearchSpace("exits+parallel").decode(v).resolution == 64
    small = SearchSpace("exits+parallel", resolutions=(24, 28), grid=grid)
    assert small.lower[0] == 1 and small.upper[0] == 2
    assert small.decode([1, *v[1:]]).resolution == 24
    with pytest.raises(EncodingError, match=r"allowed range is 1\.\.2"):
        small.decode([0, *v[1:]])
    samples = small.sample(50, np.random.default_rng(0))
    assert {space.decode(s).resolution for s in samples} <= {24, 28}
    with pytest.raises(EncodingError, match="subset"):
        SearchSpace("exits+parallel", resolutions=(48,), grid=grid)
    # an Arch of any sensible resolution describes a subnet; the space decides what it holds
    arch = Arch.from_dict({**space.maximal().to_dict(), "resolution": 30})
    with pytest.raises(EncodingError, match="not in"):
        space.encode(arch)
