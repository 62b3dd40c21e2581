"""Tests for sepconv.cost against closed forms and brute-force counts.

Every expected value here is computed in the test itself (a formula written out, or a count
taken by enumerating the multiply-adds of a naive loop, or the size of a naive weight tensor),
never read back from the module.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from sepconv import cost

# ----------------------------------------------------------------------------------------------
# brute-force helpers (independent of sepconv.cost)
# ----------------------------------------------------------------------------------------------


def naive_grouped_conv_pixel(x: np.ndarray, w: np.ndarray, groups: int) -> tuple[np.ndarray, int]:
    """One output pixel of a grouped correlation, by explicit loops; returns (outputs, MACs).

    ``x`` has shape ``(C_in, *k)`` (the receptive field of the pixel), ``w`` has PyTorch's
    weight shape ``(C_out, C_in // groups, *k)``. Every ``acc += a * b`` counts one MAC.
    """
    cin = x.shape[0]
    cout = w.shape[0]
    k = w.shape[2:]
    cin_g, cout_g = cin // groups, cout // groups
    out = np.zeros(cout)
    macs = 0
    for co in range(cout):
        g = co // cout_g
        acc = 0.0
        for ci_local in range(cin_g):
            ci = g * cin_g + ci_local
            for offset in itertools.product(*(range(n) for n in k)):
                acc += x[(ci, *offset)] * w[(co, ci_local, *offset)]
                macs += 1
        out[co] = acc
    return out, macs


def vectorised_grouped_conv_pixel(x: np.ndarray, w: np.ndarray, groups: int) -> np.ndarray:
    """The same pixel with einsum, to check the loop really is a grouped convolution."""
    cin, cout = x.shape[0], w.shape[0]
    xs = x.reshape(groups, cin // groups, -1)
    ws = w.reshape(groups, cout // groups, cin // groups, -1)
    return np.einsum("gik,goik->go", xs, ws).reshape(cout)


def naive_depthwise_separable_pixel(
    x: np.ndarray, w_dw: np.ndarray, w_pw: np.ndarray, m: int
) -> tuple[np.ndarray, int]:
    """Depthwise (multiplier ``m``) then pointwise 1x1 at one pixel, by loops; (outputs, MACs)."""
    cin = x.shape[0]
    k = w_dw.shape[2:]
    mid = np.zeros(cin * m)
    macs = 0
    for c in range(cin * m):
        src = c // m  # PyTorch's groups=C_in layout: output channel c reads input c // m
        acc = 0.0
        for offset in itertools.product(*(range(n) for n in k)):
            acc += x[(src, *offset)] * w_dw[(c, 0, *offset)]
            macs += 1
        mid[c] = acc
    cout = w_pw.shape[0]
    out = np.zeros(cout)
    for co in range(cout):
        acc = 0.0
        for c in range(cin * m):
            acc += mid[c] * w_pw[(co, c) + (0,) * len(k)]
            macs += 1
        out[co] = acc
    return out, macs


def torch_output_size(n: int, k: int, s: int, p: int, d: int) -> int:
    """PyTorch's Conv formula: floor((n + 2p - d (k - 1) - 1) / s) + 1."""
    return math.floor((n + 2 * p - d * (k - 1) - 1) / s) + 1


def enumerate_output_positions(n: int, k: int, s: int, p: int, d: int) -> int:
    """Count window placements on the padded input by enumeration."""
    padded = n + 2 * p
    return sum(1 for start in range(0, padded, s) if start + d * (k - 1) < padded)


# ----------------------------------------------------------------------------------------------
# the article's numbers
# ----------------------------------------------------------------------------------------------


def test_article_7x7_kernel_is_49_direct_vs_14_separable_macs():
    assert cost.kernel_macs((7, 7)) == 7 * 7 == 49
    assert cost.kernel_macs((7, 7), "separable") == 7 + 7 == 14


def test_article_10x10x10_kernel_is_1000_vs_30_macs_over_30_times():
    direct = cost.kernel_macs((10, 10, 10))
    separable = cost.kernel_macs((10, 10, 10), "separable")
    assert (direct, separable) == (1000, 30)
    assert direct / separable > 30
    assert direct / separable == pytest.approx(10**2 / 3, rel=1e-15)


def test_article_3x3_conv_64_to_128_is_73728_macs_per_pixel():
    assert cost.conv_macs(64, 128, 3) == 3 * 3 * 64 * 128 == 73_728


def test_article_depthwise_separable_64_to_128_is_8768_macs():
    assert cost.depthwise_separable_macs(64, 128, 3) == 9 * 64 + 64 * 128 == 8768


@pytest.mark.parametrize("K", range(3, 16))
def test_3d_kernel_ratio_direct_over_separable_is_k_squared_over_3(K):
    direct = cost.kernel_macs((K,) * 3)
    separable = cost.kernel_macs((K,) * 3, "separable")
    assert direct == K**3
    assert separable == 3 * K
    assert Fraction(direct, separable) == Fraction(K**2, 3)


@pytest.mark.parametrize("shape", [(5,), (3, 3), (7, 5), (4, 6, 8), (2, 3, 4, 5)])
@pytest.mark.parametrize("rank", [1, 2, 5])
def test_kernel_macs_closed_forms_prod_sum_and_rank_times_sum(shape, rank):
    assert cost.kernel_macs(shape) == math.prod(shape)
    assert cost.kernel_macs(shape, "separable") == sum(shape)
    assert cost.kernel_macs(shape, "lowrank", rank=rank) == rank * sum(shape)
    assert cost.kernel_costs(shape, rank=rank) == {
        "direct": math.prod(shape),
        "separable": sum(shape),
        "lowrank": rank * sum(shape),
    }


def test_kernel_macs_accepts_a_scalar_shape_as_one_axis():
    assert cost.kernel_macs(9) == 9
    assert cost.kernel_macs(9, "separable") == 9


# ----------------------------------------------------------------------------------------------
# the depthwise-separable ratio C_out K / (K + C_out)
# ----------------------------------------------------------------------------------------------

RATIO_CASES = [
    (cin, cout, k, dims)
    for cin, cout in [(1, 1), (3, 16), (16, 3), (32, 64), (64, 128), (96, 96), (512, 1024)]
    for k, dims in [(3, 2), (5, 2), ((3, 5), 2), (1, 2), (3, 1), (7, 1), (3, 3), ((3, 5, 7), 3)]
]


@pytest.mark.parametrize(("cin", "cout", "k", "dims"), RATIO_CASES)
def test_ds_ratio_formula_equals_standard_over_depthwise_separable(cin, cout, k, dims):
    K = math.prod(k) if isinstance(k, tuple) else k**dims
    standard = K * cin * cout
    separable = K * cin + cin * cout
    formula = Fraction(cout * K, K + cout)
    assert cost.conv_macs(cin, cout, k, dims=dims) == standard
    assert cost.depthwise_separable_macs(cin, cout, k, dims=dims) == separable
    assert Fraction(standard, separable) == formula
    assert cost.ds_ratio(cout, k, dims=dims) == pytest.approx(float(formula), rel=1e-14)


@pytest.mark.parametrize(("cout", "k", "dims"), [(128, 3, 2), (64, 5, 1), (32, 3, 3), (7, 2, 2)])
def test_ds_ratio_is_independent_of_in_channels(cout, k, dims):
    ratios = {
        Fraction(
            cost.conv_macs(cin, cout, k, dims=dims),
            cost.depthwise_separable_macs(cin, cout, k, dims=dims),
        )
        for cin in (1, 2, 3, 17, 64, 1000)
    }
    K = k**dims
    assert ratios == {Fraction(cout * K, K + cout)}


@pytest.mark.parametrize("cout", [128, 192, 256, 384, 512, 768, 1024])
def test_typical_3x3_layers_save_between_8_and_9_times(cout):
    ratio = cost.ds_ratio(cout, 3)
    assert 8 < ratio < 9
    assert ratio == pytest.approx(9 * cout / (9 + cout), rel=1e-14)
    assert cost.conv_macs(cout // 2, cout, 3) / cost.depthwise_separable_macs(
        cout // 2, cout, 3
    ) == pytest.approx(ratio, rel=1e-14)


def test_ds_ratio_approaches_kernel_area_for_wide_layers():
    # C_out K / (K + C_out) -> K as C_out -> infinity, and is always below K.
    for k, dims in [(3, 2), (5, 2), (3, 3)]:
        K = k**dims
        ratios = [cost.ds_ratio(c, k, dims=dims) for c in (8, 64, 512, 4096, 2**20)]
        assert ratios == sorted(ratios)
        assert all(r < K for r in ratios)
        assert ratios[-1] == pytest.approx(K, rel=1e-3)


# ----------------------------------------------------------------------------------------------
# brute-force MAC and parameter counts
# ----------------------------------------------------------------------------------------------

GROUPED_CASES = [
    # (cin, cout, kernel_size, dims, groups)
    (1, 1, 3, 2, 1),
    (2, 3, 3, 2, 1),
    (4, 6, (3, 2), 2, 2),
    (4, 4, 3, 2, 4),  # depthwise
    (6, 4, 2, 2, 2),
    (3, 5, 4, 1, 1),
    (6, 6, 3, 1, 3),
    (2, 4, (2, 3, 2), 3, 2),
    (4, 8, 1, 2, 4),
]


def _full_kernel(kernel_size, dims):
    return tuple(kernel_size) if isinstance(kernel_size, tuple) else (kernel_size,) * dims


@pytest.mark.parametrize(("cin", "cout", "ks", "dims", "groups"), GROUPED_CASES)
def test_conv_macs_matches_multiply_adds_counted_in_a_naive_grouped_conv(
    cin, cout, ks, dims, groups
):
    k = _full_kernel(ks, dims)
    rng = np.random.default_rng(cin * 100 + cout * 10 + groups)
    x = rng.standard_normal((cin, *k))
    w = rng.standard_normal((cout, cin // groups, *k))
    out, macs = naive_grouped_conv_pixel(x, w, groups)
    np.testing.assert_allclose(out, vectorised_grouped_conv_pixel(x, w, groups), rtol=1e-12)
    assert cost.conv_macs(cin, cout, ks, dims=dims, groups=groups) == macs


@pytest.mark.parametrize(("cin", "cout", "ks", "dims", "groups"), GROUPED_CASES)
def test_conv_params_equals_size_of_naive_weight_tensor_plus_bias(cin, cout, ks, dims, groups):
    k = _full_kernel(ks, dims)
    weight = np.empty((cout, cin // groups, *k))
    bias = np.empty(cout)
    assert cost.conv_params(cin, cout, ks, dims=dims, groups=groups) == weight.size
    assert cost.conv_params(cin, cout, ks, dims=dims, groups=groups, bias=True) == (
        weight.size + bias.size
    )


DS_CASES = [
    # (cin, cout, kernel_size, dims, depth_multiplier)
    (1, 1, 3, 2, 1),
    (3, 5, 3, 2, 1),
    (3, 5, 3, 2, 2),
    (4, 2, (3, 5), 2, 3),
    (2, 6, 5, 1, 2),
    (2, 3, 3, 3, 1),
    (2, 3, (2, 3, 4), 3, 2),
]


@pytest.mark.parametrize(("cin", "cout", "ks", "dims", "m"), DS_CASES)
def test_depthwise_separable_macs_match_naive_loop_count(cin, cout, ks, dims, m):
    k = _full_kernel(ks, dims)
    rng = np.random.default_rng(7 * cin + cout + 31 * m)
    x = rng.standard_normal((cin, *k))
    w_dw = rng.standard_normal((cin * m, 1, *k))
    w_pw = rng.standard_normal((cout, cin * m, *(1,) * dims))
    out, macs = naive_depthwise_separable_pixel(x, w_dw, w_pw, m)
    # the depthwise step is the grouped conv with groups = C_in; check the loop against it
    mid, _ = naive_grouped_conv_pixel(x, w_dw, cin)
    np.testing.assert_allclose(out, w_pw.reshape(cout, cin * m) @ mid, rtol=1e-12)
    assert cost.depthwise_separable_macs(cin, cout, ks, dims=dims, depth_multiplier=m) == macs


@pytest.mark.parametrize(("cin", "cout", "ks", "dims", "m"), DS_CASES)
def test_depthwise_separable_params_equal_naive_weight_tensor_sizes(cin, cout, ks, dims, m):
    k = _full_kernel(ks, dims)
    w_dw = np.empty((cin * m, 1, *k))
    w_pw = np.empty((cout, cin * m, *(1,) * dims))
    biases = cin * m + cout
    assert cost.depthwise_separable_params(cin, cout, ks, dims=dims, depth_multiplier=m) == (
        w_dw.size + w_pw.size
    )
    assert cost.depthwise_separable_params(
        cin, cout, ks, dims=dims, depth_multiplier=m, bias=True
    ) == (w_dw.size + w_pw.size + biases)


def test_depthwise_conv_macs_are_kernel_area_times_channels():
    # groups = C_in = C_out: each output channel reads one input channel.
    assert cost.conv_macs(32, 32, 3, groups=32) == 9 * 32
    assert cost.conv_macs(32, 64, 3, groups=32) == 9 * 64  # depth multiplier 2


# ----------------------------------------------------------------------------------------------
# conv_output_size
# ----------------------------------------------------------------------------------------------

OUTPUT_GRID = list(
    itertools.product(range(1, 13), range(1, 6), range(1, 4), range(0, 3), range(1, 4))
)


def test_conv_output_size_matches_pytorch_formula_and_enumeration_on_a_grid():
    checked = refused = 0
    for n, k, s, p, d in OUTPUT_GRID:
        expected = torch_output_size(n, k, s, p, d)
        assert enumerate_output_positions(n, k, s, p, d) == max(expected, 0)
        if expected >= 1:
            got = cost.conv_output_size(n, k, dims=1, stride=s, padding=p, dilation=d)
            assert got == (expected,), (n, k, s, p, d)
            checked += 1
        else:
            with pytest.raises(ValueError, match="too small"):
                cost.conv_output_size(n, k, dims=1, stride=s, padding=p, dilation=d)
            refused += 1
    assert checked > 1000
    assert refused > 0


def test_conv_output_size_per_axis_values_in_2d_and_3d():
    assert cost.conv_output_size(
        (32, 17), (3, 5), stride=(2, 1), padding=(1, 0), dilation=(1, 2)
    ) == (
        torch_output_size(32, 3, 2, 1, 1),
        torch_output_size(17, 5, 1, 0, 2),
    )
    assert cost.conv_output_size((9, 10, 11), 3, dims=3, stride=2) == tuple(
        torch_output_size(n, 3, 2, 0, 1) for n in (9, 10, 11)
    )
    assert cost.conv_output_size(224, 3, stride=2, padding=1) == (112, 112)
    assert cost.conv_output_size(224, 7, padding="valid") == (218, 218)


@pytest.mark.parametrize("n", [1, 2, 5, 7, 8, 224, 225])
@pytest.mark.parametrize("s", [1, 2, 3, 4])
@pytest.mark.parametrize("k", [1, 3, 4, 7])
def test_conv_output_size_same_padding_is_ceil_of_size_over_stride(n, s, k):
    assert cost.conv_output_size(n, k, dims=2, stride=s, padding="same") == (math.ceil(n / s),) * 2


# ----------------------------------------------------------------------------------------------
# compare_conv
# ----------------------------------------------------------------------------------------------


def test_compare_conv_per_pixel_table_for_the_article_layer():
    c = cost.compare_conv(64, 128, 3)
    assert c["standard"].macs_per_pixel == 9 * 64 * 128
    assert c["depthwise"].macs_per_pixel == 9 * 64
    assert c["pointwise"].macs_per_pixel == 64 * 128
    assert c["depthwise_separable"].macs_per_pixel == 9 * 64 + 64 * 128
    assert c["standard"].macs is None
    assert c["ratio"]["macs"] == pytest.approx(73_728 / 8_768, rel=1e-14)
    assert c["ratio"]["formula"] == pytest.approx(128 * 9 / (9 + 128), rel=1e-14)
    assert c["kernel_size"] == [3, 3]
    assert (c["in_channels"], c["out_channels"], c["dims"], c["depth_multiplier"]) == (
        64,
        128,
        2,
        1,
    )


@pytest.mark.parametrize(
    ("cin", "cout", "k", "dims", "size", "stride"),
    [
        (64, 128, 3, 2, 224, 2),
        (64, 128, 3, 2, 224, 1),
        (3, 32, 3, 2, (225, 113), 2),
        (8, 16, 3, 3, 33, 2),
        (8, 16, 5, 1, 1000, 3),
    ],
)
def test_compare_conv_totals_are_per_pixel_macs_times_output_pixels(
    cin, cout, k, dims, size, stride
):
    c = cost.compare_conv(cin, cout, k, dims=dims, input_size=size, stride=stride)
    sizes = size if isinstance(size, tuple) else (size,) * dims
    pixels = math.prod(math.ceil(n / stride) for n in sizes)  # padding 'same'
    K = k**dims
    per_pixel = {
        "standard": K * cin * cout,
        "depthwise": K * cin,
        "pointwise": cin * cout,
        "depthwise_separable": K * cin + cin * cout,
    }
    for key, macs in per_pixel.items():
        assert c[key].macs_per_pixel == macs, key
        assert c[key].macs == macs * pixels, key
        assert c[key].to_dict()["macs"] == macs * pixels


def test_compare_conv_224_stride_2_total_is_112_squared_pixels():
    c = cost.compare_conv(64, 128, 3, input_size=224, stride=2)
    assert c["standard"].macs == 73_728 * 112 * 112
    assert c["depthwise_separable"].macs == 8_768 * 112 * 112


@pytest.mark.parametrize("m", [2, 3, 4])
def test_compare_conv_depth_multiplier_scales_depthwise_and_pointwise(m):
    cin, cout, K = 16, 48, 9
    c = cost.compare_conv(cin, cout, 3, depth_multiplier=m, bias=True)
    assert c["depth_multiplier"] == m
    assert c["standard"].macs_per_pixel == K * cin * cout
    assert c["depthwise"].macs_per_pixel == K * cin * m
    assert c["pointwise"].macs_per_pixel == cin * m * cout
    assert c["depthwise_separable"].macs_per_pixel == K * cin * m + cin * m * cout
    # params with biases: standard (cout), depthwise (cin*m), pointwise (cout)
    assert c["standard"].params == K * cin * cout + cout
    assert c["depthwise"].params == K * cin * m + cin * m
    assert c["pointwise"].params == cin * m * cout + cout
    assert c["depthwise_separable"].params == K * cin * m + cin * m + cin * m * cout + cout
    expected_ratio = (K * cin * cout) / (K * cin * m + cin * m * cout)
    assert c["ratio"]["macs"] == pytest.approx(expected_ratio, rel=1e-14)
    # the closed form with the multiplier: C_out K / (m (K + C_out)), m times below m = 1's
    assert c["ratio"]["formula"] == pytest.approx(cout * K / (m * (K + cout)), rel=1e-14)
    assert c["ratio"]["formula"] == pytest.approx(expected_ratio, rel=1e-14)
    assert cost.ds_ratio(cout, 3, depth_multiplier=m) == pytest.approx(expected_ratio, rel=1e-14)


@pytest.mark.parametrize(("cin", "cout", "k", "dims", "m"), [(32, 64, 3, 2, 2), (8, 5, 7, 1, 3)])
def test_compare_conv_formula_counts_the_depth_multiplier(cin, cout, k, dims, m):
    """compare_conv(32, 64, 3, depth_multiplier=2)["ratio"]["formula"] was 7.890 (m = 1's
    value); the closed form C_out K / (m (K + C_out)) is 3.945."""
    K = k**dims
    closed = Fraction(cout * K, m * (K + cout))
    c = cost.compare_conv(cin, cout, k, dims=dims, depth_multiplier=m)
    assert c["ratio"]["formula"] == pytest.approx(float(closed), rel=1e-14)
    assert c["ratio"]["macs"] == pytest.approx(float(closed), rel=1e-14)
    assert Fraction(K * cin * cout, cin * m * (K + cout)) == closed  # MACs counted by hand
    if (cin, cout, k, m) == (32, 64, 3, 2):
        assert round(c["ratio"]["formula"], 3) == 3.945


def test_ds_ratio_refuses_a_bad_depth_multiplier():
    with pytest.raises(ValueError, match="depth_multiplier must be an integer >= 1, got 0"):
        cost.ds_ratio(64, 3, depth_multiplier=0)
    with pytest.raises(TypeError, match="depth_multiplier must be an integer, got True"):
        cost.ds_ratio(64, 3, depth_multiplier=True)


@pytest.mark.parametrize("n", [np.int64(5), np.int32(5), np.uint8(5)])
def test_kernel_macs_takes_a_numpy_integer_like_an_int(n):
    assert cost.kernel_macs(n) == cost.kernel_macs(5) == 5
    assert cost.kernel_macs(n, "separable") == 5
    assert cost.kernel_macs((n, np.int64(3))) == 15


@pytest.mark.parametrize("flag", [True, np.bool_(True)])
def test_kernel_macs_still_refuses_a_bool_shape(flag):
    with pytest.raises(TypeError, match="shape must be"):
        cost.kernel_macs(flag)


def test_compare_conv_params_ratio_without_bias_equals_macs_ratio():
    c = cost.compare_conv(32, 96, (3, 5))
    assert c["ratio"]["params"] == pytest.approx(c["ratio"]["macs"], rel=1e-15)
    assert c["kernel_size"] == [3, 5]
    assert c["standard"].params == 15 * 32 * 96


# ----------------------------------------------------------------------------------------------
# FFT model
# ----------------------------------------------------------------------------------------------


def _fft_model(k, n):
    padded = math.prod(ni + ki - 1 for ni, ki in zip(n, k, strict=True))
    return padded / math.prod(n) * (cost.FFT_MACS_PER_LOG2 * math.log2(padded) + 2.0)


@pytest.mark.parametrize(
    ("k", "n"),
    [((63, 63), (512, 512)), ((3,), (100,)), ((7, 7), (1024, 1024)), ((5, 5, 5), (64, 64, 64))],
)
def test_fft_model_matches_the_documented_formula(k, n):
    got = cost.kernel_macs(k, "fft", data_shape=n)
    assert math.isfinite(got)
    assert got == pytest.approx(_fft_model(k, n), rel=1e-12)


def test_fft_model_docstring_value_for_63x63_on_512x512():
    assert round(cost.kernel_macs((63, 63), "fft", data_shape=(512, 512)), 1) == 60.1


@pytest.mark.parametrize("K", [3, 15, 63])
def test_fft_model_grows_with_data_size_once_data_dwarfs_the_kernel(K):
    sizes = [2**j for j in range(6, 16) if 2**j >= 32 * K]
    costs = [cost.kernel_macs((K, K), "fft", data_shape=(n, n)) for n in sizes]
    assert len(costs) >= 3
    assert all(math.isfinite(c) and c > 0 for c in costs)
    assert costs == sorted(costs)
    assert costs[-1] > costs[0]


def test_fft_model_is_independent_of_kernel_size_in_the_limit_and_beats_direct_for_big_kernels():
    big = cost.kernel_macs((63, 63), "fft", data_shape=(4096, 4096))
    assert big < cost.kernel_macs((63, 63))
    small = cost.kernel_macs((3, 3), "fft", data_shape=(4096, 4096))
    assert small > cost.kernel_macs((3, 3))


def test_kernel_costs_includes_fft_only_with_data_shape():
    assert "fft" not in cost.kernel_costs((7, 7))
    with_fft = cost.kernel_costs((7, 7), data_shape=(256, 256))
    assert with_fft["fft"] == pytest.approx(_fft_model((7, 7), (256, 256)), rel=1e-12)


def test_fft_requires_data_shape():
    with pytest.raises(ValueError, match="data_shape"):
        cost.kernel_macs((7, 7), "fft")


@pytest.mark.parametrize("data_shape", [(100,), (100, 100, 100)])
def test_fft_data_shape_length_must_match_kernel_rank(data_shape):
    with pytest.raises(ValueError, match=r"data_shape must have one entry per kernel axis \(2\)"):
        cost.kernel_macs((7, 7), "fft", data_shape=data_shape)


@pytest.mark.parametrize("data_shape", [(0, 100), (100, -1)])
def test_fft_data_shape_entries_must_be_positive(data_shape):
    with pytest.raises(ValueError, match="data_shape"):
        cost.kernel_macs((7, 7), "fft", data_shape=data_shape)


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["FFT", "dense", "", "svd"])
def test_unknown_method_is_refused_listing_the_allowed_ones(method):
    with pytest.raises(
        ValueError, match=r"method must be one of .*direct.*separable.*lowrank.*fft"
    ):
        cost.kernel_macs((3, 3), method)


@pytest.mark.parametrize("rank", [0, -1])
def test_rank_below_one_is_refused(rank):
    with pytest.raises(ValueError, match=r"rank must be an integer >= 1"):
        cost.kernel_macs((3, 3), "lowrank", rank=rank)
    with pytest.raises(ValueError, match=r"rank must be an integer >= 1"):
        cost.kernel_costs((3, 3), rank=rank)


def test_kernel_shape_must_have_positive_axes():
    with pytest.raises(ValueError, match="at least one axis"):
        cost.kernel_macs(())
    with pytest.raises(ValueError, match=r"shape must be an integer >= 1, got 0"):
        cost.kernel_macs((3, 0))
    with pytest.raises(ValueError, match=r"shape must be an integer >= 1, got -2"):
        cost.kernel_macs(-2)


@pytest.mark.parametrize(
    ("func", "args", "name"),
    [
        (cost.conv_macs, (0, 8, 3), "in_channels"),
        (cost.conv_macs, (8, 0, 3), "out_channels"),
        (cost.conv_macs, (-4, 8, 3), "in_channels"),
        (cost.conv_params, (8, -1, 3), "out_channels"),
        (cost.depthwise_separable_macs, (0, 8, 3), "in_channels"),
        (cost.depthwise_separable_params, (8, 0, 3), "out_channels"),
        (cost.compare_conv, (0, 8, 3), "in_channels"),
        (cost.ds_ratio, (0, 3), "out_channels"),
    ],
)
def test_zero_or_negative_channels_are_refused(func, args, name):
    with pytest.raises(ValueError, match=rf"{name} must be an integer >= 1"):
        func(*args)


@pytest.mark.parametrize(("cin", "cout", "groups"), [(8, 8, 3), (6, 8, 3), (8, 6, 3), (4, 4, 8)])
def test_groups_must_divide_both_channel_counts(cin, cout, groups):
    with pytest.raises(ValueError, match=r"groups must divide in_channels"):
        cost.conv_macs(cin, cout, 3, groups=groups)
    with pytest.raises(ValueError, match=r"groups must divide in_channels"):
        cost.conv_params(cin, cout, 3, groups=groups)


def test_groups_zero_is_refused():
    with pytest.raises(ValueError, match=r"groups must be an integer >= 1"):
        cost.conv_macs(8, 8, 3, groups=0)


@pytest.mark.parametrize("kernel_size", [0, (3, 0), -3])
def test_kernel_size_zero_or_negative_is_refused(kernel_size):
    with pytest.raises(ValueError, match=r"kernel_size must be an integer >= 1"):
        cost.conv_macs(8, 8, kernel_size)
    with pytest.raises(ValueError, match=r"kernel_size must be an integer >= 1"):
        cost.ds_ratio(8, kernel_size)


@pytest.mark.parametrize(("kernel_size", "dims"), [((3, 3, 3), 2), ((3,), 2), ((3, 3), 3)])
def test_kernel_size_sequence_of_wrong_length_is_refused(kernel_size, dims):
    match = rf"kernel_size must be a scalar or a sequence of {dims} values"
    with pytest.raises(ValueError, match=match):
        cost.conv_macs(8, 8, kernel_size, dims=dims)
    with pytest.raises(ValueError, match=match):
        cost.compare_conv(8, 8, kernel_size, dims=dims)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: cost.conv_macs(True, 8, 3), "in_channels"),
        (lambda: cost.conv_macs(8, True, 3), "out_channels"),
        (lambda: cost.conv_macs(8, 8, True), "kernel_size"),
        (lambda: cost.conv_macs(8, 8, (3, False)), "kernel_size"),
        (lambda: cost.conv_macs(8, 8, 3, groups=True), "groups"),
        (lambda: cost.conv_macs(8, 8, 3, dims=True), "dims"),
        (lambda: cost.conv_params(8, 8, 3, dims=False), "dims"),
        (lambda: cost.depthwise_separable_macs(8, 8, 3, depth_multiplier=True), "depth_multiplier"),
        (lambda: cost.compare_conv(8, 8, 3, depth_multiplier=True), "depth_multiplier"),
        (lambda: cost.kernel_macs((3, 3), "lowrank", rank=True), "rank"),
        (lambda: cost.kernel_macs((True, 3)), "shape"),
        (lambda: cost.kernel_macs(True), "shape"),
        (lambda: cost.ds_ratio(True, 3), "out_channels"),
        (lambda: cost.conv_output_size(10, 3, stride=True), "stride"),
        (lambda: cost.conv_output_size(10, 3, padding=True), "padding"),
        (lambda: cost.conv_output_size(10, 3, dilation=True), "dilation"),
        (lambda: cost.conv_output_size(True, 3), "input_size"),
        (lambda: cost.compare_conv(8, 8, 3, input_size=True), "input_size"),
    ],
)
def test_bools_where_ints_are_expected_raise_type_error(call, name):
    with pytest.raises(TypeError, match=name):
        call()


@pytest.mark.parametrize("value", [8.0, "8", None])
def test_non_integer_channels_raise_type_error(value):
    with pytest.raises(TypeError, match="in_channels must be an integer"):
        cost.conv_macs(value, 8, 3)


def test_conv_output_size_refuses_bad_padding_and_stride():
    with pytest.raises(TypeError, match="padding"):
        cost.conv_output_size(10, 3, padding="full")
    with pytest.raises(ValueError, match=r"padding must be an integer >= 0"):
        cost.conv_output_size(10, 3, padding=-1)
    with pytest.raises(ValueError, match=r"stride must be an integer >= 1"):
        cost.conv_output_size(10, 3, stride=0)
    with pytest.raises(ValueError, match=r"dilation must be an integer >= 1"):
        cost.conv_output_size(10, 3, dilation=0)
    with pytest.raises(ValueError, match=r"input_size must be a scalar or a sequence of 2"):
        cost.conv_output_size((10, 10, 10), 3)


def test_compare_conv_refuses_depth_multiplier_zero():
    with pytest.raises(ValueError, match=r"depth_multiplier must be an integer >= 1"):
        cost.compare_conv(8, 8, 3, depth_multiplier=0)


@pytest.mark.parametrize("stride", [0, -1])
def test_compare_conv_refuses_bad_stride_even_without_input_size(stride):
    with pytest.raises(ValueError, match="stride"):
        cost.compare_conv(8, 8, 3, stride=stride)


def test_bias_must_be_a_bool():
    with pytest.raises(TypeError, match="bias"):
        cost.conv_params(8, 8, 3, bias="no")


@pytest.mark.parametrize("method", ["direct", "separable", "fft"])
def test_kernel_macs_refuses_a_rank_it_would_ignore(method):
    """Before: kernel_macs((7, 7), 'separable', rank=3) returned 14, the rank ignored."""
    with pytest.raises(
        ValueError, match=rf"rank applies to method='lowrank'.*rank=3 with method='{method}'"
    ):
        cost.kernel_macs((7, 7), method, rank=3, data_shape=(64, 64))
    assert cost.kernel_macs((7, 7), "lowrank", rank=3) == 3 * 14
