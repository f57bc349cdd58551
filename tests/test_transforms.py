import itk
import numpy as np
import pytest
import torch

from impactreg.geometry import Grid
from impactreg.transforms import (AffineTransform, BSplineTransform, CombinationTransform, EulerTransform,
                                  SimilarityTransform, SparseJacobian, TranslationTransform)
from test_geometry import oblique


def random_points(dim, n=40, seed=0, scale=30.0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, dim)) * scale)


def bspline(dim, order=3, seed=0, amplitude=3.0):
    image = Grid((20, 18, 16)[:dim], (2.0, 2.5, 3.0)[:dim], (-20.0, -25.0, -30.0)[:dim], oblique(dim, 9))
    t = BSplineTransform.over_image(image, 12.0, order)
    rng = np.random.default_rng(seed)
    return t.with_parameters(torch.from_numpy(rng.normal(size=t.number_of_parameters) * amplitude)), image


def all_transforms(dim):
    c = [3.0, -2.0, 5.0][:dim]
    out = [
        TranslationTransform(dim, [1.5, -2.0, 0.7][:dim]),
        EulerTransform(dim, [0.2, 3.0, -4.0] if dim == 2 else [0.1, -0.2, 0.3, 1.0, 2.0, 3.0], c),
        SimilarityTransform(dim, [1.1, -0.3, 2.0, 1.0] if dim == 2 else [0.1, -0.05, 0.2, 1.0, 2.0, 3.0, 0.9], c),
        AffineTransform(dim, np.concatenate([(np.eye(dim) + 0.1 * oblique(dim, 4)).ravel(), [1.0, -1.0, 2.0][:dim]]), c),
    ]
    if dim == 3:
        out.append(EulerTransform(3, [0.1, -0.2, 0.3, 1.0, 2.0, 3.0], c, compute_zyx=True))
    for order in (1, 2, 3):
        out.append(bspline(dim, order)[0])
    out.append(CombinationTransform(out[3], out[-1], "Compose"))
    out.append(CombinationTransform(out[1], out[-2], "Add"))
    return out


def itk_transform(t):
    dim = t.dim
    if isinstance(t, TranslationTransform):
        it = itk.TranslationTransform[itk.D, dim].New()
    elif isinstance(t, EulerTransform):
        it = (itk.Euler2DTransform if dim == 2 else itk.Euler3DTransform)[itk.D].New()
        if dim == 3:
            it.SetComputeZYX(t.compute_zyx)
    elif isinstance(t, SimilarityTransform):
        it = (itk.Similarity2DTransform if dim == 2 else itk.Similarity3DTransform)[itk.D].New()
    else:
        it = itk.AffineTransform[itk.D, dim].New()
    if not isinstance(t, TranslationTransform):
        it.SetCenter([float(v) for v in t.center])
    params = it.GetParameters()
    for i, v in enumerate(t.parameters.tolist()):
        params[i] = v
    it.SetParameters(params)
    return it


@pytest.mark.parametrize("dim", [2, 3])
def test_matrix_transforms_match_itk(dim):
    pts = random_points(dim)
    for t in all_transforms(dim)[:4 + (dim == 3)]:
        it = itk_transform(t)
        ref = np.array([list(it.TransformPoint([float(v) for v in p])) for p in pts.numpy()])
        np.testing.assert_allclose(t.map(pts).numpy(), ref, atol=1e-10, err_msg=type(t).__name__)


def test_bspline_matches_itk_bspline_transform():
    t, _ = bspline(3, 3)
    it = itk.BSplineTransform[itk.D, 3, 3].New()
    g = t.grid
    # fixed parameters of ITK's BSplineTransform: grid size, origin, spacing, direction
    fixed = list(g.size) + list(g.origin) + list(g.spacing) + list(g.direction.ravel())
    fp = it.GetFixedParameters()
    for i, v in enumerate(fixed):
        fp[i] = float(v)
    it.SetFixedParameters(fp)
    params = it.GetParameters()
    for i, v in enumerate(t.parameters.tolist()):
        params[i] = v
    it.SetParameters(params)
    pts = torch.from_numpy(g.index_to_world(np.random.default_rng(2).uniform(0.5, np.array(g.size) - 1.5, size=(60, 3))))
    ref = np.array([list(it.TransformPoint([float(v) for v in p])) for p in pts.numpy()])
    np.testing.assert_allclose(t.map(pts).numpy(), ref, atol=1e-9)


def fd_spatial(t, pts, eps=1e-5):
    cols = []
    for d in range(t.dim):
        step = torch.zeros(t.dim, dtype=torch.float64)
        step[d] = eps
        cols.append((t.map(pts + step) - t.map(pts - step)) / (2 * eps))
    return torch.stack(cols, dim=-1)


