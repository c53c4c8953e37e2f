"""float32 log-sum-exps of unweighted rows: float32's exp in the sums, each result certified.

``reduce.lse_rows(x, None, out, sign, CERTIFIED)`` (what ``logsumexp`` runs for float32 data
without weights) must give the very bits of ``reduce.lse_rows(x, None, out, sign)``, which
takes the full exp in every sum: a row whose cheaper sum could round to another float32 is
summed again (``partials.certain_in_float32``). Rows whose max stays below CHEAP_FROM take the
full exp throughout (their lse may be near 0, where no float32 bound would certify).
Columns (``reduce.lse_columns``, axis 0 and middle axes) and tiles of short rows
(``reduce.lse_short_rows``, their rows as columns) alike: a band at least half of whose lse
will likely reach CHEAP_FROM (a tile's maxima; a band of columns' first rows foretell them)
takes float32's exp in every term, ties included, and must give the bits of the full exp's
sums (the band summed again whole where many are uncertain). A band of columns is read
once, its terms against the maxima of its first rows, its sums rescaled to its maxima.
"""

import numpy as np
import pytest
import scipy.special

import numba_lse as nl
from numba_lse.cpu import partials, reduce
from numba_lse.cpu.reduce import CHUNK, SHORT_ROW


def lse_rows(x, cheap=None):
    out = np.empty(x.shape[0], np.float32)
    sign = np.empty(x.shape[0], np.float32)
    reduce.lse_rows(x, None, out, sign, cheap)
    return out, sign


def unchecked(x):
    """The float32 results of the cheap sums before any row is summed again, and which rows
    the certification flags."""
    m, c, s = reduce.row_partials(x, None, partials.CERTIFIED)
    out = np.empty(x.shape[0], np.float32)
    uncertain = np.empty(x.shape[0], np.bool_)
    partials.finish_slices(m, c, s, out, np.empty_like(out), uncertain)
    return out, uncertain


def near_one(rows, rng):
    """Rows of 40 whose max is 1.0 and whose lse lies in [1, 4), where a float32 ulp is 2^-23
    or 2^-22: 2^-23 is the smallest that a certified row can have."""
    x = rng.uniform(-9.0, -0.5, size=(rows, 40))
    x[:, 0] = 1.0
    return x.astype(np.float32)


def _rows():
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((500, 300))
    late = rng.uniform(-5.0, 0.5, size=(4, 5000))
    late[:, -1] = 3.0  # the running max reaches CHEAP_FROM in the row's last block
    specials = np.zeros((9, 64))
    specials[0, 1:] = -np.inf
    specials[1, 3] = np.inf
    specials[2, 5] = np.nan
    specials[3] = -np.inf
    specials[4] = 1.0  # 64 ties
    specials[5] = 3e38
    specials[6, ::2] = -3e38
    specials[6, 1::2] = 3e38
    specials[7] = 1e-30
    specials[8, 0] = 1.0  # lse = 1 + log1p(63 / e): its only cheap terms are exp(-1)
    return {
        "randn": logits,
        "near one": near_one(2000, rng),
        # max < CHEAP_FROM, lse ~ 0: every term takes the full exp
        "log-probabilities": logits - special_logsumexp(logits),
        "large": rng.standard_normal((50, 3000)) * 1e30,
        "integers (ties)": rng.integers(-3, 4, size=(300, 50)),
        "specials": specials,
        "max reached late": late,
        "several chunks": rng.standard_normal((3, 2 * CHUNK + 5)) * 10,
        "shortest long row": rng.standard_normal((100, SHORT_ROW)) + 2,
    }


def special_logsumexp(x):
    return np.log(np.sum(np.exp(x), axis=1, keepdims=True))


ROWS = _rows()


def test_every_row_that_would_round_otherwise_is_summed_again():
    """Among 50000 rows of the smallest certified ulps, the cheap sums alone round some rows
    to another float32 than the full exp: each of those is flagged, and few others are."""
    x = near_one(50000, np.random.default_rng(11))
    full_out, _ = lse_rows(x)
    assert np.all((full_out >= 1) & (full_out < 4))
    out, uncertain = unchecked(x)
    differs = out != full_out
    assert differs.sum() > 0  # the data exercises the certification
    assert np.all(uncertain[differs])
    assert uncertain.mean() < 1 / 16
    np.testing.assert_array_equal(lse_rows(x, partials.CERTIFIED)[0], full_out)


def test_a_max_below_cheap_from_takes_the_full_exp():
    """Rows of log-probabilities (max < 1): nothing to certify, nothing summed again."""
    x = np.asarray(ROWS["log-probabilities"], dtype=np.float32)
    out, uncertain = unchecked(x)
    assert not uncertain.any()
    np.testing.assert_array_equal(out, lse_rows(x)[0])


