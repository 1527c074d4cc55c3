"""Typed run configuration, loadable from YAML or TOML: one file describes a whole run.

Example (YAML)::

    model: runs/digits/final.pt        # checkpoint, weights file (+ arch), or architecture name
    dataset: {name: digits, split: test}
    out: runs/seed0
    seed: 0
    capture:
      layers: [stem, "layer*"]
      reductions: [mean, max_position] # one store per reduction
      batch_size: 64
    analyses:                          # each present key runs, with its keyword options
      topology: {cloud: max_position, n_points: 500}
      mapper: {intervals: 40, overlap: 0.3}
      spectral: {}
      attribution: {n_images: 16, sigmas: [0.0, 0.1, 0.3]}
    report: true
    scheduler: local:2                 # optional: Dask for capture and every analysis
    memory_budget: 4GiB                # optional: attribution and spectral (default 2GiB)

``scheduler`` (``local:N`` or ``tcp://HOST:PORT``, as ``--scheduler`` on the command line)
is where capture and the analyses run their tasks; a stage's own ``scheduler:``
(``capture: {scheduler: ...}``, ``analyses: {spectral: {scheduler: ...}}``) overrides it,
``null`` there meaning this process. ``local:N`` starts one cluster of N worker processes
for the whole run. Capture and attribution on a scheduler need ``model:`` to be a
checkpoint file (the workers load it). ``memory_budget`` (a size such as ``8GB``, or
``none`` for no bound) bounds attribution's and spectral projections' passes, overridden
by ``analyses: {attribution: {memory_budget: ...}}``.

``deepprofile run CONFIG`` executes it (:func:`run_config`); the same file gives the
same numbers. Unknown keys (analysis options too) are errors on load that list the valid
ones; analysis options out of range are refused on load, naming the key
(``topology.n_points must be ...``).
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepprofile.errors import DeepProfileError, MissingFileError

ANALYSES = ("topology", "mapper", "spectral", "attribution")
#: Analyses whose passes a memory budget bounds (the others take no ``memory_budget``).
BUDGETED = ("spectral", "attribution")


class ConfigError(DeepProfileError, ValueError):
    """A run configuration file has an unknown key or a value of the wrong kind."""


@dataclass(frozen=True)
class CaptureConfig:
    """Which layers to capture and how (one store per reduction)."""

    layers: tuple[str, ...] = ("stem", "layer*")
    reductions: tuple[str, ...] = ("mean", "max_position")
    batch_size: int = 64
    chunk_size: int | None = None
    limit: int | None = None
    scheduler: str | None = None


@dataclass(frozen=True)
class RunConfig:
    """A whole run: model, data, capture, analyses and their options, report.

    ``scheduler`` and ``memory_budget`` are the run-wide defaults that
    :func:`config_from_dict` (and so :func:`load_config`) writes into ``capture.scheduler``
    and each analysis's options where those do not set their own; :func:`run_config` reads
    the per-stage values. Build a config from a mapping with :func:`config_from_dict`.
    """

    model: str
    dataset: dict[str, Any] = field(default_factory=lambda: {"name": "digits", "split": "test"})
    out: str = "runs/run"
    seed: int = 0
    device: str = "auto"
    arch: str | None = None
    num_classes: int | None = None
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    analyses: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"topology": {}, "mapper": {}, "spectral": {}})
    report: bool = True
    scheduler: str | None = None
    memory_budget: int | str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _refuse_unknown(keys: Any, valid: list[str], what: str, listing: str) -> None:
    """Raise :class:`ConfigError` for the first key not in ``valid``, with a suggestion."""
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            raise ConfigError(
                f"Unknown {what.format(key=repr(key))}."
                + (f" Did you mean {close[0]!r}?" if close else "")
                + f" {listing}: {', '.join(valid)}."
            )


def _check_keys(data: dict[str, Any], cls: type, where: str) -> None:
    _refuse_unknown(data, [f.name for f in dataclasses.fields(cls)], "key {key} in " + where,
                    "Valid keys")


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate a plain mapping (as read from YAML/TOML) into a :class:`RunConfig`."""
    if not isinstance(data, dict):
        raise ConfigError("A run configuration must be a mapping of keys to values.")
    _check_keys(data, RunConfig, "the run configuration")
    if "model" not in data:
        raise ConfigError("The run configuration needs `model:` (checkpoint path or name).")
    values = dict(data)
    capture = values.pop("capture", None) or {}
    if not isinstance(capture, dict):
        raise ConfigError(f"`capture` must be a mapping of capture options, got {capture!r}.")
    capture = dict(capture)
    _check_keys(capture, CaptureConfig, "`capture`")
    for key in ("layers", "reductions"):
        if key in capture:
            item = capture[key]
            capture[key] = (item,) if isinstance(item, str) else tuple(item)
    analyses = values.pop("analyses", None)
    if analyses is not None:
        if not isinstance(analyses, dict):
            raise ConfigError("`analyses` must map analysis names to their options.")
        for name, options in analyses.items():
            if name not in ANALYSES:
                raise ConfigError(
                    f"Unknown analysis {name!r}; choose among {', '.join(ANALYSES)}."
                )
            if options is not None and not isinstance(options, dict):
                raise ConfigError(f"Options of analysis {name!r} must be a mapping.")
            if name not in BUDGETED and "memory_budget" in (options or {}):
                raise ConfigError(f"`{name}.memory_budget`: {name} takes no memory budget; "
                                  f"{' and '.join(BUDGETED)} do.")
            _check_option_names(name, options or {})
        values["analyses"] = {k: dict(v or {}) for k, v in analyses.items()}
    if isinstance(values.get("dataset"), str):
        values["dataset"] = {"name": values["dataset"]}
    _check_capture_values(capture)
    _check_analysis_values(values)
    _apply_stage_defaults(values, capture)
    return RunConfig(**values, capture=CaptureConfig(**capture))