@pytest.mark.parametrize("dim", [2, 3])
def test_spatial_jacobian_and_determinant_against_finite_differences(dim):
    pts = random_points(dim, scale=8.0)
    for t in all_transforms(dim):
        jac = t.spatial_jacobian(pts)
        np.testing.assert_allclose(jac.numpy(), fd_spatial(t, pts).numpy(), atol=1e-6, err_msg=type(t).__name__)
        np.testing.assert_allclose(t.jacobian_determinant(pts).numpy(), np.linalg.det(jac.numpy()), atol=1e-10)


@pytest.mark.parametrize("dim", [2, 3])
def test_parameter_jacobian_against_finite_differences(dim):
    pts = random_points(dim, n=15, scale=8.0)
    for t in all_transforms(dim):
        got = t.parameter_jacobian(pts)
        if isinstance(got, SparseJacobian):
            got = got.to_dense()
        eps = 1e-6
        p0 = t.parameters.clone()
        cols = []
        for i in range(p0.numel()):
            step = torch.zeros_like(p0)
            step[i] = eps
            cols.append((t.map(pts, p0 + step) - t.map(pts, p0 - step)) / (2 * eps))
        fd = torch.stack(cols, dim=-1)
        np.testing.assert_allclose(got.numpy(), fd.numpy(), atol=1e-6, err_msg=type(t).__name__)
        # and autograd through map agrees
        p = p0.clone().requires_grad_(True)
        t.map(pts, p)[:, 0].sum().backward()
        np.testing.assert_allclose(p.grad.numpy(), got[:, 0].sum(0).numpy(), atol=1e-9)


def test_bspline_leaves_points_outside_its_support_in_place():
    t, _ = bspline(3, 3, amplitude=5.0)
    g = t.grid
    idx = np.array([[0.99, 3, 3], [1.01, 3, 3], [g.size[0] - 1.99, 3, 3], [g.size[0] - 2.01, 3, 3]])
    pts = torch.from_numpy(g.index_to_world(idx))
    moved = (t.map(pts) - pts).norm(dim=-1)
    assert moved[0] == 0 and moved[2] == 0
    assert moved[1] > 0 and moved[3] > 0


def test_control_grid_matches_elastix_layout():
    # values written by elastix 5 (itk-elastix 0.25.4) for these images and a 40 mm / 16 mm grid
    lung = Grid((57, 78, 64), (2.732, 2.732, 5.0), (-152.461, -148.986, -1432.0), np.eye(3))
    g = lung.control_grid(40.0, 3)
    assert g.size == (7, 9, 11)
    np.testing.assert_allclose(g.origin, [-195.965, -203.804, -1474.5], atol=1e-9)
    np.testing.assert_allclose(g.spacing, [40.0, 40.0, 40.0])
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    brain = Grid((221, 257), (1.0, 1.0), (0.0, 0.0), [[c, -s], [s, c]])
    g = brain.control_grid(16.0, 3)
    assert g.size == (17, 20)
    np.testing.assert_allclose(g.origin, [-3.5884572, -29.7846096], atol=1e-6)
    np.testing.assert_allclose(g.direction, brain.direction)


def test_combination_orders():
    a = TranslationTransform(2, [1.0, 0.0])
    b = EulerTransform(2, [np.pi / 2, 0.0, 0.0], [0.0, 0.0])
    p = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    composed = CombinationTransform(a, b, "Compose")  # b(a(p)) = rot90((2, 0)) = (0, 2)
    np.testing.assert_allclose(composed.map(p).numpy(), [[0.0, 2.0]], atol=1e-12)
    added = CombinationTransform(a, b, "Add")  # a(p) + b(p) - p = (2,0) + (0,1) - (1,0)
    np.testing.assert_allclose(added.map(p).numpy(), [[1.0, 1.0]], atol=1e-12)
    assert composed.chain() == [a, b]


@pytest.mark.parametrize("dim", [2, 3])
def test_parameter_gradient_is_the_jacobian_transpose_product(dim):
    pts = random_points(dim, n=25, scale=8.0)
    d = torch.from_numpy(np.random.default_rng(3).normal(size=(25, dim)))
    for t in all_transforms(dim):
        jac = t.parameter_jacobian(pts)
        dense = jac.to_dense() if isinstance(jac, SparseJacobian) else jac
        expected = torch.einsum("ndp,nd->p", dense, d)
        np.testing.assert_allclose(t.parameter_gradient(pts, d).numpy(), expected.numpy(), atol=1e-9, err_msg=type(t).__name__)
