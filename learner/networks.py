"""Flax networks the learner alone needs: critic ensemble, temperature, Lagrange multiplier,
IQL value function. The MLP trunk and the tanh-Gaussian policy are `actor.networks`: the
actor runs the policy, so it lives with the actor and the learner imports it from there.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial
from typing import ClassVar, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from actor.networks import MLP, default_init


class Critic(nn.Module):
    """Q(s, a) -> scalar."""

    hidden_dims: Sequence[int]
    layer_norm: bool = True
    kernel_init: str = "orthogonal"
    kernel_scale_final: Optional[float] = None

    @nn.compact
    def __call__(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        x = jnp.concatenate([observations, actions], axis=-1)
        x = MLP(self.hidden_dims, self.layer_norm, self.kernel_init, self.kernel_scale_final)(x)
        return nn.Dense(1, kernel_init=default_init(None, self.kernel_init))(x)[..., 0]


class CriticEnsemble(nn.Module):
    """`num_critics` independent critics evaluated in one vectorized call.

    Parameters carry a leading axis of size `num_critics`; the output is (num_critics, ...).
    A module built with a smaller `num_critics` applies to a slice of the parameters, which is
    how the TD target evaluates only the sub-sampled target critics.

    The parameters are those of `nn.vmap(Critic)` (module "critics": `MLP_0/Dense_i`,
    `MLP_0/LayerNorm_i`, output `Dense_0`, every leaf with the leading critic axis), and `init`
    runs exactly that (same initialization). `apply` evaluates the same function with
    `_ensemble_q`: batched matmuls over the critic axis and a hand-written backward pass (see
    `_ensemble_mlp`); outputs and gradients agree with the vmapped flax modules to float32
    rounding. Set the class attribute `implementation = "vmap"` to apply through
    `nn.vmap(Critic)` instead (the reference; used by the equivalence check and benchmarks).
    Forward-mode differentiation (`jax.jvp`) is not supported through the default path.
    """

    num_critics: int
    hidden_dims: Sequence[int]
    layer_norm: bool = True
    # Element type of the hidden layers' matmul inputs: "float32", "bfloat16" (inputs
    # rounded to bf16, products accumulated in float32; see `MATMUL_DTYPES`), or "auto"
    # (`auto_matmul_dtype`: bfloat16 where the device has native bf16 matmuls).
    matmul_dtype: str = "float32"
    # Initialization only (see `MLP`); `apply` does not read them.
    kernel_init: str = "orthogonal"
    kernel_scale_final: Optional[float] = None

    implementation: ClassVar[str] = "fused"  # or "vmap"

    @nn.compact
    def __call__(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        if self.matmul_dtype not in MATMUL_DTYPE_CHOICES:
            raise ValueError(f"CriticEnsemble.matmul_dtype: got {self.matmul_dtype!r}, expected one of {MATMUL_DTYPE_CHOICES}")
        if self.is_initializing() or self.implementation == "vmap":
            if self.implementation == "vmap" and self.matmul_dtype == "bfloat16":
                raise ValueError(f"CriticEnsemble.implementation 'vmap' computes in float32, got matmul_dtype {self.matmul_dtype!r}")
            ensemble = nn.vmap(
                Critic,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=None,
                out_axes=0,
                axis_size=self.num_critics,
            )
            return ensemble(self.hidden_dims, self.layer_norm, self.kernel_init, self.kernel_scale_final, name="critics")(
                observations, actions
            )
        params = self.variables["params"]["critics"]
        size = params["Dense_0"]["bias"].shape[0]
        if size != self.num_critics:
            raise ValueError(f"CriticEnsemble({self.num_critics}) applied to the parameters of {size} critics")
        dtype = resolve_matmul_dtype(self.matmul_dtype)
        return _ensemble_q(params, observations, actions, len(tuple(self.hidden_dims)), self.layer_norm, dtype)

    def min_q_and_action_grad(self, observations: jnp.ndarray, actions: jnp.ndarray, chunk_size: int = 256):
        """min over the critics of Q(s, a) (B,) and its gradient with respect to the actions
        (B, A), for inputs (B, ...): see `ensemble_min_q_and_action_grad`. Fused path only."""
        if self.implementation != "fused":
            raise ValueError(f"min_q_and_action_grad needs CriticEnsemble.implementation 'fused', got {self.implementation!r}")
        return ensemble_min_q_and_action_grad(
            self.variables["params"]["critics"],
            observations,
            actions,
            len(tuple(self.hidden_dims)),
            self.layer_norm,
            chunk_size,
            resolve_matmul_dtype(self.matmul_dtype),
        )


# ---- the critic ensemble's forward and backward passes ---------------------------------------
#
# Shapes: E critics, B samples (all leading input dims flattened), D = obs + action dims,
# H hidden width. Activations are kept as (E, B, H) so that every hidden layer is one batched
# matmul over the critic axis with no transposes. The backward pass is written out by hand
# (`jax.custom_vjp`): the LayerNorm gradient in two passes over (E, B, H) instead of the
# dozen or so that autodiff of flax's LayerNorm leaves to XLA, no materialized broadcasts of
# per-critic parameters, and the input of the first layer (shared by every critic) broadcast
# rather than transposed. The math is that of `nn.vmap(Critic)` with flax's LayerNorm
# (mean and E[x^2] - E[x]^2 variance clipped at 0, epsilon 1e-6, then scale and bias).

_LN_EPSILON = 1e-6  # flax.linen.LayerNorm's default

# "bfloat16" rounds both inputs of every hidden-layer matmul (forward and backward) to bf16
# and accumulates in float32, the trade JAX makes by default for float32 matmuls on TPU
# (TF32, with 3 more mantissa bits, on recent NVIDIA GPUs); the paper's experiments ran on
# TPUs. CPUs with AVX512-BF16 run such matmuls ~1.7x as fast as float32 ones (1024^3: ~330
# vs ~190 GFLOP/s on the 2-core Zen 4 VM of benchmarks/README.md). Parameters, optimizer
# state, LayerNorm and the output layer stay float32.
MATMUL_DTYPES = ("float32", "bfloat16")
# What `CriticEnsemble.matmul_dtype` (and `agent.critic_matmul_dtype`) accept: "auto" picks
# one of MATMUL_DTYPES for the device JAX computes on (`resolve_matmul_dtype`).
MATMUL_DTYPE_CHOICES = ("auto",) + MATMUL_DTYPES

# /proc/cpuinfo flags of x86 CPUs with bf16 dot-product instructions (Zen 4+, Cooper Lake,
# Sapphire Rapids+). Arm CPUs with bf16 are not listed: not measured.
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=None)
def _cpu_flags() -> frozenset:
    try:
        with open("/proc/cpuinfo") as f:
            return cpu_flags_from_cpuinfo(f.read())
    except OSError:  # not Linux
        return frozenset()


def cpu_flags_from_cpuinfo(text: str) -> frozenset:
    """The feature flags named on the `flags` lines of /proc/cpuinfo text."""
    return frozenset(
        flag for line in text.splitlines() if line.split(":")[0].strip() == "flags" for flag in line.split(":", 1)[1].split()
    )


def auto_matmul_dtype(device=None, cpu_flags: Optional[frozenset] = None) -> tuple[str, str]:
    """(dtype, reason): what "auto" means on `device` (default: JAX's first device).

    bfloat16 where bf16 matmuls are native hardware operations: TPUs (where JAX already
    computes float32 matmuls with bf16 inputs by default, as in the paper's runs), NVIDIA GPUs
    of compute capability 8.0 or newer, and x86 CPUs with AVX512-BF16 or AMX-BF16; float32
    everywhere else, where bf16 inputs would only add conversions.
    """
    device = device if device is not None else jax.devices()[0]
    platform = device.platform
    if platform == "tpu":
        return "bfloat16", "TPU"
    if platform == "gpu":
        capability = getattr(device, "compute_capability", None)
        try:
            major = int(str(capability).split(".")[0])
        except ValueError:
            return "float32", f"GPU without a known compute capability ({capability!r})"
        if major >= 8:
            return "bfloat16", f"GPU of compute capability {capability}"
        return "float32", f"GPU of compute capability {capability} (< 8.0)"
    if platform == "cpu":
        flags = _cpu_flags() if cpu_flags is None else cpu_flags
        found = [f for f in _CPU_BF16_FLAGS if f in flags]
        if found:
            return "bfloat16", f"CPU with {found[0].upper().replace('_', '-')}"
        return "float32", "CPU without AVX512-BF16 / AMX-BF16"
    return "float32", f"platform {platform!r}"


def resolve_matmul_dtype(name: str) -> str:
    """One of MATMUL_DTYPES: `name` itself, or what "auto" means here (`auto_matmul_dtype`)."""
    if name not in MATMUL_DTYPE_CHOICES:
        raise ValueError(f"matmul_dtype: got {name!r}, expected one of {MATMUL_DTYPE_CHOICES}")
    return auto_matmul_dtype()[0] if name == "auto" else name


def describe_matmul_dtype(name: str) -> str:
    """A few words for a run's start-up line, e.g. "critic matmuls bfloat16 (auto: CPU with
    AVX512-BF16)"."""
    if name == "auto":
        dtype, reason = auto_matmul_dtype()
        return f"critic matmuls {dtype} (auto: {reason})"
    return f"critic matmuls {name}"


def _dot(a: jnp.ndarray, b: jnp.ndarray, dims, dtype: str) -> jnp.ndarray:
    if dtype == "float32":
        return lax.dot_general(a, b, dims)
    return lax.dot_general(a.astype(dtype), b.astype(dtype), dims, preferred_element_type=jnp.float32)


def _bmm(a: jnp.ndarray, w: jnp.ndarray, dtype: str = "float32") -> jnp.ndarray:
    """(E, B, I) @ (E, I, O) -> (E, B, O)."""
    return _dot(a, w, (((2,), (1,)), ((0,), (0,))), dtype)


def _bmm_t(g: jnp.ndarray, w: jnp.ndarray, dtype: str = "float32") -> jnp.ndarray:
    """(E, B, O) @ (E, I, O)^T -> (E, B, I): the input gradient of `_bmm`."""
    return _dot(g, w, (((2,), (2,)), ((0,), (0,))), dtype)


def _bmm_w(a: jnp.ndarray, g: jnp.ndarray, dtype: str = "float32") -> jnp.ndarray:
    """(E, B, I)^T @ (E, B, O) -> (E, I, O): the weight gradient of `_bmm`."""
    if dtype == "float32":
        return _dot(a, g, (((1,), (1,)), ((0,), (0,))), dtype)
    # XLA:CPU runs bf16 x bf16 -> f32 matmuls natively (YNNPACK) only when the contraction is
    # over the left operand's minor axis; for this one (over the batch axis) it converts both
    # operands back to float32 first, which made the bf16 weight gradient slower than the
    # float32 one. So the activations are transposed to (E, I, B) here, in bf16, and
    # multiplied in that layout. The pad/slice pair looks like a no-op and is one: XLA
    # removes it, but only after deciding the matmul's element type, and without it XLA
    # folds the transpose back into the matmul (same layout, same conversions). Either way
    # the result is the same product of bf16-rounded inputs summed in float32.
    e, b, i = a.shape
    a_t = jnp.swapaxes(a.astype(dtype), 1, 2)
    a_t = lax.slice(jnp.pad(a_t, ((0, 0), (0, 0), (0, 1))), (0, 0, 0), (e, i, b))
    return _dot(a_t, g, (((2,), (1,)), ((0,), (0,))), dtype)


def _ensemble_forward(layer_norm: bool, dtype: str, hidden, final, x: jnp.ndarray, save: bool):
    """Q (E, B) and, if `save`, what the backward pass needs: per hidden layer the
    pre-normalization activations h, their mean, raw variance and 1/std, and the output a."""
    residuals = []
    a = None
    for i, (w, b, scale, beta) in enumerate(hidden):
        inputs = jnp.broadcast_to(x, (w.shape[0],) + x.shape) if i == 0 else a
        h = _bmm(inputs, w, dtype) + b[:, None, :]
        if layer_norm:
            mean = jnp.mean(h, -1, keepdims=True)
            raw_var = jnp.mean(h * h, -1, keepdims=True) - mean * mean
            inv_std = lax.rsqrt(jnp.maximum(0.0, raw_var) + _LN_EPSILON)
            a = jnp.maximum((h - mean) * (inv_std * scale[:, None, :]) + beta[:, None, :], 0.0)
            residuals.append((h, mean, raw_var, inv_std, a))
        else:
            a = jnp.maximum(h, 0.0)
            residuals.append((None, None, None, None, a))
    w_out, b_out = final
    q = jnp.einsum("ebh,eh->eb", a, w_out) + b_out[:, None]
    return q, (residuals if save else None)


def _layer_norm_input_grad(dx_hat, x_hat, raw_var, inv_std):
    """The gradient at LayerNorm's input h from the one at its normalized output x_hat (before
    scale and bias), in two passes over the rows."""
    m1 = jnp.mean(dx_hat, -1, keepdims=True)
    m2 = jnp.mean(dx_hat * x_hat, -1, keepdims=True)
    # d max(0, v)/dv as jax differentiates it: 1 above, 1/2 at the tie, 0 below.
    clip = jnp.where(raw_var > 0, 1.0, jnp.where(raw_var == 0, 0.5, 0.0))
    return inv_std * (dx_hat - m1 - x_hat * (clip * m2))


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _ensemble_mlp(layer_norm: bool, dtype: str, hidden, final, x: jnp.ndarray) -> jnp.ndarray:
    """Q (E, B) of E critics on the shared input x (B, D); hidden-layer matmuls in `dtype`.

    hidden: per hidden layer (kernel (E, I, O), bias (E, O), LayerNorm scale (E, O) or None,
    LayerNorm bias (E, O) or None); final: (kernel (E, H), bias (E,)).
    """
    return _ensemble_forward(layer_norm, dtype, hidden, final, x, save=False)[0]


def _ensemble_mlp_fwd(layer_norm, dtype, hidden, final, x):
    q, residuals = _ensemble_forward(layer_norm, dtype, hidden, final, x, save=True)
    return q, (hidden, final, x, residuals)


def _ensemble_mlp_bwd(layer_norm, dtype, saved, dq):
    hidden, final, x, residuals = saved
    w_out, _ = final
    d_final = (jnp.einsum("eb,ebh->eh", dq, residuals[-1][4]), jnp.sum(dq, 1))
    da = dq[:, :, None] * w_out[:, None, :]
    d_hidden = [None] * len(hidden)
    dx = None
    for i in reversed(range(len(hidden))):
        w, _, scale, _ = hidden[i]
        h, mean, raw_var, inv_std, a = residuals[i]
        dz = jnp.where(a > 0, da, 0.0)  # relu (jax's gradient is 0 at 0)
        if layer_norm:
            x_hat = (h - mean) * inv_std
            d_beta = jnp.sum(dz, 1)
            d_scale = jnp.sum(dz * x_hat, 1)
            dh = _layer_norm_input_grad(dz * scale[:, None, :], x_hat, raw_var, inv_std)
        else:
            dh, d_scale, d_beta = dz, None, None
        db = jnp.sum(dh, 1)
        if i == 0:
            # The shared input, broadcast over critics: batched matmuls, no transpose of dh.
            dw = _bmm_w(jnp.broadcast_to(x, (w.shape[0],) + x.shape), dh, dtype)
            dx = jnp.sum(_bmm_t(dh, w, dtype), 0)
        else:
            dw = _bmm_w(residuals[i - 1][4], dh, dtype)
            da = _bmm_t(dh, w, dtype)
        d_hidden[i] = (dw, db, d_scale, d_beta)
    return d_hidden, d_final, dx


_ensemble_mlp.defvjp(_ensemble_mlp_fwd, _ensemble_mlp_bwd)


def _unpack_critics(params, num_hidden: int, layer_norm: bool):
    """(hidden, final) as `_ensemble_mlp` takes them, from the "critics" parameter subtree."""
    mlp = params["MLP_0"]
    hidden = []
    for i in range(num_hidden):
        dense = mlp[f"Dense_{i}"]
        norm = mlp[f"LayerNorm_{i}"] if layer_norm else {"scale": None, "bias": None}
        hidden.append((dense["kernel"], dense["bias"], norm["scale"], norm["bias"]))
    return hidden, (params["Dense_0"]["kernel"][..., 0], params["Dense_0"]["bias"][..., 0])


def _ensemble_q(params, observations: jnp.ndarray, actions: jnp.ndarray, num_hidden: int, layer_norm: bool,
                dtype: str = "float32") -> jnp.ndarray:
    """Q (E, ...) of the critics in `params` (the "critics" subtree of `CriticEnsemble`)."""
    hidden, final = _unpack_critics(params, num_hidden, layer_norm)
    x = jnp.concatenate([observations, actions], axis=-1)
    lead = x.shape[:-1]
    q = _ensemble_mlp(layer_norm, dtype, hidden, final, x.reshape((-1, x.shape[-1])))
    return q.reshape(q.shape[:1] + lead)


def map_in_chunks(fn, *xs: jnp.ndarray, chunk_size: int):
    """`fn(*xs)` for functions that treat the rows (leading axis) of their inputs
    independently, computed `chunk_size` rows at a time (a sequential `lax.map`) so that the
    intermediates of all rows are never alive at once; outputs are concatenated back along
    the leading axis. Applied to all rows in one go when they do not split evenly."""
    n = xs[0].shape[0]
    if not (n > chunk_size and n % chunk_size == 0):
        return fn(*xs)
    chunks = [x.reshape((n // chunk_size, chunk_size) + x.shape[1:]) for x in xs]
    out = jax.lax.map(lambda c: fn(*c), chunks)
    return jax.tree_util.tree_map(lambda r: r.reshape((n,) + r.shape[2:]), out)


# ---- min over the ensemble with its action gradient (the SAC actor loss) --------------------
#
# The actor loss uses min_i Q_i(s, a). Its gradient with respect to a flows through one critic
# per sample (the minimizing one), so back-propagating through all E critics, as autodiff of
# the min does, wastes (E - 1) / E of the backward matmuls. Here the forward pass runs all
# critics (chunk by chunk, keeping only the selected critic's activations), and the backward
# pass is a grouped matmul: samples are sorted by their selected critic and padded so that
# every tile of `_GROUP_TILE_ROWS` rows belongs to one critic, then each tile is multiplied by
# its critic's weights in one batched matmul. With B samples that is at most B + E * tile rows
# instead of E * B (1024 samples, 10 critics: at most 2304 rows instead of 10240). Bigger tiles
# waste padding rows but run faster here: (18, 128, 256) batched matmuls beat (26, 64, 256) ones.

_GROUP_TILE_ROWS = 128


def _group_layout(groups: jnp.ndarray, num_groups: int, tile_rows: int):
    """Sorts N rows by `groups` (N,) into tiles of `tile_rows` rows that each hold one group.

    Returns (position (N,): each row's index in the padded layout; source (tiles * tile_rows,):
    the row held at each padded index, N for padding; tile_group (tiles,): each tile's group).
    The number of tiles, ceil(N / tile_rows) + num_groups, bounds any grouping.
    """
    n = groups.shape[0]
    num_tiles = -(-n // tile_rows) + num_groups
    order = jnp.argsort(groups, stable=True)
    sorted_groups = groups[order]
    counts = jnp.bincount(groups, length=num_groups)
    tiles = -(-counts // tile_rows)
    tile_end = jnp.cumsum(tiles)
    first_row = jnp.cumsum(counts) - counts
    padded_sorted = (tile_end - tiles)[sorted_groups] * tile_rows + (jnp.arange(n) - first_row[sorted_groups])
    position = jnp.zeros(n, jnp.int32).at[order].set(padded_sorted.astype(jnp.int32))
    source = jnp.full(num_tiles * tile_rows, n, jnp.int32).at[padded_sorted].set(order.astype(jnp.int32))
    tile_group = jnp.minimum(jnp.searchsorted(tile_end, jnp.arange(num_tiles), side="right"), num_groups - 1)
    return position, source, tile_group


def _grouped_matmul_t(rows: jnp.ndarray, weights: jnp.ndarray, layout, tile_rows: int, dtype: str) -> jnp.ndarray:
    """Row n of `rows` (N, O) times weights[group of n]^T, weights (E, I, O) -> (N, I)."""
    position, source, tile_group = layout
    padded = jnp.concatenate([rows, jnp.zeros((1, rows.shape[1]), rows.dtype)])[source]
    out = _bmm_t(padded.reshape((-1, tile_rows, rows.shape[1])), weights[tile_group], dtype)
    return out.reshape((-1, out.shape[-1]))[position]


def _ensemble_min_q_and_input_grad(layer_norm: bool, dtype: str, hidden, final, x: jnp.ndarray, chunk_size: int):
    """min over the E critics of Q (B,) on inputs x (B, D), and its gradient dQ_min/dx (B, D).

    The gradient is that of the critic attaining the minimum (the lowest index on an exact
    tie, where autodiff of `min` would split it between the tied critics).
    """
    num_critics = final[0].shape[0]

    def forward(xc):
        q, residuals = _ensemble_forward(layer_norm, dtype, hidden, final, xc, save=True)
        selected = jnp.argmin(q, axis=0)
        rows = jnp.arange(xc.shape[0])
        pick = lambda r: None if r is None else r[selected, rows]  # noqa: E731
        return q[selected, rows], selected, [tuple(pick(r) for r in layer) for layer in residuals]

    q_min, selected, residuals = map_in_chunks(forward, x, chunk_size=chunk_size)

    layout = _group_layout(selected, num_critics, _GROUP_TILE_ROWS)
    da = final[0][selected]  # dQ/da of the last hidden layer: the selected output weights
    for i in reversed(range(len(hidden))):
        w, _, scale, _ = hidden[i]
        h, mean, raw_var, inv_std, a = residuals[i]
        dz = jnp.where(a > 0, da, 0.0)
        if layer_norm:
            dz = _layer_norm_input_grad(dz * scale[selected], (h - mean) * inv_std, raw_var, inv_std)
        da = _grouped_matmul_t(dz, w, layout, _GROUP_TILE_ROWS, dtype)
    return q_min, da


def ensemble_min_q_and_action_grad(params, observations: jnp.ndarray, actions: jnp.ndarray, num_hidden: int,
                                   layer_norm: bool, chunk_size: int = 256,
                                   dtype: str = "float32") -> tuple[jnp.ndarray, jnp.ndarray]:
    """min_i Q_i(s, a) (B,) of the critics in `params` (the "critics" subtree of
    `CriticEnsemble`) and its gradient with respect to the actions (B, A); inputs (B, ...).
    The forward pass runs `chunk_size` samples at a time (bounded scratch memory)."""
    hidden, final = _unpack_critics(params, num_hidden, layer_norm)
    x = jnp.concatenate([observations, actions], axis=-1)
    q_min, dx = _ensemble_min_q_and_input_grad(layer_norm, dtype, hidden, final, x, chunk_size)
    return q_min, dx[:, observations.shape[-1]:]


class Temperature(nn.Module):
    """SAC's entropy temperature alpha, stored as log(alpha) so it stays positive.

    Deliberate difference (docs/fidelity.md): the reference implementation stores
    softplus^-1(alpha) instead. Both start at alpha = 1 and keep alpha > 0; they differ only in
    how an Adam step on the stored value moves alpha. log(alpha) is the parameterization of
    SAC (Haarnoja et al. 2018b) and of RLPD, whose SAC the paper says it uses (Appendix I).
    """

    initial_value: float = 1.0

    @nn.compact
    def __call__(self) -> jnp.ndarray:
        log_value = self.param("log_value", lambda _: jnp.full((), jnp.log(self.initial_value), jnp.float32))
        return jnp.exp(log_value)


def inverse_softplus(value: float) -> float:
    """x with softplus(x) = log(1 + e^x) = value (value > 0)."""
    return float(value + math.log(-math.expm1(-value)))


class LagrangeMultiplier(nn.Module):
    """A non-negative Lagrange multiplier stored as softplus^-1(value) (dual CQL's alpha'),
    as the reference implementation parameterizes it. Parameter: "raw_value"."""

    initial_value: float = 1.0

    @nn.compact
    def __call__(self) -> jnp.ndarray:
        raw = self.param("raw_value", lambda _: jnp.full((), inverse_softplus(self.initial_value), jnp.float32))
        return jax.nn.softplus(raw)


class ValueFunction(nn.Module):
    """V(s) -> scalar (IQL)."""

    hidden_dims: Sequence[int]
    layer_norm: bool = True
    kernel_init: str = "orthogonal"
    kernel_scale_final: Optional[float] = None

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> jnp.ndarray:
        h = MLP(self.hidden_dims, self.layer_norm, self.kernel_init, self.kernel_scale_final)(observations)
        return nn.Dense(1, kernel_init=default_init(None, self.kernel_init))(h)[..., 0]


# ---- camera observations: encoder precision, augmentation, pre-trained weights ---------------


def encoder_dtype(matmul_dtype: str) -> str:
    """The element type of the observation encoder's convolutions: that of the critic
    ensemble's matmuls (`resolve_matmul_dtype`), so a run computes in bf16 everywhere the
    state networks do and nowhere else."""
    return resolve_matmul_dtype(matmul_dtype)


def random_shift(rng: jax.Array, images: jnp.ndarray, pad: int) -> jnp.ndarray:
    """DrQ's random shift: each image (..., H, W, C) padded by `pad` pixels on every side (edge
    pixels repeated) and cropped back to H x W at an offset drawn uniformly from
    {0..2 pad}^2, independently per image. The dtype (uint8 frames) is kept."""
    if pad == 0:
        return images
    lead, (h, w, c) = images.shape[:-3], images.shape[-3:]
    flat = images.reshape((-1, h, w, c))
    padded = jnp.pad(flat, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    offsets = jax.random.randint(rng, (flat.shape[0], 2), 0, 2 * pad + 1)
    crop = jax.vmap(lambda image, offset: lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c)))
    return crop(padded, offsets).reshape(images.shape)


def augment_observations(rng: jax.Array, observations, pad: int):
    """`random_shift` of every camera of dict observations (an independent key per camera);
    the state vector, and flat observations, pass through unchanged."""
    if pad == 0 or not isinstance(observations, dict):
        return observations
    names = sorted(name for name, x in observations.items() if x.ndim >= 3 and x.dtype == jnp.uint8)
    keys = jax.random.split(rng, max(len(names), 1))
    return {**observations, **{name: random_shift(key, observations[name], pad) for name, key in zip(names, keys)}}


def save_encoder_params(path, trunk_params) -> None:
    """Writes one camera trunk's parameters (a `ConvEncoder` parameter tree, e.g.
    `agent.encoder.params["conv_<camera>"]`) as flax msgpack, the file
    `load_pretrained_encoder` (`agent.encoder_pretrained`) reads."""
    from pathlib import Path

    import numpy as np
    from flax import serialization

    from envs.atomic_files import atomic_write_bytes

    state = jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(trunk_params))
    atomic_write_bytes(Path(path), serialization.msgpack_serialize(state))


def load_pretrained_encoder(encoder_params: dict, path: str) -> dict:
    """The hook for pre-trained encoder weights (no download: a local file): `encoder_params`
    (an `ObservationEncoder` parameter tree) with every camera trunk ("conv_<camera>")
    replaced by the `ConvEncoder` parameters stored in `path` (flax msgpack, as
    `save_encoder_params` writes). The stored tree must have the trunk's exact structure and
    shapes (the configured `agent.encoder_*` architecture); a ValueError names the first
    difference. To start from weights trained elsewhere, convert them into that tree first."""
    from pathlib import Path

    import numpy as np
    from flax import serialization

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"config field 'agent.encoder_pretrained': {str(file)!r} does not exist, expected a local msgpack file")
    try:
        stored = serialization.msgpack_restore(file.read_bytes())
    except Exception as e:  # msgpack raises several unrelated types on corrupt input
        raise ValueError(f"config field 'agent.encoder_pretrained': {str(file)!r} is not flax msgpack ({type(e).__name__}: {e})") from None
    out = dict(encoder_params)
    for name, trunk in encoder_params.items():
        if not name.startswith("conv_"):
            continue
        want = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_flatten_with_path(trunk)[0]}
        try:
            got = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_flatten_with_path(stored)[0]}
        except Exception:
            got = {}
        if want != got:
            diff = sorted(set(want.items()) ^ set(got.items()))[:3]
            raise ValueError(
                f"config field 'agent.encoder_pretrained': {str(file)!r} does not fit the encoder trunk {name!r} "
                f"(agent.encoder_* architecture); first differences (path, shape): {diff}"
            )
        out[name] = jax.tree_util.tree_map(lambda ref, new: jnp.asarray(new, ref.dtype), trunk, stored)
    return out
