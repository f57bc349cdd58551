"""Drop-in compatibility: every parameter map of ../shared/elastix-maps (213 maps elastix and IMPACT users
published) runs on small synthetic images of its dimension, iterations cut to 2 and sample counts capped,
or is refused with one line naming what is missing (a component and the file; an IMPACT model; a GPU), or
is a TransformParameters file refused as such. A map whose fixed gains move the samples out of these small
images after it started counts as run. Run alone with ``pytest -m compat``.
"""
from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import compat_corpus  # noqa: E402

pytestmark = pytest.mark.compat

MAPS = compat_corpus.corpus_maps() if compat_corpus.CORPUS.is_dir() else []
# Maps expected to fail for a reason that is not a missing component (none today: the IMPACT authors' Jacobian
# map asks for (ImpactGPU 0) and is refused in one line on a machine without CUDA, an accepted outcome;
# tests/test_published_impact_maps.py runs it with --device cpu).
KNOWN_FAILING: set[str] = set()


def _add_path(path: str) -> None:
    sys.path.insert(0, path)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, compat_corpus.Outcome]:
    if not MAPS:
        pytest.skip(f"the map corpus is not at {compat_corpus.CORPUS}")
    context = multiprocessing.get_context("spawn")  # torch's threads do not survive a fork
    with ProcessPoolExecutor(2, mp_context=context, initializer=_add_path,
                             initargs=(str(REPO / "benchmarks"),)) as pool:
        results = list(pool.map(compat_corpus.run_map, MAPS, chunksize=4))
    return {o.name: o for o in results}


def test_the_corpus_is_all_there():
    if not compat_corpus.CORPUS.is_dir():
        pytest.skip(f"the map corpus is not at {compat_corpus.CORPUS}")
    assert len(MAPS) == 213


@pytest.mark.parametrize("name", [str(p.relative_to(compat_corpus.CORPUS)) for p in MAPS])
def test_each_map_runs_or_is_refused_for_what_is_missing(outcomes, name):
    outcome = outcomes[name]
    accepted = outcome.status in compat_corpus.ACCEPTED
    if name in KNOWN_FAILING:
        assert not accepted, f"{name} now {outcome.status}: remove it from KNOWN_FAILING"
        pytest.xfail(f"{name}: {outcome.detail[:200]}")
    assert accepted, f"{name}: {outcome.detail}"


@pytest.mark.parametrize("name", compat_corpus.MEANT_FOR_LUNG_CT)
def test_maps_written_for_the_lung_ct_run_on_it(data_dir, name):
    """elastix's 001c/001d maps fix SP_a 500000 for its test lung CT; on the small synthetic images their first
    step moves the samples out, in elastix as in impactreg. On the lung CT they run (a map, not the engine, chose
    the gain)."""
    path = compat_corpus.CORPUS / name
    if not path.is_file():
        pytest.skip(f"the map corpus is not at {compat_corpus.CORPUS}")
    if not compat_corpus.LUNG_CT.is_file():
        pytest.skip(f"{compat_corpus.LUNG_CT} is not here")
    outcome = compat_corpus.run_map(path, iterations=5)
    assert outcome.status == "runs", outcome.detail


def test_compare_runs_elastix_single_threaded_on_multi_metric_maps():
    """itk-elastix ends multi-metric registrations with a segmentation fault on more than one thread (ITKElastix
    #160): `compat.py compare` lost its Par0020bspline1 row and every row after it."""
    import compat

    multi = compat_corpus.CORPUS / "modelzoo/Par0020/Par0020bspline1.txt"
    single = compat_corpus.CORPUS / "elastix-testing/parameters.3D.NC.affine.SGD.001.txt"
    if not (multi.is_file() and single.is_file()):
        pytest.skip(f"the map corpus is not at {compat_corpus.CORPUS}")
    assert compat.elastix_threads(multi) == 1
    assert compat.elastix_threads(single) == 2
