"""Progress of a fit: named phases with their elapsed times as ``logging`` lines on the
``"icongraph"`` logger, and progress bars over the long phases.

``verbose`` levels, as umap-learn's: ``False``/0 silent; ``True``/1 a line when each phase
starts and when it ends (with its seconds), and a bar over the phases that iterate (the kNN
search, the optimisation epochs); 2 and above also detail lines (the loss about every tenth of
an optimisation, pynndescent's own messages).

Bars are ``tqdm.auto``'s (widgets in a notebook), labelled by the phase, shown when stderr is a
terminal (of :data:`FALLBACK_SCREEN` when it reports no size) or in a notebook. Anywhere
else (a log file, a pipe) a bar would be a stream of carriage returns: a line
``phase: n/total unit`` is logged every :data:`LOG_INTERVAL` seconds instead.

Logging is configured for the ``"icongraph"`` logger only, never globally: it has a
``NullHandler`` and passes every level (``verbose`` decides what is emitted; set the logger's
level to filter it). A verbose fit in a program that configured no handler (on this logger or
on the root logger) attaches one that writes to ``sys.stderr``, as umap-learn prints its
progress and scanpy logs to stderr by default; a later verbose fit detaches it once the program
has configured a handler of its own, so no line is written twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass

from tqdm.auto import tqdm

__all__ = ["LOGGER", "DETAIL", "LOG_INTERVAL", "FALLBACK_SCREEN", "Phase", "phase", "progress", "detail",
           "level", "current_phase", "peak_rss_bytes"]

LOGGER = logging.getLogger("icongraph")
LOGGER.addHandler(logging.NullHandler())
if LOGGER.level == logging.NOTSET:
    LOGGER.setLevel(logging.DEBUG)

#: the ``verbose`` level from which detail lines are logged (at DEBUG; phase lines at INFO)
DETAIL = 2
#: seconds between the progress lines that stand in for a bar when stderr is not a terminal
LOG_INTERVAL = 10.0
#: (columns, rows) given to the bars on a terminal that reports no size (a bare pty), where
#: tqdm would draw nothing
FALLBACK_SCREEN = (80, 24)
#: whether ``tqdm.auto`` chose the notebook's widget bars
NOTEBOOK = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)

#: the open phases, outermost first: ``(name, is a whole fit)``
_OPEN: ContextVar[tuple[tuple[str, bool], ...]] = ContextVar("icongraph_phases", default=())


def level(verbose) -> int:
    """The ``verbose`` level as an integer (``True``: 1, ``False``/None: 0)."""
    return int(verbose or 0)


def current_phase() -> str:
    """The open phase's name, inside the phases around it (``"coarse sample / kNN search"``);
    the estimators' whole-fit phases are left out of it. ``""`` outside any phase."""
    return " / ".join(name for name, whole in _OPEN.get() if not whole)


@dataclass
class Phase:
    """A phase of a fit, as :func:`phase` yields it.

    Attributes
    ----------
    name : str
        The name logged, inside the phases around it.
    elapsed : float
        Seconds from its start to its end (0 while it runs).
    note : str
        Set by the phase's code to report a result on its end line (``"10 clusters"``).
    peak_rss : int or None
        The process's peak resident memory (bytes) when the phase ended: the peak of this
        phase when it is above the earlier phases' (None where the platform does not say).
    """

    name: str
    elapsed: float = 0.0
    note: str = ""
    peak_rss: int | None = None


