import numpy as np

from impactreg.demo import build_case
from impactreg.evaluation import dice, target_registration_errors
from impactreg.transformix import map_points
from impactreg.transforms import TranslationTransform


def test_demo_case_builder(data_dir):
    fixed, moving, labels, moving_labels, landmarks, truth = build_case(data_dir / "mni152", spacing_mm=6.0, seed=1)
    assert fixed.grid.same_as(moving.grid) and fixed.grid.spacing[0] == 6.0
    assert set(np.unique(labels.numpy())) == {0.0, 1.0, 2.0}
    tre = target_registration_errors(TranslationTransform(3), landmarks, map_points(truth, landmarks))
    assert 2.0 < tre.mean() < 15.0
    scores = dice(labels, moving_labels)
    assert 0.2 < scores[1] < 0.95 and 0.2 < scores[2] < 0.95  # misaligned, but the same anatomy
    # moving is the T2-like image: white matter darker than grey matter, unlike the T1
    wm_t1 = fixed.data[0][labels.data[0] == 2].mean()
    gm_t1 = fixed.data[0][labels.data[0] == 1].mean()
    assert wm_t1 > gm_t1
