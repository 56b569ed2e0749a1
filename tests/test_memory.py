"""The memory guard: a fit whose estimated memory exceeds what is available is refused before
any work, with the estimate and a remedy; ICONGRAPH_IGNORE_MEMORY_GUARD=1 lets it run. The
available memory is monkeypatched: nothing large is allocated here. Also: a read-only memory
map's pages released from the resident set (32 MB)."""

import os

import numpy as np
import pytest

import icongraph
from icongraph import memory
from icongraph.clustering import Clustering

GB = 1_000_000_000


@pytest.fixture
def six_gb(monkeypatch):
    """6 GB available, no override, and a kNN search that fails the test if it runs."""
    import icongraph.clustering as clustering
    import icongraph.embedding as embedding

    def no_search(*args, **kwargs):
        raise AssertionError("the kNN search ran before the memory guard")

    monkeypatch.setattr(memory, "available_memory", lambda: (6 * GB, "test limit"))
    monkeypatch.delenv(memory.OVERRIDE_ENV, raising=False)
    monkeypatch.setattr(embedding, "knn_search", no_search)
    monkeypatch.setattr(clustering, "knn_search", no_search)


def _data(n):
    return np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)


@pytest.mark.parametrize("model, n, items", [
    # the cases of the issue: each passed 6 GB (or failed late) before the guard
    (Clustering(n_clusters=30_000, init="random", head="free"), 50_000,
     "head (weights, gradients, Adam state) 24.0 GB"),
    (Clustering(n_clusters=10, propagation="reachable", propagation_steps=8), 500,
     "reachable lists"),
    (icongraph.TSNE(perplexity=5000), 20_000, "graph p"),
    # 3-step walks on t-SNE's 90 neighbours: 20,000 x 20,000 propagated entries
    (icongraph.TSNE(propagation_steps=3), 20_000, "propagated p 12.8 GB"),
])
def test_fits_that_cannot_fit_are_refused_before_any_work(model, n, items, six_gb):
    with pytest.raises(memory.InsufficientMemoryError) as info:
        model.fit(_data(n))
    message = str(info.value)
    assert "needs at least" in message and "6.0 GB are available (test limit)" in message
    assert items in message
    assert "ICONGRAPH_IGNORE_MEMORY_GUARD=1" in message and "Lower" in message
    assert isinstance(info.value, MemoryError) and isinstance(info.value, ValueError)


def test_many_clusters_beyond_the_seeding_are_refused_before_the_knn(six_gb):
    """Clustering(n_clusters=30000) on 50k points used to search the kNN graph for 50 s and
    then fail inside scikit-learn on its 20,000-row seeding sample."""
    with pytest.raises(ValueError, match="more than the 20000 rows"):
        Clustering(n_clusters=30_000).fit(_data(50_000))


def test_override_lets_the_fit_proceed_with_a_warning(six_gb, monkeypatch):
    monkeypatch.setenv(memory.OVERRIDE_ENV, "1")
    with pytest.warns(UserWarning, match="Proceeding because ICONGRAPH_IGNORE_MEMORY_GUARD"):
        with pytest.raises(AssertionError, match="kNN search ran"):  # i.e. it went on
            icongraph.TSNE(perplexity=5000).fit(_data(20_000))


def test_normal_fits_pass_the_guard(digits, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: (6 * GB, "test limit"))
    X, _ = digits
    icongraph.UMAP(n_epochs=5, random_state=0).fit(X)
    Clustering(n_clusters=10, n_epochs=5, random_state=0).fit(X)


def test_estimates_scale_with_the_data():
    X = _data(10_000)
    model = icongraph.UMAP(n_neighbors=31)
    parts = model._memory_estimate(X, 30, "pca", "neg", model._composition()[1])
    assert parts["kNN lists"] == 8 * 10_000 * 30 and parts["graph p"] == 16 * 10_000 * 30
    free = Clustering(n_clusters=100, head="free", init="random")
    linear = Clustering(n_clusters=100, head="linear")
    preset = free._preset()
    assert (sum(free._memory_estimate(X, 15, preset, 100).values())
            > sum(linear._memory_estimate(X, 15, preset, 100).values()))


def _fake_proc(tmp_path, monkeypatch, cgroup_line, meminfo="MemAvailable:   8000000 kB\n"):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup_line)
    (proc / "meminfo").write_text(meminfo)
    root = tmp_path / "cgroup"
    root.mkdir()
    monkeypatch.setattr(memory, "PROC_CGROUP", proc / "cgroup")
    monkeypatch.setattr(memory, "MEMINFO", proc / "meminfo")
    monkeypatch.setattr(memory, "CGROUP_ROOT", root)
    return root


def test_available_memory_reads_a_cgroup_v2_limit(tmp_path, monkeypatch):
    root = _fake_proc(tmp_path, monkeypatch, "0::/job\n")
    (root / "cgroup.controllers").write_text("memory\n")
    job = root / "job"
    job.mkdir()
    (job / "memory.max").write_text(f"{3 * GB}\n")
    (job / "memory.current").write_text(f"{2 * GB}\n")
    (job / "memory.stat").write_text(f"anon 1\ninactive_file {GB // 2}\n")
    available, source = memory.available_memory()
    assert available == 3 * GB - (2 * GB - GB // 2)  # page cache can be reclaimed
    assert "cgroup v2" in source
    (job / "memory.max").write_text("max\n")  # no limit: the system's MemAvailable
    assert memory.available_memory() == (8_000_000 * 1024, "MemAvailable in /proc/meminfo")


def test_available_memory_reads_a_cgroup_v1_limit_of_an_ancestor(tmp_path, monkeypatch):
    root = _fake_proc(tmp_path, monkeypatch, "4:memory:/outer/inner\n0::/\n")
    for folder, limit in (("memory/outer", GB), ("memory/outer/inner", 1 << 62)):
        (root / folder).mkdir(parents=True)
        (root / folder / "memory.limit_in_bytes").write_text(f"{limit}\n")
        (root / folder / "memory.usage_in_bytes").write_text(f"{GB // 4}\n")
    available, source = memory.available_memory()
    assert available == GB - GB // 4 and "cgroup v1" in source and "outer" in source


def test_the_guard_is_off_where_nothing_can_be_read(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "PROC_CGROUP", tmp_path / "missing")
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "missing")
    assert memory.available_memory() is None
    memory.check_memory("a fit", {"everything": 1e30}, "")  # no error


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads /proc (Linux)")
def test_released_pages_of_a_read_only_map_leave_the_resident_set(tmp_path):
    """release_mapped_pages drops a read-only map's pages from the resident set (the values
    read the same afterwards), and leaves a copy-on-write map's changes alone."""
    from icongraph.validation import release_mapped_pages

    data = np.arange(8 << 20, dtype=np.float32).reshape(-1, 64)  # 32 MB
    np.save(tmp_path / "X.npy", data)
    X = np.load(tmp_path / "X.npy", mmap_mode="r")
    before = _resident_bytes()
    total = float(X.sum(dtype=np.float64))
    mapped = _resident_bytes() - before
    assert mapped > 24 << 20
    release_mapped_pages(X[5:])  # a view of the map releases the whole map
    assert _resident_bytes() - before < mapped / 4
    assert float(X.sum(dtype=np.float64)) == total
    release_mapped_pages(data)  # an array in memory: nothing to do
    changed = np.load(tmp_path / "X.npy", mmap_mode="c")
    changed[0, 0] = -1.0
    release_mapped_pages(changed)
    assert changed[0, 0] == -1.0