def _check_scheduler(name: str, value: Any) -> None:
    """Refuse a scheduler the command line's ``--scheduler`` would refuse, naming ``name``."""
    if value is None:
        return
    if not isinstance(value, str):
        raise ConfigError(f"`{name}` must be local:N or tcp://HOST:PORT (text), got {value!r}.")
    from deepprofile.distributed import parse_scheduler

    try:
        parse_scheduler(value)
    except DeepProfileError as exc:
        raise ConfigError(f"`{name}`: {exc}") from None


def _check_budget(name: str, value: Any) -> None:
    """Refuse a memory budget ``--memory-budget`` would refuse, naming ``name``."""
    from deepprofile.attribution.memory import parse_budget

    try:
        parse_budget(value)
    except DeepProfileError as exc:
        raise ConfigError(f"`{name}`: {exc}") from None


def _apply_stage_defaults(values: dict[str, Any], capture: dict[str, Any]) -> None:
    """Check every ``scheduler`` / ``memory_budget`` and copy the run-wide ones into the
    stages that do not set their own (a stage's ``scheduler: null`` stays in this process)."""
    scheduler = values.get("scheduler")
    budget = values.get("memory_budget")
    _check_scheduler("scheduler", scheduler)
    if budget is not None:
        _check_budget("memory_budget", budget)
    _check_scheduler("capture.scheduler", capture.get("scheduler"))
    capture.setdefault("scheduler", scheduler)
    if "analyses" not in values:
        values["analyses"] = RunConfig.__dataclass_fields__["analyses"].default_factory()
    for name, options in values["analyses"].items():
        _check_scheduler(f"{name}.scheduler", options.get("scheduler"))
        if "memory_budget" in options:
            _check_budget(f"{name}.memory_budget", options["memory_budget"])
        if scheduler is not None:
            options.setdefault("scheduler", scheduler)
        if budget is not None and name in BUDGETED:
            options.setdefault("memory_budget", budget)


def _check_capture_values(capture: dict[str, Any]) -> None:
    """Refuse capture values the capture cannot use (same limits as the command line)."""
    for key in ("batch_size", "chunk_size", "limit"):
        value = capture.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise ConfigError(f"`capture.{key}` must be an integer >= 1, got {value!r}.")
    from deepprofile.capture.reducers import parse_reduction

    for spec in capture.get("reductions", ()):
        try:
            parse_reduction(str(spec))
        except ValueError as exc:
            raise ConfigError(f"`capture.reductions`: {exc}") from None