@pytest.mark.parametrize("shape, axis", [((4, 2 * CHUNK + 5), -1), ((7, 300), 1),
                                         ((3, 5, 40), (1, 2)), ((2 * CHUNK + 5,), None)])
def test_logsumexp_of_float32_gives_the_full_exps_bits(shape, axis):
    """The public function, through its layouts (rows of a 3-D array, a vector)."""
    x = (np.random.default_rng(3).standard_normal(shape) * 5).astype(np.float32)
    rows = np.ascontiguousarray(x.reshape(-1, shape[-1]) if axis in (-1, 1) else
                                x.reshape(shape[0] if axis == (1, 2) else 1, -1))
    expected = lse_rows(rows)[0]
    np.testing.assert_array_equal(nl.logsumexp(x, axis=axis).reshape(-1), expected)


def lse_columns(x, cheap=None):
    """``reduce.lse_columns`` of a 2-D x over axis 0, or of a 3-D x over axis 1."""
    view = x[None] if x.ndim == 2 else x
    out = np.empty((view.shape[0], view.shape[2]), np.float32)
    sign = np.empty_like(out)
    reduce.lse_columns(view, None, out, sign, cheap)
    return out.reshape(x.shape[:1] + x.shape[2:] if x.ndim == 3 else x.shape[1:]), sign


def _columns():
    rng = np.random.default_rng(5)
    mixed = rng.standard_normal((301, 1030)) + 3
    mixed[:, 700] -= 10  # one column of the second band has its max below CHEAP_FROM
    return {
        # two bands and part of a third, rows not a multiple of COLUMN_STEP
        "randn": rng.standard_normal((1003, 1100)),
        "near one": near_one(3000, rng).T.copy(),
        "log-probabilities": (ROWS["log-probabilities"]).T.copy(),
        "one band of full exps": mixed,
        "large": rng.standard_normal((700, 60)) * 1e30,
        "integers (ties)": rng.integers(-3, 4, size=(50, 300)),
        "specials": ROWS["specials"].T.copy(),
        "three rows": rng.standard_normal((3, 600)) + 2,
        "no rows": np.zeros((0, 20)),
        "middle axis": rng.standard_normal((5, 70, 130)) * 3,
        "max beyond the shift's rows": shifted_columns(rng, {0.5: slice(None)}),
        "a few columns far above their shift": shifted_columns(rng, {
            599.0: [3, 600], 640.0: [5, 700, 1000], 800.0: [7, 601], np.inf: [9, 1029]}),
        "a quarter far above their shift": shifted_columns(rng, {640.0: slice(0, None, 4)}),
        "a tall band, in pieces": tall_band(rng),
    }


def tall_band(rng):
    """A band of 300 columns of 20000 rows: its sums are taken in 8 pieces of rows on the
    threads (``reduce.certified_in_pieces``), a quarter of its columns far above their
    shift, and -inf, +inf and nan in a few."""
    x = rng.standard_normal((20_000, 300)) + 2
    x[:reduce.SHIFT_ROWS, ::4] -= 640.0
    x[5000, 7] = np.inf
    x[:, 9] = -np.inf
    x[7, 11] = np.nan
    x[12_000:, 13] -= 50.0
    return x


def shifted_columns(rng, drops):
    """Columns of randn + 2 whose first SHIFT_ROWS rows are lowered by each amount of
    ``drops`` at its columns (inf: -inf there), so that most of their maxima lie beyond the
    rows of the band's shift, that far above it or more (0.5 or 599: within SHIFT_LIMIT,
    rescaled; 640: beyond it, within float32 exp's range; 800: beyond both; -inf), each
    column summed again or not, alone (a few) or with its band (a quarter)."""
    x = rng.standard_normal((200, 1030)) + 2
    for drop, columns in drops.items():
        x[:reduce.SHIFT_ROWS, columns] -= drop
    return x


COLUMNS = _columns()


@pytest.mark.parametrize("kernel, name", [("rows", name) for name in ROWS] +
                         [("columns", name) for name in COLUMNS])
def test_certified_results_are_the_full_exps_bits(kernel, name):
    """The kernel with and without CERTIFIED, and the public function (which certifies).
    Columns of few bands (``reduce.column_pieces``: "randn", "one band of full exps", "a
    tall band, in pieces") take their certified sums in pieces of rows."""
    lse, x, axis = ((lse_rows, ROWS[name], -1) if kernel == "rows" else
                    (lse_columns, COLUMNS[name], 0 if COLUMNS[name].ndim == 2 else 1))
    x = np.asarray(x, dtype=np.float32)
    full_out, full_sign = lse(x)
    out, sign = lse(x, partials.CERTIFIED)
    np.testing.assert_array_equal(out, full_out)
    np.testing.assert_array_equal(sign, full_sign)
    np.testing.assert_array_equal(nl.logsumexp(x, axis=axis), out)