def peak_rss_bytes() -> int | None:
    """The peak resident memory of this process so far, in bytes (``getrusage``; None where
    the ``resource`` module is missing, as on Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS: bytes; Linux: KiB


@contextlib.contextmanager
def phase(name: str, verbose, about: str = "", *, whole_fit: bool = False):
    """Time the code of a ``with`` block as the phase ``name``; with ``verbose``, log a line at
    its start (``name ... (about)``) and one at its end (``name: 1.23 s``, with the
    :attr:`Phase.note`), both at INFO with the record attributes ``phase`` and ``elapsed``
    (None at the start). A phase that raises logs no end line. A whole fit logs only its end
    line: its start holds the checks of the input, which log nothing when they refuse it.

    Parameters
    ----------
    name : str
        The phase, such as ``"kNN search"``; nested phases are named inside the open ones.
    verbose : bool or int
        The estimator's ``verbose``.
    about : str
        What the start line says about the work (sizes, settings).
    whole_fit : bool
        A whole estimator fit: named on its end line, but not in the names of its phases.

    Yields
    ------
    Phase
        Its ``elapsed`` is set when the block ends.
    """
    opened = _OPEN.get()
    outer = current_phase()
    timed = Phase(f"{outer} / {name}" if outer else name)
    token = _OPEN.set((*opened, (name, whole_fit)))
    if level(verbose) and not whole_fit:
        _log(logging.INFO, "%s ...%s", timed.name, f" ({about})" if about else "",
             extra={"phase": timed.name, "elapsed": None})
    start = time.perf_counter()
    try:
        yield timed
    finally:
        timed.elapsed = time.perf_counter() - start
        timed.peak_rss = peak_rss_bytes()
        _OPEN.reset(token)
    if level(verbose):
        memory = "" if timed.peak_rss is None else f", peak RSS {timed.peak_rss / 2**30:.2f} GiB"
        _log(logging.INFO, "%s: %s%.2f s%s", timed.name, f"{timed.note}, " if timed.note else "",
             timed.elapsed, memory, extra={"phase": timed.name, "elapsed": timed.elapsed})


def detail(verbose, message: str, *args) -> None:
    """Log ``message % args`` at DEBUG, after the open phase's name, when ``verbose`` is at
    least :data:`DETAIL`."""
    if level(verbose) >= DETAIL:
        _log(logging.DEBUG, "%s: " + message, current_phase() or "icongraph", *args)


def progress(iterable, desc: str | None, verbose, total: int | None = None, unit: str = "it"):
    """A progress bar around ``iterable`` (or a manual one, ``update(n)``, when it is None),
    labelled by the open phase (``desc`` outside any phase).

    With ``verbose``: a ``tqdm.auto`` bar when stderr is a terminal or in a notebook, else a
    stand-in that logs a line every :data:`LOG_INTERVAL` seconds. Silent without.
    Both take ``set_postfix(refresh=False, **values)``, ``update`` and ``with``.
    """
    label = current_phase() or desc or ""
    if not level(verbose):
        return tqdm(iterable, total=total, disable=True)
    if NOTEBOOK:
        return tqdm(iterable, desc=label, total=total, unit=unit, leave=False)
    if sys.stderr.isatty():
        sized = _terminal_width() > 0
        columns, rows = (None, None) if sized else FALLBACK_SCREEN
        return tqdm(iterable, desc=label, total=total, unit=unit, leave=False,
                    dynamic_ncols=sized, ncols=columns, nrows=rows)
    return _LogBar(iterable, label, total, unit)


def _terminal_width() -> int:
    """The columns of the terminal behind ``sys.stderr`` (0 when it reports none)."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):  # no file descriptor, or no size
        return 0


class _LogBar:
    """A bar for logs: counts like tqdm and logs ``label: n/total unit, postfix, 12.3 s`` at
    INFO once every :data:`LOG_INTERVAL` seconds (nothing for a phase shorter than that)."""

    def __init__(self, iterable, label: str, total: int | None, unit: str):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.label, self.total, self.unit = iterable, label, total, unit
        self.n, self.postfix = 0, ""
        self._start = self._last = time.perf_counter()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self._last >= LOG_INTERVAL:
            self._last = now
            of = "" if self.total is None else f"/{self.total}"
            postfix = f", {self.postfix}" if self.postfix else ""
            _log(logging.INFO, "%s: %d%s %s%s, %.1f s", self.label, self.n, of, self.unit,
                 postfix, now - self._start)

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        """Nothing to clear (tqdm's interface)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _StderrHandler(logging.Handler):
    """Writes each record to ``sys.stderr`` as it is then (a notebook's, a redirected one)
    through ``tqdm.write``, so that an open bar is redrawn below the line."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging's contract: a handler never raises
            self.handleError(record)


def _log(levelno: int, message: str, *args, extra: dict | None = None) -> None:
    """Log on :data:`LOGGER`, with the stderr handler attached or detached first."""
    _attach_stderr_handler()
    LOGGER.log(levelno, message, *args, extra=extra)


def _attach_stderr_handler() -> None:
    """Attach the stderr handler while the program configures none (on this logger or the
    root logger); detach it once the program has one."""
    ours = [h for h in LOGGER.handlers if isinstance(h, _StderrHandler)]
    theirs = [h for h in LOGGER.handlers
              if not isinstance(h, (_StderrHandler, logging.NullHandler))]
    if theirs or logging.getLogger().handlers:
        for handler in ours:
            LOGGER.removeHandler(handler)
    elif not ours:
        LOGGER.addHandler(_StderrHandler())
