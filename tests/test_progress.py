"""Progress and logs: every fit names its phases on the ``"icongraph"`` logger with their
elapsed times when ``verbose``, nothing without; bars on a terminal, log lines elsewhere;
``verbose=2`` adds detail lines; the library attaches a stderr handler only while the program
configures none."""

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import digits_subset

import icongraph
import icongraph.embedding as embedding_module
from icongraph import progress
from icongraph.cli import main
from icongraph.clustering import Clustering
from icongraph.knn import nndescent_knn
from icongraph.pairs import PairedEmbedding
from icongraph.prototypes import PrototypeClassifier

SMALL = {"n_jobs": 1, "n_epochs": 20}
#: the phases of whole fits, which log an end line only
WHOLE_FITS = {"UMAP", "TSNE", "Clustering", "PrototypeClassifier", "PairedEmbedding"}


@pytest.fixture(scope="module")
def digits():
    X, y = digits_subset(300)
    return X.astype(np.float32), y


def logged(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "icongraph"]


def ended(caplog) -> dict[str, float]:
    """phase name -> elapsed seconds of the end lines."""
    return {r.phase: r.elapsed for r in logged(caplog)
            if getattr(r, "elapsed", None) is not None}


def ended_lines(caplog):
    """phase name -> its end line's message."""
    return {r.phase: r.getMessage() for r in logged(caplog)
            if getattr(r, "elapsed", None) is not None}


def check_end_lines(caplog, names):
    """Each phase of ``names`` has a start line and an end line with its elapsed seconds."""
    seconds = ended(caplog)
    for name in names:
        assert name in seconds, (name, sorted(seconds))
        assert seconds[name] >= 0
    starts = {r.phase for r in logged(caplog) if getattr(r, "elapsed", 0) is None}
    assert {name for name in names if name.split(" / ")[-1] not in WHOLE_FITS} <= starts
    assert not starts & {name for name in names if name.split(" / ")[-1] in WHOLE_FITS}
    for record in logged(caplog):
        if getattr(record, "elapsed", None) is not None:
            assert re.fullmatch(rf"{re.escape(record.phase)}: (.+, )?\d+\.\d\d s"
                                r"(, peak RSS \d+\.\d\d GiB)?", record.getMessage()), \
                record.getMessage()


def test_an_embedding_logs_each_phase_with_its_time(digits, caplog):
    X, _ = digits
    model = icongraph.UMAP(verbose=True, **SMALL).fit(X)
    check_end_lines(caplog, ["kNN search", "graph", "init", "optimisation", "UMAP"])
    seconds = ended(caplog)
    assert model.timings_ == pytest.approx({"knn": seconds["kNN search"],
                                            "graph": seconds["graph"],
                                            "init": seconds["init"],
                                            "optimize": seconds["optimisation"]})
    # the peak RSS at each phase's end: the process's peak so far, so never decreasing
    peaks = [model.peak_memory_[name] for name in ("knn", "graph", "init", "optimize")]
    assert peaks == sorted(peaks) and peaks[0] > 10 * 2**20
    assert f"peak RSS {peaks[-1] / 2**30:.2f} GiB" in ended_lines(caplog)["optimisation"]
    assert "UMAP: 300 points, " in logged(caplog)[-1].getMessage()
    assert all(r.levelno == logging.INFO for r in logged(caplog))
    caplog.clear()
    model.transform(X[:5])
    check_end_lines(caplog, ["transform"])


def test_the_coarse_sample_and_the_refinement_are_named(digits, caplog, monkeypatch):
    """init='coarse' (its minimum lowered to fit 300 points): the sample's fit is nested in
    "coarse sample", and the optimisation of every point is the "refinement"."""
    monkeypatch.setattr(embedding_module, "COARSE_MIN_SAMPLE", 10)
    monkeypatch.setattr(embedding_module, "COARSE_FACTOR", 5)
    X, _ = digits
    icongraph.UMAP(init="coarse", n_neighbors=10, verbose=1, n_jobs=1).fit(X)
    check_end_lines(caplog, ["kNN search", "graph", "coarse sample",
                             "coarse sample / kNN search", "coarse sample / optimisation",
                             "coarse sample / UMAP", "refinement", "UMAP"])
    assert "optimisation" not in ended(caplog)


def test_clustering_logs_its_phases(digits, caplog):
    X, _ = digits
    Clustering(n_clusters=None, init="kmeans", verbose=True, **SMALL).fit(X)
    check_end_lines(caplog, ["kNN search", "graph", "Leiden", "seed", "training", "Clustering"])
    leiden = [r.getMessage() for r in logged(caplog) if r.phase == "Leiden"][-1]
    assert re.match(r"Leiden: \d+ clusters, ", leiden)