def _check_analysis_values(values: dict[str, Any]) -> None:
    """Refuse analysis options (and the seed) out of the range the analyses accept, naming
    the key as ``analysis.option`` (same limits as the command line and the Python API)."""
    from deepprofile.validate import SEED, check_options, check_value

    check_value("seed", values.get("seed", 0), SEED, error=ConfigError)
    for name, options in (values.get("analyses") or {}).items():
        check_options(name, options, prefix=f"{name}.", error=ConfigError)


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) run configuration."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"Configuration file {path} does not exist.")
    if not path.is_file():
        raise ConfigError(
            f"{path} is a folder; `deepprofile run` takes a configuration file (.yaml, .yml or "
            ".toml). To analyse an existing run folder, use the analysis commands on it.")
    if path.suffix not in (".yaml", ".yml", ".toml"):
        raise ConfigError(f"{path} is not a .yaml, .yml or .toml configuration file.")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file.") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise ConfigError(f"Cannot parse {path}: {exc}") from exc
    return config_from_dict(data or {})


def store_name_for(reduction: str) -> str:
    """Store folder name for a reduction: ``activations.zarr`` for ``mean``,
    ``activations_maxpos.zarr`` for ``max_position``, ``activations_<name>.zarr`` else."""
    if reduction == "mean":
        return "activations.zarr"
    if reduction == "max_position":
        return "activations_maxpos.zarr"
    return f"activations_{reduction.replace(':', '')}.zarr"


def run_config(config: RunConfig, *, quiet: bool = False, overwrite: bool = False,
               echo: Any = print) -> Path:
    """Capture and analyse as ``config`` says; returns the run folder."""
    from deepprofile.data import load_dataset
    from deepprofile.models import load_model, resolve_device
    from deepprofile.results import write_json
    from deepprofile.workflow import capture_run

    device = resolve_device(config.device)
    model, info = load_model(config.model, num_classes=config.num_classes, device=device,
                             arch=config.arch)
    ds_params = dict(config.dataset)
    name = ds_params.pop("name", "digits")
    split = ds_params.pop("split", None)
    dataset = load_dataset(name, split=split, **ds_params)
    from deepprofile.models import check_forward

    check_forward(model, dataset, device, num_classes=info.num_classes)
    run_dir = Path(config.out)
    indices = range(min(config.capture.limit, len(dataset))) if config.capture.limit else None
    checkpoint = info.source if info.source != "random init" else None
    if checkpoint is None:
        _refuse_scheduler_without_checkpoint(config)
    with _SharedClusters() as clusters:
        for reduction in config.capture.reductions:
            _, store = capture_run(
                model, dataset, run_dir, list(config.capture.layers), reductions=reduction,
                store_name=store_name_for(reduction), model_info=info.to_dict(),
                checkpoint=checkpoint, batch_size=config.capture.batch_size,
                chunk_size=config.capture.chunk_size, device=device, seed=config.seed,
                overwrite=overwrite, quiet=quiet, indices=indices,
                scheduler=clusters.address(config.capture.scheduler),
                load_options={"num_classes": config.num_classes, "arch": config.arch},
            )
            echo(f"captured {store.n_samples} samples ({reduction}) -> {store.path}")
        write_json(run_dir / "config.json", config.to_dict())
        for name, opts in config.analyses.items():
            opts = dict(opts)
            if opts.get("scheduler") is not None:
                opts["scheduler"] = clusters.address(opts["scheduler"])
            _run_analysis(name, opts, model, run_dir, dataset, config.seed, quiet, echo)
    if config.report:
        from deepprofile.report import build_report

        echo(f"report: {build_report(run_dir)}")
    return run_dir


def _refuse_scheduler_without_checkpoint(config: RunConfig) -> None:
    """Capture and attribution workers load the model from its file: a random-init
    architecture name would give every worker other weights."""
    stages = (["capture"] if config.capture.scheduler is not None else []) + [
        name for name in ("attribution",)
        if (config.analyses.get(name) or {}).get("scheduler") is not None]
    if stages:
        raise ConfigError(
            f"`{stages[0]}.scheduler` needs `model:` to be a checkpoint file for the workers "
            f"to load; {config.model!r} is a random-init architecture, which would differ on "
            f"every worker. Give a checkpoint, or set `{stages[0]}: {{scheduler: null}}` to run "
            "that stage in this process.")


