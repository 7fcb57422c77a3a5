"""The search driver: validate the config, open the store and the Optuna study, run trials on Ray Tune, report."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, cast

from omegaconf import DictConfig, OmegaConf

from nas.cli import command
from nas.cost import Coster
from nas.evaluation.data import TaskSpec, check_task_data
from nas.evaluation.proxy import ProxySpec, proxy_arch
from nas.model.config import ArchConfig
from nas.search.bridge import INTERRUPTED, OptunaBridge, make_pruner, make_sampler, make_storage
from nas.search.ray_start import RayStart, check_ray_address
from nas.search.runner import ProxyRunner, TrialRunner, trainable
from nas.search.schema import SearchConf
from nas.search.scratch import ray_scratch
from nas.study import space
from nas.study.objectives import check_compute, stored_compute_keys
from nas.study.pruner import COMPUTE_ATTR, compute_vector
from nas.study.store import DEFAULT_URL, Store, check_store, shown_url
from nas.study.view import is_baseline, noise_verdict, quality_margin

# no CSV/JSON/TensorBoard loggers, no progress tables, rare experiment snapshots: the store is the record
QUIET_TUNE = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0", "TUNE_GLOBAL_CHECKPOINT_S": "600",
    # Ray starts its workers at nice 15; a trial is the search's real work, and beside any other busy process
    # at nice 0 it then gets a few % of a core (a 35 s trial took over 10 minutes on a loaded 2-core machine)
    "RAY_worker_niceness": "0",
}
FIXED_PER_STUDY = ("proxy", "task", "budget_tokens", "objectives", "target", "hardware")  # resume must match
ADEQUACY_MODES = ("enforce", "warn", "skip")


class SearchError(ValueError):
    """A search that cannot start (bad config, or a study name already used by another search space)."""


@dataclass
class Setup:
    """Everything validated before anything is written."""

    conf: SearchConf
    plain: dict[str, Any]
    spec: space.SearchSpec
    proxy: ProxySpec
    task: TaskSpec
    url: str
    compute_keys: tuple[str, ...]  # the study's compute objectives, primary first
    coster: Coster  # the target on the hardware profile, as configured (overrides included), baseline costed once


@dataclass
class SearchResult:
    """What a finished search leaves: its name, store URL, counts of this run and the Pareto front."""

    study: str
    url: str
    counts: dict[str, int]
    front: list[dict[str, Any]]
    wall_s: float
    adequacy: dict[str, Any] | None = None  # the study's adequacy record (its seed noise: the front's tie margin)
    free_ranking: str = ""  # the completed trials against the free ranking by the primary compute objective


def validate(cfg: DictConfig | dict, space_source: str = "search_space") -> Setup:
    """Check every setting (types via the schema, names, the search space against the proxy); writes nothing."""
    node = OmegaConf.merge(OmegaConf.structured(SearchConf), cfg)
    plain = cast(dict[str, Any], OmegaConf.to_container(node, resolve=True))  # a DictConfig converts to a dict
    conf = cast(SearchConf, OmegaConf.to_object(node))  # a structured node converts to its dataclass
    for key, value, low in (("n_trials", conf.n_trials, 1), ("ray.max_concurrent", conf.ray.max_concurrent, 1),
                            ("ray.cpus_per_trial", conf.ray.cpus_per_trial, 1),
                            ("store.heartbeat_interval", conf.store.heartbeat_interval, 1),
                            ("store.grace_period", conf.store.grace_period, conf.store.heartbeat_interval + 1)):
        if value < low:
            raise SearchError(f"{key}={value!r} is invalid: expected an integer >= {low}")
    if conf.ray.gpus_per_trial < 0:
        raise SearchError(f"ray.gpus_per_trial={conf.ray.gpus_per_trial!r} is invalid: expected a number >= 0")
    try:
        check_ray_address(conf.ray.address)  # before the adequacy check: an absent head is found in seconds
    except ValueError as err:
        raise SearchError(str(err)) from err
    if conf.adequacy not in ADEQUACY_MODES:
        raise SearchError(f"adequacy={conf.adequacy!r} is invalid: expected one of {', '.join(ADEQUACY_MODES)}")
    if not conf.study or any(c in conf.study for c in "/\\"):
        raise SearchError(f"study={conf.study!r} is invalid: expected a non-empty name without slashes")
    url = conf.store.url or DEFAULT_URL
    check_store(url)  # StoreError: one line naming the URL, password masked
    plain["store"] = {**plain["store"], "url": shown_url(url)}  # what the study row keeps: never the password
    if plain["task"].get("corpus"):  # trials run in Ray's own working folder: the corpus as an absolute path
        plain["task"]["corpus"] = str(Path(plain["task"]["corpus"]).expanduser().absolute())
    try:
        proxy = ProxySpec.from_dict(dict(plain["proxy"]))
        task = TaskSpec.from_dict(dict(plain["task"]))
        check_task_data(task, proxy.seq_len, proxy.eval_batches, proxy.batch_size)  # before trials find it
    except (TypeError, ValueError) as err:
        raise SearchError(str(err)) from err
    spec = space.parse(plain["search_space"], space_source, proxy_arch({}, proxy))
    try:  # an override, else the space's own list; stored resolved, so a resume compares what was searched
        keys = spec.objectives if conf.objectives.compute is None else \
            check_compute(conf.objectives.compute, "objectives.compute")
    except ValueError as err:
        raise SearchError(str(err)) from err
    plain["objectives"] = {**plain["objectives"], "compute": list(keys)}
    make_sampler(conf.sampler, conf.seed, spec)
    make_pruner(conf.pruner)
    try:
        coster = Coster(plain["target"], plain["hardware"])  # overrides included
        coster.estimate(proxy_arch(spec.knobs(dict(spec.baseline)), proxy))
    except (KeyError, TypeError, ValueError) as err:
        raise SearchError(f"target / hardware config: {err}") from err
    return Setup(conf, plain, spec, proxy, task, url, keys, coster)


def _evaluator(setup: Setup):
    def evaluate(knobs: dict[str, Any]) -> tuple[ArchConfig, dict, dict]:
        arch = proxy_arch(knobs, setup.proxy)  # built once: costed here, trained as it is by the trial's worker
        report = setup.coster.estimate(arch)
        return arch, report.arch.to_dict(), report.to_dict()
    return evaluate


def _checker(setup: Setup):
    limits = setup.conf.constraints

    def check(cost: dict[str, Any]) -> str | None:
        if limits.max_unique_params is not None and cost["params_unique"] > limits.max_unique_params:
            return (f"unique params {cost['params_unique']:.4g} > "
                    f"constraints.max_unique_params={limits.max_unique_params:.4g}")
        if limits.max_memory_gb is not None and cost["memory_bytes"] / 1e9 > limits.max_memory_gb:
            return f"memory {cost['memory_bytes'] / 1e9:.4g} GB > constraints.max_memory_gb={limits.max_memory_gb:.4g}"
        return None
    return check


def _reconcile(store: Store, bridge: OptunaBridge, study: str) -> None:
    """Store rows left RUNNING by a killed driver take Optuna's outcome when it was told (killed between Optuna's
    tell and the store's write); rows of trials still running in Optuna are another driver's, or reclaimed later."""
    interrupted = bridge.interrupted()
    for t in store.trials(study, states=("RUNNING",)):
        told = bridge.study.trials[t.number]
        if told.state.name == "RUNNING":
            continue
        if t.number in interrupted:
            store.mark_interrupted(study, INTERRUPTED, [t.number])
            continue
        if told.values is not None:
            objectives = bridge.objectives(tuple(told.values[1:]), told.values[0])
        elif COMPUTE_ATTR in told.user_attrs:
            objectives = bridge.objectives(compute_vector(told.user_attrs[COMPUTE_ATTR]))
        else:
            objectives = None
        store.finish_trial(study, t.number, told.state.name, objectives=objectives)


def sampler_seed(seed: int, first_driver: bool, n_existing: int) -> int:
    """The sampler's seed: `seed` for the driver that creates the study (reproducible); otherwise a stream of its
    own (a resumed or joining driver must not replay the first driver's samples), from seed, the trials so far
    and this process."""
    if first_driver:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, n_existing, os.getpid()]).generate_state(1)[0])


def check_adequacy(setup: Setup, out: TextIO | None) -> dict[str, Any]:
    """Run the proxy adequacy check as `adequacy` says, with the proxy's seed noise (measured beside it, or cached:
    nas.evaluation.noise); what the study records. SearchError when enforced and failed. adequacy=skip trains nothing:
    the noise only when cached."""
    conf, mode = setup.conf, setup.conf.adequacy
    if mode == "skip":
        from nas.evaluation.noise import read_cached

        found: dict[str, Any] = {"mode": "skip", "passed": None, "summary": "adequacy check skipped (adequacy=skip)",
                                 "checks": []}
        cached = read_cached(setup.proxy, setup.task, conf.budget_tokens or setup.proxy.budget_tokens, conf.seed)
        if cached is not None:
            found["noise"] = cached.to_dict()
    else:
        from nas.evaluation.adequacy import check_adequacy as run_check  # trains the dense baseline: imported when used
        from nas.evaluation.noise import NOISE_SEEDS

        if out is not None:
            print(f"adequacy: training the dense baseline at proxy {setup.proxy.name!r} on task {setup.task.name!r} "
                  f"to check it can resolve the {setup.spec.name} knobs (and at {NOISE_SEEDS - 1} more seeds in "
                  "parallel for the proxy's seed noise, unless cached)...", file=out, flush=True)
        result = run_check(setup.spec, setup.proxy, setup.task, budget_tokens=conf.budget_tokens, seed=conf.seed,
                           threads=conf.ray.cpus_per_trial, device=conf.device, progress=False)
        summary = " ".join(str(result.summary).split())  # one line
        if out is not None:
            print(f"adequacy: {summary}", file=out, flush=True)
        if not result.passed and mode == "enforce":
            fix = f"; fix: {result.fix}" if result.fix and result.fix not in summary else ""
            raise SearchError(f"proxy adequacy check failed: {summary}{fix} (adequacy=warn searches anyway)")
        found = {**result.to_dict(), "mode": mode}
    noise = found.get("noise")
    if noise and out is not None:
        qualities = ", ".join(f"{q:.4f}" for q in noise["qualities"])
        how = ", cached" if noise["cached"] else f", measured in {noise['wall_s']:.0f} s"
        print(f"noise: dense baseline at seeds {noise['seeds']} = {qualities} (sd {noise['sd']:.4f}{how}): quality "
              f"differences within {noise['margin']:.4f} are ties on the front", file=out, flush=True)
    return found


def run_search(cfg: DictConfig | dict, *, trial_runner: TrialRunner | None = None, out: TextIO | None = sys.stdout,
               space_source: str = "search_space") -> SearchResult:
    """Run (or resume) the study: Optuna samples, Ray Tune trains, every report lands in the store."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from nas.search.tune_parts import WORKER_RETRIES, BridgeSearcher, DriverState, PruningScheduler, StoreCallback

    t0 = time.perf_counter()
    setup = validate(cfg, space_source)
    conf = setup.conf
    store = Store(setup.url)
    try:
        existing = store.study(conf.study)
        _check_resumable(existing, setup)  # before Ray: a refused resume starts nothing
    except BaseException:
        store.close()
        raise
    for key, value in QUIET_TUNE.items():
        os.environ.setdefault(key, value)
    ray_start = RayStart(conf.ray.address, conf.ray.num_cpus, conf.ray.num_gpus).start()  # up while we prepare
    counts: Counter = Counter({"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "infeasible": 0})
    try:
        try:
            bridge = _open_study(store, setup, existing, out)
        except BaseException:
            store.close()
            raise
        remaining = conf.n_trials - bridge.n_done()
        if remaining > 0:
            try:
                ray_start.wait()
            except ConnectionError as err:  # ray.address=auto with no Ray running on this machine
                raise SearchError(f"ray.address={conf.ray.address!r}: {err}") from err
            stored = store.study(conf.study)
            state = DriverState(bridge, store, conf.study, conf.seed, conf.ray.cpus_per_trial,
                                out if conf.progress else None, n_trials=conf.n_trials,
                                margin=quality_margin(stored.adequacy if stored is not None else None))
            counts = state.counts
            runner = trial_runner or ProxyRunner(setup.proxy, setup.task, conf.budget_tokens, conf.device)
            resources = {"cpu": conf.ray.cpus_per_trial, "gpu": conf.ray.gpus_per_trial}
            if out is not None:
                print(f"study {conf.study!r}: {remaining} of {conf.n_trials} trials to run (with any other driver "
                      f"on it), {conf.ray.max_concurrent} at a time ({conf.sampler.name} sampler, {conf.pruner.name} "
                      f"pruner, store {shown_url(setup.url)})", file=out, flush=True)
            try:
                with ray_scratch() as tmp:  # a killed search's scratch folder is swept here
                    tune.Tuner(
                        tune.with_resources(tune.with_parameters(trainable, runner=runner), resources),
                        tune_config=tune.TuneConfig(
                            search_alg=ConcurrencyLimiter(BridgeSearcher(state),
                                                          max_concurrent=conf.ray.max_concurrent),
                            scheduler=PruningScheduler(state), num_samples=-1,  # the searcher ends it
                            reuse_actors=True, time_budget_s=conf.time_budget_s),
                        run_config=tune.RunConfig(
                            name=conf.study, storage_path=conf.ray.storage_path or tmp,
                            callbacks=[StoreCallback(state)], verbose=0, log_to_file=False,
                            failure_config=tune.FailureConfig(max_failures=WORKER_RETRIES, fail_fast=False)),
                    ).fit()
            finally:
                state.close()
    finally:
        ray_start.shutdown()
    stored = store.study(conf.study)
    adequacy = stored.adequacy if stored is not None else None
    margin = quality_margin(adequacy)
    front = [_front_row(t, setup.compute_keys, setup.spec.baseline) for t in bridge.front(margin)]
    free_ranking = bridge.free_ranking(margin)
    store.close()
    result = SearchResult(conf.study, setup.url, dict(counts), front, time.perf_counter() - t0, adequacy,
                          free_ranking)
    if out is not None:
        _summary(result, setup.compute_keys, out, conf.dashboard)
    return result


def _open_study(store: Store, setup: Setup, existing: Any, out: TextIO | None) -> OptunaBridge:
    """Create the study (after its adequacy check), or join / resume it: the Optuna bridge to search it with.

    `existing` is the stored study (None: a new one), already checked against the settings. Creating is idempotent
    under races: a driver that loses the race joins the winner's study if its settings match. Only the creator
    queues the dense baseline and seeds its sampler with `seed`.
    """
    conf, spec = setup.conf, setup.spec
    created = False
    if existing is None:  # a new study: can the proxy resolve the knobs? (before Optuna or the store write)
        adequacy = check_adequacy(setup, out)
        created = store.create_study(conf.study, setup.plain, spec.to_dict(), spec.digest(),
                                     adequacy=adequacy) is not None
        if not created:  # another driver created it a moment ago
            _check_resumable(store.study(conf.study), setup)
    storage = make_storage(setup.url, conf.store.heartbeat_interval, conf.store.grace_period)
    seed = sampler_seed(conf.seed, created, optuna_trials(storage, conf.study))
    bridge = OptunaBridge(storage, conf.study, spec, make_sampler(conf.sampler, seed, spec),
                          make_pruner(conf.pruner), setup.compute_keys, _evaluator(setup), _checker(setup))
    if created:
        bridge.enqueue_baseline()
        return bridge
    _reconcile(store, bridge, conf.study)
    rerun = bridge.reclaim(lambda n: store.mark_interrupted(conf.study, INTERRUPTED, [n]))
    if out is not None:
        running = bridge.n_running()
        print(f"resuming study {conf.study!r}: {bridge.n_done()} trials kept"
              + (f", re-running interrupted trials {rerun}" if rerun else "")
              + (f", {running} running in other drivers" if running else ""), file=out, flush=True)
    return bridge


def _check_resumable(existing: Any, setup: Setup) -> None:
    """SearchError when the stored study `existing` (None: a new one) was searched with other settings."""
    conf, spec = setup.conf, setup.spec
    if existing is None:
        return
    if existing.space_hash != spec.digest():
        raise SearchError(f"study={conf.study!r} already exists in {shown_url(setup.url)} with a different search "
                          f"space ({existing.search_space.get('name')}); resume it with that space or choose another "
                          "study=NAME")
    changed = [k for k in FIXED_PER_STUDY if _fixed(existing.config, k) != _fixed(setup.plain, k)]
    if changed:
        raise SearchError(f"study={conf.study!r} already exists in {shown_url(setup.url)} with a different "
                          f"{changed[0]} ({existing.config.get(changed[0])!r}); results would not be comparable: "
                          "resume it with the same settings or choose another study=NAME")


def optuna_trials(storage: Any, name: str) -> int:
    """How many trials the Optuna study `name` holds (0 when it does not exist yet)."""
    import optuna

    try:
        return len(optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False))
    except KeyError:
        return 0


def _fixed(config: dict[str, Any], key: str) -> Any:
    """A setting a resume must match, as compared (objectives: the compute list, also from older studies)."""
    if key == "objectives":
        return list(stored_compute_keys(config))
    if key == "proxy" and isinstance(config.get(key), dict):  # studies before proxy.seeds trained one seed a trial
        return {"seeds": 1, **config[key]}
    return config.get(key)


def _front_row(t: Any, compute_keys: tuple[str, ...], baseline: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"number": t.number, "quality": t.values[0], **dict(zip(compute_keys, t.values[1:])), "params": t.params,
            "baseline": is_baseline(t.params, baseline)}


def _dashboard(result: SearchResult) -> str:
    """Build the study's dashboard page; its path, or the command to build it when that is not possible."""
    from nas.dashboard import build

    later = _command(result, "nas.dashboard")
    try:
        pages = build(result.url, [result.study], None)
    except Exception as err:  # the search's results are safe in the store; the page can be built later
        return f"{later} (building it here failed: {type(err).__name__}: {err})"
    page = [p for p in pages if p.name != "index.html"]
    return str(page[0] if page else pages[0]) if pages else later


def _summary(result: SearchResult, compute_keys: tuple[str, ...], out: TextIO, build_dashboard: bool) -> None:
    """The Pareto front as a table, then where to look next."""
    print(f"\nPareto front of study {result.study!r} ({len(result.front)} trials; this run: "
          f"{result.counts.get('COMPLETE', 0)} complete, {result.counts.get('PRUNED', 0)} pruned, "
          f"{result.counts.get('FAIL', 0)} failed, {result.wall_s:.0f} s)", file=out)
    print(f"{'trial':>5}  {'quality':>8}  " + "".join(f"{k:>20}" for k in compute_keys) + "  params", file=out)
    for row in result.front:
        tag = " (dense baseline)" if row["baseline"] else ""
        params = " ".join(f"{k}={v}" for k, v in row["params"].items())
        compute = "".join(f"{row[k]:>20.4f}" for k in compute_keys)
        print(f"{row['number']:>5}  {row['quality']:>8.4f}  {compute}  {params}{tag}", file=out)
    print(noise_verdict([row["quality"] for row in result.front], result.adequacy), file=out)
    if result.free_ranking:
        print(result.free_ranking, file=out)
    print(f"dashboard: {_dashboard(result) if build_dashboard else _command(result, 'nas.dashboard')}", file=out)
    print(f"optuna-dashboard: {command('optuna-dashboard', shown_url(result.url))}", file=out)
    print(f"export: {_command(result, 'nas.export', policy='knee')}", file=out, flush=True)


def _command(result: SearchResult, module: str, **overrides: Any) -> str:
    """`python -m MODULE study=... [store.url=...]`, quoted for a shell; a store URL shown without its password."""
    store = {} if result.url == DEFAULT_URL else {"store.url": shown_url(result.url)}
    return command("python", "-m", module, **{"study": result.study, **overrides, **store})