def test_the_classifier_and_the_paired_embedding_log_their_phases(digits, caplog):
    X, y = digits
    PrototypeClassifier(verbose=True, **SMALL).fit(X, y)
    check_end_lines(caplog, ["training", "PrototypeClassifier"])
    caplog.clear()
    PairedEmbedding(verbose=True, n_neighbors=5, **SMALL).fit(X[:, :32], X[:, 32:])
    check_end_lines(caplog, ["kNN search", "training", "PairedEmbedding"])


@pytest.mark.parametrize("verbose", [False, 0])
def test_not_verbose_logs_nothing_and_draws_nothing(digits, caplog, capsys, verbose):
    X, _ = digits
    icongraph.UMAP(verbose=verbose, **SMALL).fit(X)
    Clustering(n_clusters=3, verbose=verbose, **SMALL).fit(X)
    assert logged(caplog) == []
    assert capsys.readouterr() == ("", "")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_bars_labelled_by_phase(digits, caplog, monkeypatch):
    monkeypatch.setattr(progress, "NOTEBOOK", False)
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    icongraph.UMAP(verbose=True, **SMALL).fit(digits[0])
    assert "\r" in stderr.getvalue() and "optimisation:" in stderr.getvalue()
    assert "optimisation" in ended(caplog)


def test_a_terminal_without_a_size_still_gets_bars(monkeypatch):
    """A fresh pty reports 0 x 0, where tqdm would draw nothing: the bar gets FALLBACK_SCREEN."""
    monkeypatch.setattr(progress, "NOTEBOOK", False)
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as stderr:
        assert stderr.isatty() and os.get_terminal_size(slave).columns == 0
        monkeypatch.setattr(sys, "stderr", stderr)
        with progress.phase("optimisation", True):
            for _ in progress.progress(range(3), None, True, unit="epoch"):
                pass
        stderr.flush()
        os.set_blocking(master, False)
        drawn = os.read(master, 1 << 16).decode()
    os.close(master)
    assert re.search(r"\roptimisation: +0%\| +\| 0/3 \[", drawn), drawn


def test_a_log_file_gets_lines_not_bars(digits, caplog, monkeypatch):
    """stderr is not a terminal: no carriage returns on it; the bars' stand-in logs a line
    (here after every epoch: the interval is set to 0) with the count and the loss."""
    monkeypatch.setattr(progress, "NOTEBOOK", False)
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    icongraph.UMAP(verbose=True, **SMALL).fit(digits[0])
    assert stderr.getvalue() == ""  # caplog's handler holds the lines, no bar was drawn
    lines = [r.getMessage() for r in logged(caplog)]
    assert "optimisation: 20/20 epoch, loss=" in "\n".join(lines)
    assert any(re.fullmatch(r"optimisation: 20/20 epoch, loss=[-\d.e+]+, \d+\.\d s", line)
               for line in lines), lines
    assert "optimisation" in ended(caplog)


def test_verbose_2_adds_detail_lines(digits, caplog):
    X, _ = digits
    icongraph.TSNE(verbose=1, **SMALL).fit(X)
    one = logged(caplog)
    caplog.clear()
    icongraph.TSNE(verbose=2, **SMALL).fit(X)
    two = logged(caplog)
    assert len(two) > len(one)
    details = [r.getMessage() for r in two if r.levelno == logging.DEBUG]
    assert "kNN search: exact search of 300 points, k=90" in details
    losses = [m for m in details if m.startswith("optimisation: epoch ")]
    assert losses[0].startswith("optimisation: epoch 1/20, loss ")
    assert losses[-1].startswith("optimisation: epoch 20/20, loss ")
    assert 2 <= len(losses) <= 11


def test_a_program_without_logging_gets_a_stderr_handler_until_it_has_one(digits,
                                                                          monkeypatch):
    """No handler anywhere: a verbose fit attaches one writing to sys.stderr (whatever it is
    then); once the root logger has a handler, the next verbose fit detaches it."""
    root, logger = logging.getLogger(), progress.LOGGER
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    icongraph.UMAP(verbose=True, **SMALL).fit(digits[0])
    assert sum(isinstance(h, progress._StderrHandler) for h in logger.handlers) == 1
    assert re.search(r"\[\d\d:\d\d:\d\d\] kNN search: \d+\.\d\d s", stderr.getvalue())
    icongraph.UMAP(verbose=True, **SMALL).fit(digits[0])
    assert sum(isinstance(h, progress._StderrHandler) for h in logger.handlers) == 1
    root.handlers = [logging.NullHandler()]
    icongraph.UMAP(verbose=True, **SMALL).fit(digits[0])
    assert not any(isinstance(h, progress._StderrHandler) for h in logger.handlers)
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)


