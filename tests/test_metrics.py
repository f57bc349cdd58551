import numpy as np
import pytest
import torch

from impactreg.metrics.intensity import (MattesMutualInformation, MeanSquares, NormalizedCorrelation,
                                         NormalizedMutualInformation, ParzenHistogram)


def pair(seed=0, n=3000):
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(n, generator=g, dtype=torch.float64) * 100
    m = (100 - f) * 0.5 + torch.randn(n, generator=g, dtype=torch.float64) * 3  # inverted contrast, noisy
    return f, m


def metrics(f, m):
    hist = ParzenHistogram((float(f.min()), float(f.max())), (float(m.min()) + 5, float(m.max()) - 5))
    return [MeanSquares(), NormalizedCorrelation(), MattesMutualInformation(hist), NormalizedMutualInformation(hist)]


@pytest.mark.parametrize("index", range(4))
def test_closed_form_derivatives_equal_autograd(index):
    f, m = pair()
    metric = metrics(f, m)[index]
    mm = m.clone().requires_grad_(True)
    metric(f, mm).backward()
    value, derivative = metric.value_and_derivative(f, m)
    assert abs(float(value) - float(metric(f, m))) < 1e-12
    np.testing.assert_allclose(derivative.numpy(), mm.grad.numpy(), atol=1e-12, rtol=1e-9)


def test_mutual_information_prefers_the_aligned_pair():
    f, m = pair()
    mi = metrics(f, m)[2]
    shuffled = m[torch.randperm(len(m), generator=torch.Generator().manual_seed(1))]
    assert float(mi(f, m)) < float(mi(f, shuffled)) - 0.5
    joint = mi.histogram.joint(f, m)[0]
    assert abs(float(joint.sum()) - 1.0) < 1e-9
