"""Distribution strategies: which one `training.distribution` means on this machine.

| setting | strategy |
|---|---|
| `auto` | MultiWorkerMirroredStrategy when `TF_CONFIG` names a cluster of two or more tasks; else MirroredStrategy when more than one GPU is visible; else one device |
| `none` | the default strategy (one device) |
| `mirrored` | MirroredStrategy over every GPU or, with none, every logical CPU device |
| `multi_worker` | MultiWorkerMirroredStrategy over the cluster in `TF_CONFIG` |
| `tpu` | TPUStrategy on the TPU that `TPUClusterResolver` finds (`TPU_NAME`, or a TPU VM) |

MultiWorkerMirroredStrategy must be created before TensorFlow's runtime starts:
call `resolve_strategy` before any other TensorFlow work in the process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import threading
from dataclasses import dataclass
from typing import Any

from kerasft._compat import tf
from kerasft.errors import ConfigError, PeerLost, first_line

_MULTI_WORKER: tf.distribute.Strategy | None = None  # one per process: it configures the runtime
_MIRRORED: dict[tuple[str, ...], tf.distribute.Strategy] = {}
# A worker silent this long is taken for dead and the cluster stops. TensorFlow's default, 10 s,
# aborts healthy runs on a loaded machine (workers starved of CPU while they build the model).
HEARTBEAT_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Cluster:
    """This process's place in a `TF_CONFIG` cluster."""

    tasks: int  # chief and workers, the ones that train
    kind: str  # "chief" or "worker"
    index: int
    has_chief: bool = False  # else worker 0 acts as the chief

    @property
    def is_chief(self) -> bool:
        """The task that writes the run and the export: the chief, or worker 0 without one."""
        return self.kind == "chief" or (
            self.kind == "worker" and self.index == 0 and not self.has_chief
        )


@functools.cache
def _no_cluster(raw: str) -> None:
    """Says once per process (and TF_CONFIG value) that a TF_CONFIG without a cluster trains alone."""
    print(
        f"warning: TF_CONFIG names no cluster ({raw[:80]}); training on this machine alone",
        flush=True,
    )


def cluster_from_env() -> Cluster | None:
    """The cluster `TF_CONFIG` describes, or None when it is unset or names no cluster.

    Raises:
        ConfigError: `TF_CONFIG` is not the JSON TensorFlow expects.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    shape = '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
    try:
        spec = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(
            f"TF_CONFIG is not valid JSON ({exc}); it should look like {shape}."
        ) from None
    if not isinstance(spec, dict):
        raise ConfigError(f"TF_CONFIG is a JSON {type(spec).__name__}, not an object like {shape}.")
    cluster, task = spec.get("cluster") or {}, spec.get("task") or {}
    if not cluster:
        _no_cluster(raw)
        return None
    kind, index = task.get("type"), task.get("index")
    if kind not in ("chief", "worker") or not isinstance(index, int):
        raise ConfigError(
            f'TF_CONFIG: task {task!r} should be {{"type": "chief" or "worker", "index": N}} for training.'
        )
    if index >= len(cluster.get(kind, [])):
        raise ConfigError(
            f"TF_CONFIG: task {kind} {index} is not in the cluster's {kind} list ({len(cluster.get(kind, []))} entries)."
        )
    tasks = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    return Cluster(tasks, kind, index, has_chief=bool(cluster.get("chief")))


def resolve_strategy(
    setting: str, cluster_wait_seconds: float | None = None
) -> tuple[tf.distribute.Strategy, str]:
    """The strategy for `training.distribution` (see the module table), and a description of it.

    A multi-worker strategy waits up to `cluster_wait_seconds` (None: without a limit) for
    every task of the cluster to start.

    Raises:
        ConfigError: a strategy this machine or process cannot run.
        PeerLost: a task of the cluster did not start in time.
    """
    cluster = cluster_from_env()
    if setting == "auto":
        if cluster is not None and cluster.tasks > 1:
            setting = "multi_worker"
        else:
            setting = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "none"
    if setting == "multi_worker":
        return _multi_worker(cluster, cluster_wait_seconds)
    if setting == "tpu":
        return _tpu()
    if setting == "none":
        return tf.distribute.get_strategy(), "one device"
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        raise ConfigError(
            "`training.distribution: mirrored` needs two or more devices; this machine shows one. "
            "Use `auto` or `none`."
        )
    # One per device set and process: every new MirroredStrategy numbers its collectives from
    # the same keys, and TensorFlow caches a collective's shapes by key, so a second run in
    # the process (a tuning trial, a test) with other gradient shapes would abort.
    key = tuple(devices)
    if key not in _MIRRORED:
        _MIRRORED[key] = tf.distribute.MirroredStrategy(devices)
    return _MIRRORED[key], f"MirroredStrategy over {len(devices)} devices"


def _multi_worker(
    cluster: Cluster | None, wait_seconds: float | None
) -> tuple[tf.distribute.Strategy, str]:
    global _MULTI_WORKER
    if cluster is None:
        raise ConfigError(
            "`training.distribution: multi_worker` needs TF_CONFIG naming the cluster and this task, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}.'
        )
    role = f"{cluster.kind} {cluster.index}" + (
        " (chief: writes the run and export)" if cluster.is_chief else ""
    )
    if _MULTI_WORKER is None:
        limit = "" if wait_seconds is None else f", for up to {wait_seconds:g} s"
        print(
            f"multi-worker: waiting for the {cluster.tasks} tasks of TF_CONFIG to start{limit} "
            f"(this is {role}); Ctrl-C stops the wait",
            flush=True,
        )
        try:
            with _signals_while_the_cluster_forms():
                _configure_coordination(wait_seconds)
                _MULTI_WORKER = tf.distribute.MultiWorkerMirroredStrategy()
        except tf.errors.DeadlineExceededError as exc:
            if wait_seconds is None:
                raise
            raise _not_formed(cluster, wait_seconds, str(exc)) from None
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"MultiWorkerMirroredStrategy could not start ({exc}); it must be created before TensorFlow "
                "runs anything else, so start each worker as its own `python -m kerasft.train` process."
            ) from None
    return (
        _MULTI_WORKER,
        f"MultiWorkerMirroredStrategy over {cluster.tasks} workers, "
        f"{_MULTI_WORKER.num_replicas_in_sync} replicas; this is {role}; a worker silent for "
        f"{_heartbeat_timeout_seconds():g} s stops the cluster",
    )


@contextlib.contextmanager
def _signals_while_the_cluster_forms():
    """While TensorFlow forms the cluster it holds the interpreter until every task has
    joined, so Python's Ctrl-C handler would wait for a task that may never start: Ctrl-C
    ends the process at once instead (nothing is written yet). After, SIGINT's and SIGTERM's
    Python handlers are put back in place: TensorFlow's coordination agent installs a SIGTERM
    handler of its own (a preemption notice that does not stop the process), which took
    SIGTERM from `cli_main` for the whole run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if handlers[signal.SIGINT] is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            if handler is not None:  # None: not set from Python, nothing to put back
                signal.signal(signum, handler)