class FakeNNDescent:
    """Prints what pynndescent prints with verbose=True (its compiled prints write to
    sys.stdout piece by piece), and returns the exact graph."""

    def __init__(self, X, n_neighbors, verbose, **kwargs):
        from icongraph.knn import exact_knn

        if verbose:
            print("Tue Dec  1 09:30:00 2026", "Building RP forest with", "8", "trees")
            print("Tue Dec  1 09:30:01 2026", "NN descent for", "9", "iterations")
            for i in range(3):
                for piece in ("\t", " ", str(i + 1), " ", " / ", " ", "9", "\n"):
                    sys.stdout.write(piece)
            print("\tStopping threshold met -- exiting after", 3, "iterations")
        knn = exact_knn(X, n_neighbors - 1)
        self.neighbor_graph = (np.hstack([np.arange(len(X))[:, None], knn.indices]),
                               np.hstack([np.zeros((len(X), 1)), knn.distances]))


@pytest.mark.parametrize("verbose", [0, 1, 2])
def test_pynndescent_messages_move_the_bar_and_become_detail_lines(monkeypatch, caplog,
                                                                   capsys, verbose):
    import pynndescent

    monkeypatch.setattr(pynndescent, "NNDescent", FakeNNDescent)
    moved = []
    real = progress.progress

    def spy(*args, **kwargs):
        bar = real(*args, **kwargs)
        update = bar.update
        bar.update = lambda n=1: (moved.append(n), update(n))
        return bar

    monkeypatch.setattr("icongraph.knn.progress", spy)
    X = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    with progress.phase("kNN search", verbose):
        knn = nndescent_knn(X, 5, verbose=verbose)
    assert knn.indices.shape == (60, 5)
    assert capsys.readouterr().out == ""  # nothing printed
    details = [r.getMessage() for r in logged(caplog) if r.levelno == logging.DEBUG]
    assert moved == ([1, 1, 1] if verbose else [])
    if verbose < 2:
        assert details == []
    else:
        assert details == ["kNN search: pynndescent, 5 trees, at most 6 iterations, 60 "
                           "candidates, the data's order",
                           "kNN search: pynndescent: Building RP forest with 8 trees",
                           "kNN search: pynndescent: NN descent for 9 iterations",
                           "kNN search: pynndescent: 1  /  9",
                           "kNN search: pynndescent: 2  /  9",
                           "kNN search: pynndescent: 3  /  9",
                           "kNN search: pynndescent: Stopping threshold met -- exiting "
                           "after 3 iterations"]


def test_the_cli_shows_phase_lines_on_stderr(tmp_path, caplog):
    """In a fresh process (no logging configured) the lines reach stderr; in this one, -v adds
    the loss lines and -q silences them."""
    X, _ = digits_subset(300)
    np.save(tmp_path / "x.npy", X)
    argv = ["embed", str(tmp_path / "x.npy"), "-o", str(tmp_path / "e.npy"), "--n-epochs", "10",
            "--force"]
    result = subprocess.run([sys.executable, "-m", "icongraph.cli", *argv], capture_output=True,
                            text=True, env={"PYTHONPATH": str(Path(icongraph.__file__).parents[1]),
                                            "PATH": "/usr/bin"})
    assert result.returncode == 0, result.stderr
    for name in ("kNN search", "graph", "init", "optimisation", "UMAP"):
        assert re.search(rf"\] {name}: (.+, )?\d+\.\d\d s(, peak RSS \d+\.\d\d GiB)?\n",
                         result.stderr), result.stderr
    assert "\r" not in result.stderr and "optimisation: epoch" not in result.stderr
    assert main([*argv, "-v"]) == 0
    assert "optimisation: epoch 10/10, loss" in caplog.text
    caplog.clear()
    assert main([*argv, "-q"]) == 0
    assert logged(caplog) == []


def test_a_handler_writing_to_stdout_during_the_build_is_passed_through(monkeypatch, capsys):
    """A handler that writes to sys.stdout as it is at each record writes into the reader of
    pynndescent's messages: its lines go on to the real stdout, not back into the log."""
    import pynndescent

    class ToStdout(logging.Handler):
        def emit(self, record):
            sys.stdout.write(self.format(record) + "\n")

    monkeypatch.setattr(pynndescent, "NNDescent", FakeNNDescent)
    handler = ToStdout()
    progress.LOGGER.addHandler(handler)
    try:
        nndescent_knn(np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32), 5,
                      verbose=2)
    finally:
        progress.LOGGER.removeHandler(handler)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("icongraph: pynndescent, 5 trees, at most 6 iterations, 60 candidates, "
                      "the data's order")
    assert out[1:] == [f"icongraph: pynndescent: {line}" for line in (
        "Building RP forest with 8 trees", "NN descent for 9 iterations", "1  /  9", "2  /  9",
        "3  /  9", "Stopping threshold met -- exiting after 3 iterations")]
