"""Workers' multiprocess metric files: named per worker start, summed exactly, and folded once a worker is gone.

prometheus-client keeps each process's counters and histograms in ``counter_<id>.db`` / ``histogram_<id>.db``
and sums every file on each scrape, those of exited processes too (so totals never go back). Left alone, a
worker that keeps dying adds two files per restart forever, and every scrape reads them all. So:

* Each worker start gets its own id (``w<N>``, ``worker_identity``) instead of its pid: a reused pid can never
  make a new worker continue, or lose, an exited one's file.
* The supervisor marks an exited worker (``forget``): its live gauges go, and a ``<id>.dead`` file says its
  counter and histogram files are final.
* The /metrics process (``ExactCollector``), at its next scrape or fold timer (``FOLD_SECONDS``, so that they
  do not pile up while nothing scrapes), adds the marked files' values into one archive (``archive.json``,
  replaced atomically, naming the ids it took) and only then removes the files and markers.
  Folding and reading happen under one lock in that one process, so no scrape sees a value twice or misses one;
  after a crash between the two steps the archive's ids say which files it already holds.
* Sums are exact (``fractions.Fraction``), rounded to a float once: the total is the same whichever files hold
  the values, so folding never moves a series, and a counter's total never decreases (float additions in
  another order could lower a histogram's ``_sum`` by an ulp, which Prometheus reads as a counter reset).

Gauges are summed by prometheus-client itself (all of ours are ``live*`` modes: an exited worker's are dropped).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from fractions import Fraction

from prometheus_client import values
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from tenantgate.core.problemlog import ProblemLog
from tenantgate.observability import valuefiles
from tenantgate.paths import open_regular

log = logging.getLogger("tenantgate.metrics")

ARCHIVE = "archive.json"  # not *.db: prometheus-client never reads it
DEAD_SUFFIX = ".dead"
FOLDED_KINDS = ("counter", "histogram")
FOLD_SECONDS = 5.0  # how often the /metrics process folds exited workers' files when nothing scrapes
# Gauges whose 0 means "no live worker uses this label set": a worker cannot remove a series from its file (a
# replaced policy version is set to 0), so without this each reload would add a series to /metrics for good.
UNUSED_AT_ZERO = frozenset({"tenantgate_policy_info"})

_identity: list[str] = []  # this process's id once it is a worker (``become_worker``); its pid until then


def worker_identity(start: int) -> str:
    """The file id of the ``start``-th worker start of a supervisor (no ``_``: file names split on it)."""
    return f"w{start}"


def install() -> None:
    """Make prometheus-client name this process's files by ``become_worker``'s id (its pid until then), and
    allocate their space ahead (``valuefiles``). Call before the first metric is created, after
    ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    valuefiles.install()
    values.ValueClass = values.MultiProcessValue(process_identifier=_current_identity)  # type: ignore[no-untyped-call]


def become_worker(identity: str) -> None:
    """In a freshly forked worker, before it touches a metric: its files are named ``<kind>_<identity>.db``."""
    _identity[:] = [identity]


def _current_identity() -> str:
    return _identity[0] if _identity else str(os.getpid())


def forget(identity: str, files_dir: str, *, keep: bool) -> None:
    """Worker ``identity`` exited: drop its live-only gauges. ``keep``: mark its counter and histogram files for
    the /metrics process to fold; else (nothing serves /metrics) remove them, as nobody will read them."""
    mark_process_dead(identity, files_dir)  # type: ignore[no-untyped-call]
    try:
        if keep:
            with open(os.path.join(files_dir, identity + DEAD_SUFFIX), "ab"):
                pass
        else:
            for kind in FOLDED_KINDS:
                _unlink_quietly(os.path.join(files_dir, f"{kind}_{identity}.db"))
    except OSError as err:
        log.warning("metrics files of exited worker %s left as they are: %s", identity, err.strerror)


# A series in the archive: (file kind, the mmap key prometheus-client wrote: JSON of name, sample, labels, help).
_Key = tuple[str, str]