class _SharedClusters:
    """One Dask cluster per ``local:N`` for the whole run (stages reach it by its
    ``tcp://`` address), so worker processes start once, not once per stage."""

    def __init__(self) -> None:
        import contextlib

        self._stack = contextlib.ExitStack()
        self._addresses: dict[str, str] = {}

    def address(self, scheduler: str | None) -> str | None:
        """``scheduler`` itself for ``None`` or ``tcp://``; the address of the cluster
        started for ``local:N`` (on first use) otherwise."""
        from deepprofile.distributed import client_for, parse_scheduler

        if scheduler is None or parse_scheduler(scheduler)[0] != "local":
            return scheduler
        if scheduler not in self._addresses:
            client = self._stack.enter_context(client_for(scheduler))
            self._addresses[scheduler] = client.scheduler.address
        return self._addresses[scheduler]

    def __enter__(self) -> _SharedClusters:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def _option_names(name: str) -> list[str]:
    """The options analysis ``name`` takes in a run configuration: its entry point's
    keyword-only parameters (topology: also :class:`TopologyAnalysis`'s; spectral: also
    ``layers`` and ``memory_budget``), less those the run itself sets."""
    import inspect

    if name == "topology":
        from deepprofile.topology.pipeline import TopologyAnalysis
        from deepprofile.topology.pipeline import run_topology as func

        extra = {k for k in inspect.signature(TopologyAnalysis).parameters if k != "layers"}
    elif name == "mapper":
        from deepprofile.mapper.pipeline import run_mapper as func

        extra = set()
    elif name == "spectral":
        from deepprofile.spectral.pipeline import run_spectral as func

        extra = {"layers", "memory_budget"}
    else:
        from deepprofile.attribution.pipeline import run_attribution as func

        extra = set()
    params = inspect.signature(func).parameters
    keyword = {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
    return sorted((keyword | extra) - {"seed", "quiet", "dataset"})


def _check_option_names(name: str, options: dict[str, Any]) -> None:
    """Refuse options analysis ``name`` does not take, naming the ones it does."""
    _refuse_unknown(options, _option_names(name), f"option {{key}} for analysis {name!r}",
                    "Options")


def _run_analysis(name: str, options: dict[str, Any], model: Any, run_dir: Path, dataset: Any,
                  seed: int, quiet: bool, echo: Any) -> None:
    _check_option_names(name, options)
    if name == "topology":
        from deepprofile.topology.pipeline import run_topology
        from deepprofile.topology.pipeline import summarize_topology as summarize

        result = run_topology(run_dir, seed=seed, quiet=quiet, **options)
    elif name == "mapper":
        from deepprofile.mapper.pipeline import run_mapper
        from deepprofile.mapper.pipeline import summarize_mapper as summarize

        result = run_mapper(run_dir, dataset=dataset, seed=seed, quiet=quiet, **options)
    elif name == "spectral":
        from deepprofile.attribution.memory import DEFAULT_BUDGET, memory_budget
        from deepprofile.spectral.pipeline import run_spectral
        from deepprofile.spectral.pipeline import summarize_spectral as summarize

        layers = options.pop("layers", None)
        budget = options.pop("memory_budget", DEFAULT_BUDGET)
        # run_spectral with a scheduler and a dataset reads store.path even when no layer is
        # projected from a store: give it the run's mean store (no full maps, so the
        # projections still come from the dataset, as without a scheduler)
        store = options.pop("store", None)
        if (store is None and options.get("scheduler") is not None
                and (run_dir / "activations.zarr").exists()):
            from deepprofile.capture.store import ActivationStore

            store = ActivationStore.open(run_dir / "activations.zarr", verify=False)
        with memory_budget(budget):  # bounds the projections' forward batches and chunks
            result = run_spectral(model, run_dir, dataset, layers, seed=seed, quiet=quiet,
                                  store=store, **options)
    else:
        from deepprofile.attribution.pipeline import run_attribution
        from deepprofile.attribution.pipeline import summarize_attribution as summarize

        result = run_attribution(model, run_dir, dataset, seed=seed, quiet=quiet, **options)
    echo(summarize(result))
