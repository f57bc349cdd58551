"""The benchmark suite's cases and parameter maps (cheap: no registration)."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from impactreg.image import read_image
from impactreg.metrics.impact import impact_level
from impactreg.parameters import load_parameter_maps
from impactreg.warp import resample
from impactreg.transforms import EulerTransform

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))


def _mean_residual(moving, transform, reference) -> float:
    """Mean |moving(T(x)) - reference(x)| over the head voxels that map inside the moving image."""
    stacked = moving.with_data(torch.cat([moving.data, torch.ones_like(moving.data)]))
    warped = resample(stacked, transform, reference.grid, order=1).data
    inside = (warped[1] > 0.99) & (reference.data[0] > 20)
    return float((warped[0] - reference.data[0])[inside].abs().mean())


@pytest.mark.parametrize("moved", ["R10X13Y17", "Shifted13x17y"])
def test_brainweb_truth_maps_the_pd_slice_onto_its_moved_copy(data_dir, moved):
    from cases import brainweb_t1_pd

    case = brainweb_t1_pd(moved)
    pd = read_image(data_dir / "brainweb2d" / "BrainProtonDensitySliceBorder20.png").channel(0)
    residual = _mean_residual(case.moving, case.truth, pd)
    about_image_centre = EulerTransform(2, case.truth.parameters, torch.tensor([110.0, 128.0], dtype=torch.float64))
    assert residual < 7.0
    if moved == "R10X13Y17":  # the centre of rotation matters: the image centre is 1.1 px off
        assert residual < 0.5 * _mean_residual(case.moving, about_image_centre, pd)


def test_abdomen_labels_are_the_shared_organs_in_ct_values(data_dir):
    from cases import abdomen_ct_mr

    case = abdomen_ct_mr()
    organs = json.loads((data_dir / "abdomen_ct_mr" / "shared_organs.json").read_text())
    ct_values = {ct for ct, _ in organs.values()}
    assert set(case.fixed_labels.data.unique().long().tolist()) - {0} <= ct_values
    assert set(case.moving_labels.data.unique().long().tolist()) - {0} <= ct_values
    assert len(case.label_names) == 20
    assert case.fixed.grid.size[2] < read_image(data_dir / "abdomen_ct_mr" / "ct.nii.gz").grid.size[2]


def test_uncut_abdomen_keeps_the_whole_ct_whose_box_misses_the_mr_slab(data_dir):
    from cases import abdomen_ct_mr_uncut
    from suite import METHODS, QUICK, method_stages

    case = abdomen_ct_mr_uncut()
    assert case.fixed.grid.size == read_image(data_dir / "abdomen_ct_mr" / "ct.nii.gz").grid.size
    fixed_box, moving_box = case.fixed.grid.extent_corners(), case.moving.grid.extent_corners()
    apart = (fixed_box.min(0) > moving_box.max(0)) | (moving_box.min(0) > fixed_box.max(0))
    assert apart.any()  # no world overlap: only a search can start this registration
    stages = load_parameter_maps(method_stages(case, METHODS["preset-bspline-mi-search"], QUICK))
    assert stages[0].get("AutomaticTransformInitializationMethod") == "Search"
    assert all(pm.get("RequiredRatioOfValidSamples") == 0.02 for pm in stages)


@pytest.mark.parametrize("case_key, method", [(case, method) for case in ("brainweb", "lung")
                                               for method in ("impactreg-mi", "mind-static", "mind-jacobian", "m730-jacobian")
                                               if (case, method) != ("brainweb", "m730-jacobian")])  # M730 is 3D
def test_suite_parameter_maps_are_valid_for_the_case_dimension(data_dir, case_key, method):
    from cases import SUITE_CASES
    from suite import METHODS, QUICK, method_stages

    case = SUITE_CASES[case_key]()
    assert case.fixed.dim in METHODS[method].dimensions
    stages = load_parameter_maps(method_stages(case, METHODS[method], QUICK))
    assert [pm.get("Transform") for pm in stages][-1] == ("BSplineTransform" if case.deformable else "EulerTransform")
    last = stages[-1]
    if METHODS[method].impact is not None:
        for level in range(last.get("NumberOfResolutions")):
            settings = impact_level(last, level, case.fixed.dim, torch.device("cpu"))
            assert all(len(s.patch_size) == case.fixed.dim and len(s.voxel_size) == case.fixed.dim for s in settings.fixed)


def test_benchmark_scripts_import_common_and_cases_not_each_other():
    """benchmarks/*.py share common.py and cases.py; no import (at module level or inside a
    function) leads from one benchmark module back to itself."""
    import ast

    folder = REPO / "benchmarks"
    names = {p.stem for p in folder.glob("*.py")}
    graph = {}
    for path in folder.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
        graph[path.stem] = imported & names - {path.stem}

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph[start])

    assert [m for m in sorted(graph) if reaches(m, m)] == []
    assert graph["cases"] == set() and graph["common"] <= {"cases"}