def _not_formed(cluster: Cluster, wait_seconds: float, error: str) -> PeerLost:
    """The one line of a worker whose cluster did not form in time. The task that runs the
    coordination service names the tasks that never registered; the others only time out."""
    names = []  # the lines after TensorFlow's "Some timed out task names:" (once; it may repeat)
    for line in error.partition("task names:")[2].strip().splitlines():
        task = re.fullmatch(r"/job:(\w+)/replica:\d+/task:(\d+)", line.strip())
        if task is None:
            break
        names.append(" ".join(task.groups()))
    missing = f"; not started: {', '.join(dict.fromkeys(names))}" if names else ""
    return PeerLost(
        f"multi-worker: the {cluster.tasks} tasks of TF_CONFIG did not all start within "
        f"{wait_seconds:g} s (this is {cluster.kind} {cluster.index}{missing}). Start every "
        "task with the same command and TF_CONFIG, or raise `training.cluster_wait_seconds` "
        "(null: wait without a limit)."
    )


def _configure_coordination(wait_seconds: float | None) -> None:
    """The coordination service MultiWorkerMirroredStrategy would set up, with a longer
    heartbeat and, unless `wait_seconds` is None, a limit on the wait for every task to start.

    The strategy keeps a configuration already in place (ParameterServerStrategy sets its own
    heartbeat the same way); only the chief and workers take part, as in the strategy.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    if context.context().coordination_service is not None:
        return
    spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    jobs = [
        coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
        for job in ("chief", "worker")
        if job in spec.jobs
    ]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=jobs,
        heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_SECONDS * 1000,
        cluster_register_timeout_in_ms=int((wait_seconds or 0) * 1000),
    )
    if wait_seconds is not None:
        # Registration waits at a barrier with the timeout above; without it, a task whose
        # peers never start waits forever (TensorFlow offers no other limit).
        context.context()._coordination_service_config.cluster_register_with_barrier = True


def _heartbeat_timeout_seconds() -> float:
    """The coordination service's heartbeat timeout in this process, as configured."""
    from tensorflow.python.eager import context

    return context.context().coordination_service.heartbeat_timeout_in_ms / 1000


def _tpu() -> tuple[tf.distribute.Strategy, str]:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise ConfigError(
            f"`training.distribution: tpu`: no TPU found ({first_line(exc)}); set TPU_NAME or run on a TPU VM, "
            "or use `auto`."
        ) from None
    strategy = tf.distribute.TPUStrategy(resolver)
    return strategy, f"TPUStrategy over {strategy.num_replicas_in_sync} TPU cores"


def check_fits(training: Any, replicas: int, multi_worker: bool) -> None:
    """Refuses `training:` settings the strategy cannot run.

    Args:
        training: the `training` config section.
        replicas: replicas in sync under the strategy.
        multi_worker: whether the strategy spans several worker processes.

    Raises:
        ConfigError: a time budget across workers, or a batch that does not split evenly
            over the replicas.
    """
    if multi_worker and training.max_seconds:
        raise ConfigError(
            "`training.max_seconds` would stop workers at different steps under multi-worker training; "
            "use `training.max_steps`."
        )
    if replicas == 1 and not multi_worker:
        return
    if training.batch_size % replicas:
        raise ConfigError(
            f"`training.batch_size: {training.batch_size}` does not split evenly over {replicas} replicas."
        )


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` spans several worker processes."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes run files and exports (always, unless it is a non-chief worker)."""
    if not is_multi_worker(strategy):
        return True
    cluster = cluster_from_env()
    return cluster is None or cluster.is_chief


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Returns once every worker has reached it; a no-op outside multi-worker training."""
    if is_multi_worker(strategy):
        strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None
        )
