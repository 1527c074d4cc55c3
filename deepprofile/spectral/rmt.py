"""Random-matrix analysis of weight spectra (Martin & Mahoney; WeightWatcher's figures).

For a layer whose unfolded weight ``W`` is ``p x n`` (``p <= n``, transposed otherwise), the
empirical spectral density (ESD) is the set of eigenvalues of ``X = W W^T / n``. Its figures:

* **Marchenko-Pastur fit.** Random i.i.d. weights with variance ``sigma^2`` give the MP law with
  ratio ``q = p / n`` on ``[sigma^2 (1 - sqrt q)^2, sigma^2 (1 + sqrt q)^2]``. ``sigma^2`` is
  fitted by minimising the Kolmogorov-Smirnov distance between the ESD and the MP law; the KS
  distance is the goodness-of-fit figure (small at random initialisation, large after training
  when correlations appear). Eigenvalues above the fitted bulk edge are counted as spikes.
* **Power-law tail** (Clauset, Shalizi & Newman 2009). For each candidate ``xmin`` the MLE of
  the exponent is ``alpha = 1 + n_tail / sum log(x / xmin)``; the ``xmin`` with the smallest KS
  distance between the tail and the fitted law is kept. The KS distance, the tail size and the
  standard error ``(alpha - 1) / sqrt(n_tail)`` are reported; a semi-parametric bootstrap p-value
  is optional (``n_bootstrap``). Trained layers typically give ``alpha`` in 2-6, random ones
  much larger.
* **alpha-hat** (weighted alpha): per layer ``alpha * log10(lambda_max)``, averaged over layers;
  WeightWatcher's data-free quality metric (lower tends to mean better generalisation within a
  model family). ``alpha`` does not depend on how ``X`` is scaled, but ``log10(lambda_max)``
  does; as in WeightWatcher, ``lambda_max`` here is the largest eigenvalue of the
  *unnormalised* ``W W^T`` (the squared spectral norm), so alpha-hat is comparable with its
  figures (with ``W W^T / n`` it would be negative for most layers). WeightWatcher slices a
  conv kernel into ``k*k`` matrices of shape ``d x c``; the unfolded ``d x (c k k)`` matrix is
  used here (Praggastis et al.), so conv-layer numbers differ from WeightWatcher's.
* **Spectral norm** ``s_max`` of ``W`` and **stable rank** ``||W||_F^2 / ||W||_2^2``.

The same figures for a random-init baseline show what training changed: a fresh instance of the
same architecture built by its own constructor under a seed
(:func:`deepprofile.spectral.baseline.random_init_baseline`); only for an unknown architecture
are the modules' generic ``reset_parameters()`` used, and the result says so.

Each layer stores both largest eigenvalues under names that say which:
``lambda_max_normalised`` (of ``W W^T / n``, the ESD the fits use) and
``lambda_max_unnormalised`` (of ``W W^T``, ``= s_max^2``, the one in alpha-hat), with ``n``.

The fits are implemented here (vectorised over all ``xmin`` candidates) rather than through
the ``powerlaw`` package, which is not a dependency and fits one candidate at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from torch import nn

from deepprofile.spectral.baseline import (
    InitBaseline,
    random_init_baseline,
    reset_parameters_copy,
)
from deepprofile.spectral.conv_svd import (
    get_module,
    gram_eigenvalues,
    grouped_weight,
    weight_layers,
)

# -- Marchenko-Pastur ---------------------------------------------------------------------------


def mp_edges(q: float, sigma2: float = 1.0) -> tuple[float, float]:
    """Bulk edges ``(lambda_minus, lambda_plus)`` of the MP law with ratio ``q`` (<= 1)."""
    r = np.sqrt(q)
    return sigma2 * (1 - r) ** 2, sigma2 * (1 + r) ** 2


def mp_pdf(x: np.ndarray, q: float, sigma2: float = 1.0) -> np.ndarray:
    """MP density of the eigenvalues of ``W W^T / n`` (``W`` is ``p x n``, ``q = p/n <= 1``)."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = mp_edges(q, sigma2)
    out = np.zeros_like(x)
    inside = (x > lo) & (x < hi)
    xi = x[inside]
    out[inside] = np.sqrt((hi - xi) * (xi - lo)) / (2 * np.pi * sigma2 * q * xi)
    return out