def test_few_bands_are_summed_in_pieces():
    """The column cases above that take ``reduce.certified_in_pieces`` (pieces of rows of
    bands too few for the threads) and one that does not."""
    pieces = {name: reduce.column_pieces.py_func(COLUMNS[name][None])[0]
              for name in ("randn", "one band of full exps", "a tall band, in pieces",
                           "three rows")}
    assert pieces == {"randn": 3, "one band of full exps": 2, "a tall band, in pieces": 8,
                      "three rows": 1}


def lse_short(x, cheap=None):
    """``reduce.lse_short_rows`` of the rows of x (shorter than SHORT_ROW)."""
    out = np.empty(x.shape[0], np.float32)
    sign = np.empty_like(out)
    reduce.lse_short_rows(x, None, out, sign, cheap)
    return out, sign


def unchecked_columns(x, error, shift_rows):
    """The float32 results of a band's cheap sums (x: (1, n, width)) against the maxima of
    its first ``shift_rows`` rows before any column is summed again, which columns the
    certification flags, and whether the band foretold its certification."""
    width = x.shape[2]
    m, c, s, shift = np.empty(width), np.empty(width), np.empty(width), np.empty(width)
    reduce.column_max(x, None, 0, 0, shift, shift_rows)
    likely = reduce.likely_certified(x, 0, 0, shift, s, shift_rows)
    reduce.column_sums(x, 0, 0, shift, m, s, x.shape[1])
    reduce.one_tie_apart(shift, m, c, s)
    out = np.empty(width, np.float32)
    uncertain = np.empty(width, np.bool_)
    partials.finish_slices(m, c, s, out, None, uncertain, error)
    assert reduce.far_shifts(shift, m, uncertain) == 0
    return out, uncertain, likely


@pytest.mark.parametrize("max_row", ["first", "last"])
@pytest.mark.parametrize("rows", [40, 10])
def test_every_column_that_would_round_otherwise_is_summed_again(rows, max_row):
    """The columns' cheap sums alone round some columns to another float32 than the full exp
    (the data of the rows' test, transposed; and short rows of 10 as a tile takes them):
    each of those is flagged by the bound for their length (``reduce.column_sum_error``),
    few others are. The max in the column's first row is its shift; in its last, beyond
    the first 8 rows, the maxima of which are the shifts, the sums are rescaled to it (a
    band that the kernels would not take the cheap sums for: those rows foretell lse < 1)."""
    x = near_one(20000, np.random.default_rng(11))[:, :rows]
    x[:, 1:] = np.minimum(x[:, 1:], 0.9)  # max 1.0, lse in [1, 4)
    if max_row == "last":
        x = np.ascontiguousarray(x[:, ::-1])
    full_out = lse_short(x)[0] if rows < SHORT_ROW else lse_columns(x.T.copy())[0]
    out, uncertain, cheap_band = unchecked_columns(x.T.copy()[None], reduce.column_sum_error(rows), 8)
    assert cheap_band == (max_row == "first")
    differs = out != full_out
    assert differs.sum() > 0
    assert np.all(uncertain[differs])
    assert uncertain.mean() < (1 / 16 if rows >= SHORT_ROW else 1 / 100)
    cheap = (lse_short(x, partials.CERTIFIED) if rows < SHORT_ROW else
             lse_columns(x.T.copy(), partials.CERTIFIED))[0]
    np.testing.assert_array_equal(cheap, full_out)


def _short_rows():
    rng = np.random.default_rng(9)
    randn = rng.standard_normal((3000, 10))
    log_probabilities = randn - special_logsumexp(randn)
    # Most maxima >= CHEAP_FROM, and a third of the lse near 0 (rows of log-probabilities):
    # over an eighth of each tile uncertain, so each tile is summed again whole.
    many_uncertain = randn + 2
    many_uncertain[::3] = log_probabilities[::3]
    # The special rows (as the rows' test's, cut to 12) among rows whose max is >= 1, so that
    # their tiles take float32's exp: each summed again alone (a max of -inf or inf, whose
    # cheap sum means nothing, too), or certified (nan, 1e-30, ties).
    specials = np.repeat(rng.standard_normal((60, 12)) + 2, 5, axis=0)
    specials[::20] = np.tile(ROWS["specials"][:, :12], (2, 1))[:15]
    all_minus_inf = rng.standard_normal((900, 7)) + 2
    all_minus_inf[::4] = -np.inf  # a quarter of each tile: summed again whole
    return {
        "randn": randn,
        "randn + 2": randn + 2,
        "near one": near_one(3000, rng)[:, :10],
        "log-probabilities (full exp)": log_probabilities,
        "lse near 0 in a third": many_uncertain,
        "specials": specials,
        "all -inf in a quarter": all_minus_inf,
        "integers (ties)": rng.integers(-3, 4, size=(3000, 10)),
        "large": rng.standard_normal((700, 10)) * 1e30,
        "one column": rng.standard_normal((1000, 1)) + 2,
        "rows of 3": rng.standard_normal((1000, 3)) + 1,
        "rows of 31, a last partial tile": rng.standard_normal((777, SHORT_ROW - 1)),
        # logsumexp takes rows up to LSE_SHORT_ROW - 1 a tile at a time, not only SHORT_ROW - 1.
        "rows of 32": rng.standard_normal((600, SHORT_ROW)) + 1,
        "rows of 63, a last partial tile": rng.standard_normal((777, reduce.LSE_SHORT_ROW - 1)),
    }


