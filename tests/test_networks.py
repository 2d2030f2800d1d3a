"""The critic ensemble's hand-written paths against independent computations: the grouped
layout and matmul by hand, the min-over-critics action gradient against autodiff of flax's
`nn.vmap(Critic)`, and the bfloat16 matmul option against float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learner import networks
from learner.networks import CriticEnsemble, ensemble_min_q_and_action_grad


def test_group_layout_by_hand():
    # Groups of 5 rows: group 0 = {1}, group 1 = {3}, group 2 = {0, 2, 4}; tiles of 2 rows:
    # group 0 -> tile 0, group 1 -> tile 1, group 2 -> tiles 2 and 3 (one padding row).
    # 6 tiles are allocated (ceil(5 / 2) + 3 groups); the two unused ones are padding.
    position, source, tile_group = networks._group_layout(jnp.array([2, 0, 2, 1, 2]), 3, 2)
    n = 5  # the padding index
    np.testing.assert_array_equal(position, [4, 0, 5, 2, 6])
    np.testing.assert_array_equal(source, [1, n, 3, n, 0, 2, 4, n, n, n, n, n])
    np.testing.assert_array_equal(tile_group, [0, 1, 2, 2, 2, 2])


@pytest.mark.parametrize("groups", [[0, 1, 2, 0, 2, 2, 1, 0, 2], [1] * 9, [2, 0, 0, 0, 0, 0, 0, 0, 0]], ids=["mixed", "one-group", "skewed"])
def test_grouped_matmul_t_is_each_row_times_its_groups_weights(groups):
    rs = np.random.RandomState(0)
    rows = rs.normal(size=(9, 4)).astype(np.float32)
    weights = rs.normal(size=(3, 5, 4)).astype(np.float32)  # (groups, in, out)
    layout = networks._group_layout(jnp.array(groups), 3, 2)
    out = networks._grouped_matmul_t(jnp.asarray(rows), jnp.asarray(weights), layout, 2, "float32")
    expected = np.stack([weights[g] @ r for g, r in zip(groups, rows)])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def _ensemble_and_params(hidden, layer_norm, obs_dim, act_dim, seed, num_critics=10):
    module = CriticEnsemble(num_critics, hidden, layer_norm)
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = module.init(keys[0], jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim)))["params"]
    # Perturb everything (LayerNorm scales and biases included) so no parameter is trivial.
    leaves, tree = jax.tree_util.tree_flatten(params)
    leaves = [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, jax.random.split(keys[1], len(leaves)))]
    return module, jax.tree_util.tree_unflatten(tree, leaves)


def _vmap_min_q_and_grad(module, params, obs, act):
    """The reference: autodiff of min over flax's vmapped critics."""
    CriticEnsemble.implementation = "vmap"
    try:
        q = module.apply({"params": params}, obs, act).min(0)
        grad = jax.grad(lambda a: module.apply({"params": params}, obs, a).min(0).sum())(act)
    finally:
        CriticEnsemble.implementation = "fused"
    return q, grad


@pytest.mark.parametrize(
    "hidden, layer_norm, n, chunk, skew",
    [
        ((32, 32), True, 512, 128, None),  # chunked forward, several tiles per critic
        ((8, 8, 8), True, 40, 256, None),  # one chunk, under one tile
        ((16,), False, 300, 100, None),  # no LayerNorm, 3 chunks
        ((32, 32), True, 300, 100, 3),  # every sample minimized by critic 3: one group of all rows
    ],
    ids=["2x32", "3x8-small", "1x16-no-ln", "one-critic"],
)
def test_min_q_and_action_grad_matches_autodiff_of_the_min(hidden, layer_norm, n, chunk, skew):
    obs_dim, act_dim = 5, 3
    module, params = _ensemble_and_params(hidden, layer_norm, obs_dim, act_dim, seed=n)
    if skew is not None:  # shift one critic's output far below the others
        bias = params["critics"]["Dense_0"]["bias"]
        params["critics"]["Dense_0"]["bias"] = bias.at[skew].add(-100.0)
    rs = np.random.RandomState(n)
    obs = jnp.asarray(rs.normal(size=(n, obs_dim)), jnp.float32)
    act = jnp.asarray(rs.uniform(-1, 1, size=(n, act_dim)), jnp.float32)

    q, grad = jax.jit(
        lambda p, o, a: ensemble_min_q_and_action_grad(p["critics"], o, a, len(hidden), layer_norm, chunk)
    )(params, obs, act)
    ref_q, ref_grad = _vmap_min_q_and_grad(module, params, obs, act)

    assert q.shape == (n,) and grad.shape == (n, act_dim)
    selected = np.bincount(np.argmin(np.asarray(module.apply({"params": params}, obs, act)), 0), minlength=10)
    assert (selected == n).any() if skew is not None else (selected > 0).sum() >= 3
    np.testing.assert_allclose(q, ref_q, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(ref_grad).max()) > 0.1  # a real gradient, not zeros on both sides