class _MPTable:
    """The MP cumulative distribution for one ratio ``q`` (sigma^2 = 1) on a fine grid.

    With ``x = m - h cos(theta)`` (``m``, ``h`` the bulk centre and half-width) the density
    becomes smooth in ``theta`` (the square-root edges cancel), so a trapezoid rule on 4,097
    points is accurate to ~1e-7; the table is renormalised to end at exactly 1.
    """

    def __init__(self, q: float, n_grid: int = 4097) -> None:
        lo, hi = mp_edges(q)
        m, h = (lo + hi) / 2, (hi - lo) / 2
        theta = np.linspace(0.0, np.pi, n_grid)
        x = m - h * np.cos(theta)
        with np.errstate(divide="ignore", invalid="ignore"):
            dens = (h * np.sin(theta)) ** 2 / (2 * np.pi * q * x)
        dens[~np.isfinite(dens)] = 0.0
        if q >= 1.0 - 1e-12:  # at q = 1, x -> 0 as theta -> 0 and dens -> h/(pi q) (limit)
            dens[0] = h / (np.pi * q)
        cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(theta))])
        self.x = x
        self.cdf = cdf / cdf[-1]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.interp(x, self.x, self.cdf, left=0.0, right=1.0)


def mp_cdf(x: np.ndarray, q: float, sigma2: float = 1.0) -> np.ndarray:
    """MP cumulative distribution function (ratio ``q <= 1``, variance ``sigma2``)."""
    return _MPTable(q)(np.asarray(x, dtype=np.float64) / sigma2)


def _ks_sorted(sorted_x: np.ndarray, cdf_values: np.ndarray) -> float:
    """Two-sided KS distance of a sorted sample against model CDF values at those points."""
    n = len(sorted_x)
    upper = np.arange(1, n + 1) / n - cdf_values
    lower = cdf_values - np.arange(n) / n
    return float(max(upper.max(), lower.max()))


@dataclass(frozen=True)
class MPFit:
    """Marchenko-Pastur fit of an ESD: fitted ``sigma2``, bulk edges, KS distance, spikes."""

    q: float
    sigma2: float
    lambda_minus: float
    lambda_plus: float
    ks: float
    ks_pvalue: float
    n_spikes: int
    n_eigenvalues: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MPFit:
        return cls(**data)