class ExactCollector:
    """Every process's metric files in ``files_dir``, summed exactly, exited workers' folded first (see module)."""

    def __init__(self, files_dir: str) -> None:
        self._dir = files_dir
        self._lock = threading.Lock()
        self._archive: dict[_Key, Fraction] = {}
        self._taken: set[str] = set()  # ids whose files the archive holds (their files may be left after a crash)
        # Read at the first scrape, not here: the collector is built in the supervisor and forked into each
        # /metrics process, and one restarted after a crash must start from the archive on disk, not from the
        # supervisor's empty copy (review finding: its first fold overwrote the archive, counters dropped).
        self._loaded = False
        self._unfolded = ProblemLog(log, now=time.monotonic, noun="failed folds",
                                    summary="exited workers' metrics not folded %d more times since the last "
                                            "line (latest: %s)")

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            self._load_once()
            self._fold()
            return self._merge()

    def fold(self) -> None:
        """Fold the files of exited workers now, as a scrape does first (for a timer: a worker that keeps dying
        adds three files per start, and nothing else removes them). Cheap when none exited: one directory
        listing. Never raises: a failure is logged, at most one line a minute while it goes on."""
        with self._lock:
            try:
                self._load_once()
                self._fold()
            except Exception as err:  # noqa: BLE001 - a timer thread has nobody to raise to
                self._unfolded.occurred("exited workers' metrics not folded: %r", err, cause=type(err).__name__)

    # -- folding ------------------------------------------------------------------------------------------

    def _load_once(self) -> None:
        if not self._loaded:
            self._load()
            self._loaded = True

    def _load(self) -> None:
        try:
            # Not following a link, and never blocking on a FIFO (see ``_names``): anything else is unreadable.
            with open(open_regular(os.path.join(self._dir, ARCHIVE)), encoding="utf-8") as handle:
                document = json.load(handle)
            self._archive = {(kind, key): Fraction(value) for kind, key, value in document["series"]}
            self._taken = set(document["taken"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as err:
            # Without it the exited workers' counts are gone: totals drop once, which Prometheus reads as a reset.
            log.error("metrics archive %s unreadable (%s): exited workers' counts start again from 0",
                      os.path.join(self._dir, ARCHIVE), err)
            self._archive, self._taken = {}, set()
        self._remove_taken()

    def _fold(self) -> None:
        dead = {name[:-len(DEAD_SUFFIX)] for name in self._names() if name.endswith(DEAD_SUFFIX)}
        new = sorted(dead - self._taken)
        if not new:
            if dead:
                self._remove_taken()  # markers the archive already holds (a crash between its two steps)
            return
        archive = dict(self._archive)
        for identity in new:
            for kind in FOLDED_KINDS:
                for key, value in _read(os.path.join(self._dir, f"{kind}_{identity}.db")):
                    archive[(kind, key)] = archive.get((kind, key), Fraction(0)) + Fraction(value)
        taken = self._taken | set(new)
        try:
            self._write(archive, taken)
        except OSError as err:
            # A full disk fails every fold until space is freed: one line a minute, not one per timer tick.
            self._unfolded.occurred("exited workers' metrics not folded (their files stay counted): %s",
                                    err.strerror or err, cause="write")
            return
        self._unfolded.ended("exited workers' metrics folded again")
        self._archive, self._taken = archive, taken
        self._remove_taken()

    def _write(self, archive: dict[_Key, Fraction], taken: set[str]) -> None:
        document = {"taken": sorted(taken),
                    "series": [[kind, key, str(value)] for (kind, key), value in sorted(archive.items())]}
        path = os.path.join(self._dir, ARCHIVE)
        temporary = path + ".new"
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(document, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except OSError:
            _unlink_quietly(temporary)  # a half-written copy would hold on to space a full disk lacks
            raise

    def _remove_taken(self) -> None:
        """Remove the files and markers of the ids the archive holds; forget the ids whose files are gone."""
        left = set()
        for identity in self._taken:
            for name in (*(f"{kind}_{identity}.db" for kind in FOLDED_KINDS), identity + DEAD_SUFFIX):
                if not _unlink_quietly(os.path.join(self._dir, name)):
                    left.add(identity)
        if left != self._taken:
            try:
                self._write(self._archive, left)
                self._taken = left
            except OSError:
                pass  # the archive names more ids than needed; harmless, tried again at the next fold

    # -- reading ------------------------------------------------------------------------------------------

    def _names(self) -> list[str]:
        """The regular files of the directory (not following links). Review finding: a FIFO named like a
        metrics file blocked the scrape in ``open`` for good, holding the lock, and /metrics never answered
        again; a link made any file the process can read part of the sums."""
        names = []
        for name in os.listdir(self._dir):
            try:
                if stat.S_ISREG(os.lstat(os.path.join(self._dir, name)).st_mode):
                    names.append(name)
            except OSError:  # removed meanwhile (a fold)
                continue
        return names

    def _merge(self) -> list[Metric]:
        exact: dict[_Key, Fraction] = dict(self._archive)
        gauges: list[str] = []
        for name in self._names():
            if not name.endswith(".db"):
                continue
            kind, _, rest = name.partition("_")
            if kind not in FOLDED_KINDS:
                gauges.append(os.path.join(self._dir, name))
            elif rest[:-len(".db")] not in self._taken:
                for key, value in _read(os.path.join(self._dir, name)):
                    exact[(kind, key)] = exact.get((kind, key), Fraction(0)) + Fraction(value)
        metrics = list(_metrics(exact))
        for gauge in MultiProcessCollector.merge(gauges, accumulate=True):  # type: ignore[no-untyped-call]
            if gauge.name in UNUSED_AT_ZERO:
                gauge.samples = [sample for sample in gauge.samples if sample.value != 0]
            metrics.append(gauge)
        return metrics


def _read(path: str) -> Iterator[tuple[str, float]]:
    """The values of a metrics file; none when it is missing or anything but a regular file (see ``_names``)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return
        entries = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
    except FileNotFoundError:
        return
    for key, value, _timestamp, _position in entries:
        yield key, value


def _metrics(exact: dict[_Key, Fraction]) -> Iterator[Metric]:
    """Counters and histograms from exact sums, as prometheus-client's own merge would present them."""
    families: dict[str, Metric] = {}
    buckets: dict[tuple[str, tuple[tuple[str, str], ...]], dict[float, Fraction]] = defaultdict(dict)
    counts: dict[tuple[str, tuple[tuple[str, str], ...]], Metric] = {}
    for (kind, key), value in sorted(exact.items()):
        metric_name, sample, labels, help_text = json.loads(key)
        family = families.get(metric_name)
        if family is None:
            family = families[metric_name] = Metric(metric_name, help_text, kind)
        label_items = tuple(sorted(labels.items()))
        if kind == "histogram" and "le" in labels:
            without_le = tuple(item for item in label_items if item[0] != "le")
            per_bound = buckets[(metric_name, without_le)]
            bound = float(labels["le"])
            per_bound[bound] = per_bound.get(bound, Fraction(0)) + value
            counts[(metric_name, without_le)] = family
        else:
            family.samples.append(Sample(sample, dict(label_items), float(value)))
    for (metric_name, labels), per_bound in buckets.items():
        family, running = counts[(metric_name, labels)], Fraction(0)
        for bound in sorted(per_bound):
            running += per_bound[bound]
            family.samples.append(Sample(metric_name + "_bucket", {**dict(labels), "le": _go_string(bound)},
                                         float(running)))
        family.samples.append(Sample(metric_name + "_count", dict(labels), float(running)))
    yield from families.values()


def _go_string(bound: float) -> str:
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


def _unlink_quietly(path: str) -> bool:
    """Remove ``path``; True when it is gone (also when it was not there)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
