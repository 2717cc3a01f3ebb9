"""prometheus_client's multiprocess mode (gunicorn, uWSGI): one scrape for every worker.

When ``PROMETHEUS_MULTIPROC_DIR`` is set *before prometheus_client is imported*, every metric value
is written to a memory-mapped file per process in that directory, and a scrape must read them all
through a :class:`~prometheus_client.multiprocess.MultiProcessCollector` on a fresh registry.

What changes for this library's metrics:

- counters and histograms are summed across processes;
- gauges use ``multiprocess_mode="livesum"`` (declared in the catalog): the sum over live
  processes, with no ``pid`` label — e.g. ``connection_state{state="connected"}`` counts the
  workers that are connected, ``buffer_events`` the events buffered in all of them;
- no exemplars (prometheus_client does not store them in multiprocess mode), no custom collectors,
  no ``process_*``/``python_*`` default metrics;
- the directory must be emptied when the service starts (:func:`clear_multiprocess_dir`), and a
  dead worker's live gauges removed (:func:`mark_process_dead` from gunicorn's ``child_exit``).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import multiprocess as _multiprocess

from instrumented_clients.config import env_str
from instrumented_clients.settings import PROMETHEUS_MULTIPROC_DIR

__all__ = [
    "clear_multiprocess_dir",
    "mark_process_dead",
    "metrics_registry",
    "multiprocess_dir",
]

# The lower-case spelling prometheus_client still honours, though deprecated.
_LEGACY_ENV = "prometheus_multiproc_dir"


def multiprocess_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """The multiprocess directory from the environment, or None when the mode is off."""
    value = PROMETHEUS_MULTIPROC_DIR.read(environ) or env_str(_LEGACY_ENV, "", environ)
    return value or None


def metrics_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry a scrape should read.

    An explicit ``registry`` is returned as it is. Otherwise, in multiprocess mode, a fresh
    registry with a ``MultiProcessCollector`` over the directory (prometheus_client's documented
    pattern: one per scrape); else the global ``REGISTRY``.
    """
    if registry is not None:
        return registry
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    scrape_registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(scrape_registry, path=directory)  # type: ignore[no-untyped-call]
    return scrape_registry


def clear_multiprocess_dir(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Create the multiprocess directory if needed and delete the metric files left in it.

    Call once when the service starts, before the workers fork (gunicorn's ``on_starting``):
    files of a previous run would otherwise be summed into this one's counters.

    Returns:
        The directory, or None when no path is given and the mode is off.
    """
    chosen = path if path is not None else multiprocess_dir()
    if chosen is None:
        return None
    directory = Path(chosen)
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in glob.glob(str(directory / "*.db")):
        Path(leftover).unlink(missing_ok=True)
    return directory


def mark_process_dead(pid: int, path: str | os.PathLike[str] | None = None) -> None:
    """Remove a dead worker's live gauges (``livesum``): call it from gunicorn's ``child_exit``."""
    chosen = path if path is not None else multiprocess_dir()
    if chosen is None:
        return
    _multiprocess.mark_process_dead(pid, str(chosen))  # type: ignore[no-untyped-call]