def fit_marchenko_pastur(eigenvalues: np.ndarray, q: float) -> MPFit:
    """Fit MP's ``sigma^2`` to ``eigenvalues`` (of ``W W^T / n``, ratio ``q = p/n <= 1``) by KS.

    A log-spaced grid search around the moment estimate (the MP mean is ``sigma^2``) is refined
    by a bounded scalar minimisation. The p-value treats ``sigma^2`` as known, so it is
    optimistic; use the KS distance itself to compare layers.
    """
    from scipy.optimize import minimize_scalar

    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    if not 0 < q <= 1:
        raise ValueError(f"MP ratio q must be in (0, 1], got {q}.")
    if len(lam) == 0 or lam[-1] <= 0:
        raise ValueError("MP fit needs at least one positive eigenvalue.")
    table = _MPTable(q)
    mean = float(lam.mean())

    def ks(log_s2: float) -> float:
        return _ks_sorted(lam, table(lam / np.exp(log_s2)))

    grid = np.log(mean) + np.linspace(np.log(0.05), np.log(2.0), 60)
    values = [ks(g) for g in grid]
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    res = minimize_scalar(ks, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    log_s2 = float(res.x) if res.fun <= values[best] else float(grid[best])
    sigma2 = float(np.exp(log_s2))
    d = ks(log_s2)
    lo_edge, hi_edge = mp_edges(q, sigma2)
    return MPFit(
        q=float(q), sigma2=sigma2, lambda_minus=float(lo_edge), lambda_plus=float(hi_edge),
        ks=float(d), ks_pvalue=float(stats.kstwo.sf(d, len(lam))),
        n_spikes=int((lam > hi_edge).sum()), n_eigenvalues=int(len(lam)),
    )


# -- power-law tail (Clauset et al. 2009) -----------------------------------------------------


@dataclass(frozen=True)
class PowerLawFit:
    """Continuous power-law fit ``p(x) ~ x^-alpha`` for ``x >= xmin`` of an ESD's tail."""

    alpha: float
    xmin: float
    ks: float
    n_tail: int
    n_eigenvalues: int
    sigma_alpha: float
    p_value: float | None = None
    n_bootstrap: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PowerLawFit:
        return cls(**data)


def _scan_xmin(x: np.ndarray, min_tail: int, chunk: int = 256) -> tuple[int, float, float]:
    """Best candidate index, its alpha and KS for ascending positive ``x`` (vectorised)."""
    n = len(x)
    logx = np.log(x)
    suffix = np.cumsum(logx[::-1])[::-1]  # suffix[i] = sum_{j >= i} log x_j
    last = n - min_tail  # candidates i = 0 .. last
    best = (-1, np.nan, np.inf)
    for start in range(0, last + 1, chunk):
        idx = np.arange(start, min(last + 1, start + chunk))
        n_tail = n - idx
        denom = suffix[idx] - n_tail * logx[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = 1.0 + n_tail / denom
        # KS of each candidate's tail: positions j >= i, empirical CDF (j - i + 1) / n_tail;
        # only columns from the chunk's first candidate on are needed
        sub = logx[start:]
        rank = np.arange(start, n)[None, :] - idx[:, None]
        valid = rank >= 0
        inv = 1.0 / n_tail[:, None]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            model = 1.0 - np.exp((1.0 - alpha[:, None]) * (sub[None, :] - logx[idx][:, None]))
            gap = np.maximum(rank * inv - model, model - (rank + 1) * inv) + inv
        # max(upper, lower) with upper = (rank+1)/n - F, lower = F - rank/n
        dist = np.where(valid, gap, -np.inf).max(axis=1)
        dist[~np.isfinite(alpha) | (denom <= 0)] = np.inf
        k = int(np.argmin(dist))
        if dist[k] < best[2]:
            best = (int(idx[k]), float(alpha[k]), float(dist[k]))
    return best


def fit_power_law(
    eigenvalues: np.ndarray,
    *,
    min_tail: int = 5,
    xmax: float | None = None,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> PowerLawFit | None:
    """Clauset-style power-law fit of the largest eigenvalues; ``None`` with too few values.

    Every eigenvalue with at least ``min_tail`` values at or above it is a candidate ``xmin``;
    the candidate whose MLE fit has the smallest KS distance wins. ``n_bootstrap > 0`` adds
    Clauset's goodness-of-fit p-value (fraction of synthetic data sets, drawn from the fit above
    ``xmin`` and from the data below it, whose refitted KS distance is at least the observed
    one; p > 0.1 means the power law is plausible).
    """
    x = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    if len(x):
        x = x[x > x[-1] * 1e-12]  # drop numerically zero eigenvalues
    if xmax is not None:
        x = x[x <= xmax]
    if len(x) < max(min_tail, 2) or np.unique(x).size < 2:
        return None
    i, alpha, dist = _scan_xmin(x, min_tail)
    if i < 0:
        return None
    n_tail = len(x) - i
    p_value = None
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        body = x[:i]
        hits = 0
        for _ in range(n_bootstrap):
            from_tail = rng.random(len(x)) < n_tail / len(x)
            if len(body) == 0:
                from_tail[:] = True
            k = int(from_tail.sum())
            tail = x[i] * (1.0 - rng.random(k)) ** (-1.0 / (alpha - 1.0))
            synth = np.sort(np.concatenate([tail, rng.choice(body, len(x) - k)
                                            if len(body) else np.empty(0)]))
            _, _, d_syn = _scan_xmin(synth, min_tail)
            hits += d_syn >= dist
        p_value = hits / n_bootstrap
    return PowerLawFit(
        alpha=float(alpha), xmin=float(x[i]), ks=float(dist), n_tail=int(n_tail),
        n_eigenvalues=int(len(x)), sigma_alpha=float((alpha - 1.0) / np.sqrt(n_tail)),
        p_value=p_value, n_bootstrap=int(n_bootstrap),
    )


# -- per layer and per model ------------------------------------------------------------------


def esd(module: nn.Module) -> tuple[np.ndarray, int, int]:
    """Eigenvalues (ascending) of ``W W^T / n`` for the unfolded weight, and ``(p, n)``.

    ``W`` is taken ``p x n`` with ``p <= n`` (transposed when taller than wide). For a grouped
    convolution each group's block contributes its own eigenvalues, normalised by its own
    ``n`` (the groups are independent matrices).
    """
    blocks = grouped_weight(module).numpy()
    _, rows, cols = blocks.shape
    p, n = min(rows, cols), max(rows, cols)
    eig = gram_eigenvalues(blocks) / n
    return np.sort(eig), p, n


@dataclass(frozen=True)
class LayerSpectrum:
    """Random-matrix figures of one layer's unfolded weight."""

    layer: str
    module_type: str
    matrix_shape: tuple[int, int]
    groups: int
    p: int
    n: int
    eigenvalues: np.ndarray = field(repr=False)
    spectral_norm: float = 0.0
    frobenius_norm: float = 0.0
    stable_rank: float = 0.0
    lambda_max_normalised: float = 0.0
    mp: MPFit | None = None
    power_law: PowerLawFit | None = None

    @property
    def alpha(self) -> float | None:
        return None if self.power_law is None else self.power_law.alpha

    @property
    def lambda_max_unnormalised(self) -> float:
        """Largest eigenvalue of ``W W^T`` (``= s_max^2``), the one alpha-hat uses."""
        return float(self.spectral_norm ** 2)

    @property
    def alpha_weighted(self) -> float | None:
        """``alpha * log10(s_max^2)`` (WeightWatcher's per-layer alpha-hat; ``s_max^2`` is the
        largest eigenvalue of the unnormalised ``W W^T``)."""
        if self.power_law is None or self.spectral_norm <= 0:
            return None
        return float(self.power_law.alpha * np.log10(self.spectral_norm ** 2))

    @property
    def singular_values(self) -> np.ndarray:
        return np.sqrt(self.eigenvalues[::-1] * self.n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "module_type": self.module_type,
            "matrix_shape": list(self.matrix_shape), "groups": self.groups, "p": self.p,
            "n": self.n, "eigenvalues": self.eigenvalues.tolist(),
            "spectral_norm": self.spectral_norm, "frobenius_norm": self.frobenius_norm,
            "stable_rank": self.stable_rank,
            "lambda_max_normalised": self.lambda_max_normalised,
            "lambda_max_unnormalised": self.lambda_max_unnormalised,
            "lambda_max_normalisation": f"lambda_max_normalised = lambda_max_unnormalised / n, "
                                        f"n = {self.n} (larger side of W)",
            "alpha": self.alpha, "alpha_weighted": self.alpha_weighted,
            "mp": None if self.mp is None else self.mp.to_dict(),
            "power_law": None if self.power_law is None else self.power_law.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerSpectrum:
        return cls(
            layer=data["layer"], module_type=data["module_type"],
            matrix_shape=tuple(data["matrix_shape"]), groups=int(data["groups"]),
            p=int(data["p"]), n=int(data["n"]),
            eigenvalues=np.asarray(data["eigenvalues"], dtype=np.float64),
            spectral_norm=float(data["spectral_norm"]),
            frobenius_norm=float(data["frobenius_norm"]), stable_rank=float(data["stable_rank"]),
            lambda_max_normalised=float(data.get("lambda_max_normalised",
                                                 data.get("lambda_max", 0.0))),
            mp=None if data.get("mp") is None else MPFit.from_dict(data["mp"]),
            power_law=(None if data.get("power_law") is None
                       else PowerLawFit.from_dict(data["power_law"])),
        )


def layer_spectrum(
    module: nn.Module,
    name: str = "",
    *,
    min_tail: int = 5,
    min_eigenvalues: int = 10,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> LayerSpectrum:
    """ESD, MP fit, power-law fit, norms and stable rank of one Conv/Linear module.

    Fits are skipped (``None``) for layers with fewer than ``min_eigenvalues`` eigenvalues
    (a 3x3 stem on one input channel has 9), where they would mean nothing.
    """
    eig, p, n = esd(module)
    g = int(getattr(module, "groups", 1))
    d = module.weight.shape[0]
    cols = module.weight[0].numel()  # per-group input columns
    sq = eig * n  # squared singular values
    fro2 = float(sq.sum())
    smax2 = float(sq.max()) if len(sq) else 0.0
    mp = pl = None
    if len(eig) >= min_eigenvalues and eig[-1] > 0:
        mp = fit_marchenko_pastur(eig, p / n)
        pl = fit_power_law(eig, min_tail=min_tail, n_bootstrap=n_bootstrap, seed=seed)
    return LayerSpectrum(
        layer=name, module_type=type(module).__name__,
        matrix_shape=(int(d), int(g * cols)), groups=g, p=p, n=n, eigenvalues=eig,
        spectral_norm=float(np.sqrt(smax2)),
        frobenius_norm=float(np.sqrt(fro2)), stable_rank=fro2 / smax2 if smax2 > 0 else 0.0,
        lambda_max_normalised=float(eig[-1]) if len(eig) else 0.0, mp=mp, power_law=pl,
    )


@dataclass(frozen=True)
class ModelSpectrum:
    """:class:`LayerSpectrum` of every analysed layer and the model's alpha-hat."""

    model: str
    weights_hash: str
    layers: tuple[LayerSpectrum, ...]
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def alpha_hat(self) -> float | None:
        """Mean of ``alpha * log10(s_max^2)`` over the layers with a power-law fit."""
        values = [lay.alpha_weighted for lay in self.layers if lay.alpha_weighted is not None]
        return float(np.mean(values)) if values else None

    @property
    def mean_alpha(self) -> float | None:
        values = [lay.alpha for lay in self.layers if lay.alpha is not None]
        return float(np.mean(values)) if values else None

    def layer(self, name: str) -> LayerSpectrum:
        for lay in self.layers:
            if lay.layer == name:
                return lay
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "weights_hash": self.weights_hash,
            "alpha_hat": self.alpha_hat, "mean_alpha": self.mean_alpha,
            "n_fitted_layers": sum(lay.power_law is not None for lay in self.layers),
            "parameters": dict(self.parameters),
            "layers": [lay.to_dict() for lay in self.layers],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpectrum:
        return cls(
            model=data["model"], weights_hash=data["weights_hash"],
            layers=tuple(LayerSpectrum.from_dict(d) for d in data["layers"]),
            parameters=dict(data.get("parameters", {})),
        )


def random_init_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every ``reset_parameters()`` called under a fixed seed.

    This is PyTorch's generic init, not the architecture's own: the analysis uses
    :func:`~deepprofile.spectral.baseline.random_init_baseline`, which falls back to this
    only for unknown architectures. The caller's RNG state is left untouched.
    """
    return reset_parameters_copy(model, seed)


class WeightSpectrumAnalyzer:
    """Random-matrix analysis of every Conv/Linear layer of a model (estimator style).

    ``fit(model)`` sets ``result_`` (a :class:`ModelSpectrum`) and, with
    ``compare_random_init``, ``random_init_`` (the same figures for the random-init baseline,
    see :func:`~deepprofile.spectral.baseline.random_init_baseline`; ``model_info`` names the
    architecture when the model does not know it) and ``baseline_`` (how it was made).

    Example
    -------
    >>> ana = WeightSpectrumAnalyzer(compare_random_init=True).fit(model)
    >>> ana.result_.alpha_hat, ana.random_init_.alpha_hat
    """

    def __init__(
        self,
        layers: str | Iterable[str] | None = None,
        *,
        compare_random_init: bool = True,
        min_tail: int = 5,
        min_eigenvalues: int = 10,
        n_bootstrap: int = 0,
        seed: int = 0,
        quiet: bool = True,
        model_info: Mapping[str, Any] | None = None,
    ) -> None:
        self.layers = layers
        self.compare_random_init = compare_random_init
        self.min_tail = min_tail
        self.min_eigenvalues = min_eigenvalues
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.quiet = quiet
        self.model_info = model_info

    def _params(self) -> dict[str, Any]:
        return {"min_tail": self.min_tail, "min_eigenvalues": self.min_eigenvalues,
                "n_bootstrap": self.n_bootstrap, "seed": self.seed,
                "normalisation": "W W^T / n, n = larger side", "alpha_weighted":
                "alpha * log10(s_max^2), s_max^2 = largest eigenvalue of W W^T"}

    def _analyse(self, model: nn.Module, names: list[str], label: str,
                 client: Any = None, saved: Any = None, **extra: Any) -> ModelSpectrum:
        from deepprofile.partial import LayerResults, module_digest
        from deepprofile.provenance import weights_hash

        options = {"min_tail": self.min_tail, "min_eigenvalues": self.min_eigenvalues,
                   "n_bootstrap": self.n_bootstrap, "seed": self.seed}
        saved = saved if saved is not None else LayerResults(None, "spectral")
        modules = [get_module(model, n) for n in names]
        # one Dask task per layer with a client, shipped with its own module only; each
        # layer's spectrum depends on that module's weights and the options alone
        items = list(zip(names, modules, strict=True))
        keys = [{"module": module_digest(m), "options": options} if saved.enabled else None
                for m in modules]
        stage = "spectra-" + label.replace(" ", "-")  # spectra-trained, spectra-random-init
        layers = saved.map(stage, _spectrum_task, names, items, client, options, keys=keys,
                           decode=LayerSpectrum.from_dict, quiet=self.quiet)
        return ModelSpectrum(
            model=type(model).__name__, weights_hash=weights_hash(model),
            layers=tuple(layers), parameters={**self._params(), "weights": label, **extra},
        )

    def fit(self, model: nn.Module, *, client: Any = None,
            saved: Any = None) -> WeightSpectrumAnalyzer:
        """Analyse ``model``; with a Dask ``client`` each layer's spectrum is one task
        (identical figures: every layer's fit is seeded on its own). ``saved`` (a
        :class:`~deepprofile.partial.LayerResults`) keeps each finished layer so that a
        killed run resumes; the figures are the same with or without it."""
        self.layer_names_ = weight_layers(model, self.layers)
        self.result_ = self._analyse(model, self.layer_names_, "trained", client, saved)
        self.random_init_ = None
        self.baseline_: InitBaseline | None = None
        if self.compare_random_init:
            clone, self.baseline_ = random_init_baseline(model, self.seed,
                                                         model_info=self.model_info)
            self.random_init_ = self._analyse(clone, self.layer_names_, "random init", client,
                                              saved, baseline=self.baseline_.to_dict())
        return self


def _spectrum_task(item: tuple[str, nn.Module], options: dict[str, Any]) -> LayerSpectrum:
    """One layer's :func:`layer_spectrum` (a Dask task of ``fit(model, client=...)``)."""
    name, module = item
    return layer_spectrum(module, name, **options)


def analyze_weights(
    model: nn.Module,
    layers: str | Iterable[str] | None = None,
    **kwargs: Any,
) -> tuple[ModelSpectrum, ModelSpectrum | None]:
    """``(trained, random_init)`` spectra of a model; see :class:`WeightSpectrumAnalyzer`."""
    ana = WeightSpectrumAnalyzer(layers, **kwargs).fit(model)
    return ana.result_, ana.random_init_


__all__ = [
    "LayerSpectrum", "MPFit", "ModelSpectrum", "PowerLawFit", "WeightSpectrumAnalyzer",
    "analyze_weights", "esd", "fit_marchenko_pastur", "fit_power_law", "layer_spectrum", "mp_cdf",
    "mp_edges", "mp_pdf", "random_init_copy",
]