def test_bfloat16_matmuls_round_inputs_but_stay_close_to_float32():
    """critic_matmul_dtype=bfloat16: Q-values and parameter gradients of a locomotion-sized
    ensemble differ from float32 (the option is in effect) by well under 1%."""
    obs_dim, act_dim, hidden = 17, 6, (256, 256)
    module, params = _ensemble_and_params(hidden, True, obs_dim, act_dim, seed=1)
    bf16 = CriticEnsemble(10, hidden, True, "bfloat16")
    rs = np.random.RandomState(1)
    obs = jnp.asarray(rs.normal(size=(256, obs_dim)), jnp.float32)
    act = jnp.asarray(rs.uniform(-1, 1, size=(256, act_dim)), jnp.float32)
    target = jnp.asarray(rs.normal(size=(256,)), jnp.float32)

    def q_and_grads(m):
        q = m.apply({"params": params}, obs, act)
        grads = jax.grad(lambda p: jnp.mean((m.apply({"params": p}, obs, act) - target) ** 2))(params)
        return q, grads

    q32, g32 = jax.jit(lambda: q_and_grads(module))()
    q16, g16 = jax.jit(lambda: q_and_grads(bf16))()
    assert q16.dtype == jnp.float32
    rel = float(jnp.linalg.norm(q16 - q32) / jnp.linalg.norm(q32))
    assert 1e-5 < rel < 1e-2, rel  # measured 0.27%
    for a, b in zip(jax.tree_util.tree_leaves(g16), jax.tree_util.tree_leaves(g32)):
        assert float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)) < 3e-2

    # The actor's min-Q path honours the option too. dQ/da is a sum of many cancelling terms,
    # so its relative error is larger than Q's (measured ~6% here, against 0.3% for Q).
    qm16, ga16 = ensemble_min_q_and_action_grad(params["critics"], obs, act, 2, True, dtype="bfloat16")
    qm32, ga32 = ensemble_min_q_and_action_grad(params["critics"], obs, act, 2, True)
    # Same bf16 math on two compiled paths (fused differently): agree to bf16-level rounding
    # of the float32 partial sums (measured 8e-5 relative with the orthogonal init).
    np.testing.assert_allclose(qm16, q16.min(0), rtol=3e-4, atol=1e-5)
    assert 1e-4 < float(jnp.linalg.norm(ga16 - ga32) / jnp.linalg.norm(ga32)) < 0.15


def test_matmul_dtype_is_validated():
    module = CriticEnsemble(2, (4,), True, "float16")
    with pytest.raises(ValueError, match="matmul_dtype: got 'float16', expected one of"):
        module.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1, 1)))


def _bf16_rounded(x) -> np.ndarray:
    return np.asarray(jnp.asarray(x, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32), np.float64)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_weight_gradient_matmul_is_the_batch_sum_of_outer_products(dtype):
    """`_bmm_w` (E, B, I)^T @ (E, B, O) against numpy in float64: exact products of the
    (bf16-rounded, for bfloat16) inputs summed over the batch, to float32 accumulation error.
    The bfloat16 path multiplies a transposed copy of the activations; the result must not
    depend on that."""
    rs = np.random.RandomState(0)
    a = rs.normal(size=(3, 64, 5)).astype(np.float32)
    g = rs.normal(size=(3, 64, 7)).astype(np.float32)
    a64, g64 = (_bf16_rounded(a), _bf16_rounded(g)) if dtype == "bfloat16" else (a.astype(np.float64), g.astype(np.float64))
    expected = np.einsum("ebi,ebo->eio", a64, g64)
    got = jax.jit(lambda a, g: networks._bmm_w(a, g, dtype))(a, g)
    assert got.shape == (3, 5, 7) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=1e-5, atol=1e-5)
    if dtype == "bfloat16":  # the rounding is real: float32 inputs give a different answer
        assert np.abs(np.einsum("ebi,ebo->eio", a.astype(np.float64), g.astype(np.float64)) - expected).max() > 1e-3


def test_cpu_flags_from_cpuinfo():
    text = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\nbugs\t\t: spectre_v1\n\nprocessor\t: 1\nflags\t\t: fpu sse2\n"
    assert networks.cpu_flags_from_cpuinfo(text) == {"fpu", "avx2", "avx512f", "avx512_bf16", "sse2"}
    assert networks.cpu_flags_from_cpuinfo("") == frozenset()


@pytest.mark.parametrize(
    "platform, capability, flags, expected",
    [
        ("cpu", None, {"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),
        ("cpu", None, {"avx2", "amx_bf16"}, "bfloat16"),
        ("cpu", None, {"avx2", "avx512f"}, "float32"),
        ("gpu", "9.0", set(), "bfloat16"),
        ("gpu", "8.6", set(), "bfloat16"),
        ("gpu", "7.0", set(), "float32"),
        ("gpu", None, set(), "float32"),
        ("tpu", None, set(), "bfloat16"),
        ("metal", None, set(), "float32"),
    ],
)
def test_auto_matmul_dtype_picks_bfloat16_only_where_it_is_native(platform, capability, flags, expected):
    from types import SimpleNamespace

    device = SimpleNamespace(platform=platform, compute_capability=capability)
    dtype, reason = networks.auto_matmul_dtype(device, frozenset(flags))
    assert dtype == expected and reason


def test_auto_matmul_dtype_computes_what_it_resolves_to():
    """A critic ensemble with matmul_dtype "auto" is the one with the resolved dtype here."""
    resolved = networks.resolve_matmul_dtype("auto")
    assert resolved in networks.MATMUL_DTYPES and networks.resolve_matmul_dtype("float32") == "float32"
    rs = np.random.RandomState(2)
    obs, act = jnp.asarray(rs.normal(size=(32, 5)), jnp.float32), jnp.asarray(rs.uniform(-1, 1, size=(32, 2)), jnp.float32)
    params = CriticEnsemble(4, (32, 32), True).init(jax.random.PRNGKey(0), obs, act)
    q_auto = CriticEnsemble(4, (32, 32), True, "auto").apply(params, obs, act)
    q_resolved = CriticEnsemble(4, (32, 32), True, resolved).apply(params, obs, act)
    np.testing.assert_array_equal(q_auto, q_resolved)
    with pytest.raises(ValueError, match="matmul_dtype: got 'bf16', expected one of \\('auto', 'float32', 'bfloat16'\\)"):
        networks.resolve_matmul_dtype("bf16")