SHORT_ROWS = _short_rows()


@pytest.mark.parametrize("name", SHORT_ROWS)
def test_certified_short_rows_are_the_full_exps_bits(name):
    """Tiles of short rows with and without CERTIFIED, and the public function."""
    x = np.asarray(SHORT_ROWS[name], dtype=np.float32)
    full_out, full_sign = lse_short(x)
    out, sign = lse_short(x, partials.CERTIFIED)
    np.testing.assert_array_equal(out, full_out)
    np.testing.assert_array_equal(sign, full_sign)
    np.testing.assert_array_equal(nl.logsumexp(x, axis=1), out)
    # Against an independent reference too: within a float32 ulp, or 2^-48 where the lse is
    # near 0 (ill-conditioned: m + log(c + s) cancels, in float64 as in SciPy's).
    with np.errstate(invalid="ignore"):
        reference = scipy.special.logsumexp(x.astype(np.float64), axis=1)
    finite = np.isfinite(reference)
    np.testing.assert_array_equal(out[~finite], reference[~finite].astype(np.float32))
    np.testing.assert_allclose(out[finite], reference[finite], rtol=2.0 ** -23, atol=2.0 ** -48)


def test_tiles_mostly_cheap_take_float32s_exp():
    """The data above exercise the cheap path (a tile at least half of whose maxima reach
    CHEAP_FROM) and the full one where they should."""
    def cheap_tiles(x):
        maxima = np.asarray(x, dtype=np.float32).max(axis=1)
        tiles = [maxima[r:r + reduce.LSE_TILE_ROWS] for r in range(0, len(maxima), reduce.LSE_TILE_ROWS)]
        return [bool(reduce.mostly_cheap(t.astype(np.float64))) for t in tiles]
    assert all(cheap_tiles(SHORT_ROWS["randn"]))
    assert not any(cheap_tiles(SHORT_ROWS["log-probabilities (full exp)"]))
    for name in ("lse near 0 in a third", "specials", "all -inf in a quarter"):
        assert all(cheap_tiles(SHORT_ROWS[name])), name


@pytest.mark.parametrize("scale, likely", [(1.0, True), (0.3, True), (0.05, True),
                                           ("log-probabilities", False)])
def test_bands_foretell_their_certification_from_their_first_rows(scale, likely):
    """A band of columns takes float32's exp where the lse of its first SHIFT_ROWS rows
    foretell lse >= 1 for half its columns: randn of any spread (lse ~ log 4096 = 8.3; of
    0.05 randn, no max reaches 1), not log-probabilities along the columns (lse 0)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4096, 512))
    x = x - special_logsumexp(x.T).T if scale == "log-probabilities" else x * scale
    band = x.astype(np.float32)[None]
    shift, s = np.empty(512), np.empty(512)
    reduce.column_max(band, None, 0, 0, shift, reduce.SHIFT_ROWS)
    assert reduce.likely_certified(band, 0, 0, shift, s, reduce.SHIFT_ROWS) == likely
    out, _ = lse_columns(band[0], partials.CERTIFIED)
    np.testing.assert_array_equal(out, lse_columns(band[0])[0])


def test_a_column_summed_again_alone_gets_the_bits_it_gets_among_others():
    """The full exp's sum of a column, alone (width 1, as an uncertain column is summed
    again) and in a band of 512 (a vector loop): the same bits."""
    x = (np.random.default_rng(2).standard_normal((1, 999, 512)) * 3).astype(np.float32)
    m, c, s = np.empty(512), np.empty(512), np.empty(512)
    reduce.column_max(x, None, 0, 0, m, x.shape[1])
    reduce.column_terms(x, None, 0, 0, m, c, s, None)
    for j in range(512):
        one_c, one_s = np.empty(1), np.empty(1)
        reduce.column_terms(x, None, 0, j, m[j:j + 1], one_c, one_s, None)
        assert (one_c[0], one_s[0]) == (c[j], s[j])
