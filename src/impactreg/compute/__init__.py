"""compute/: the one backend dispatcher. Each operation below runs either its compiled CPU
kernel (numba, ``compute.kernels``, ``compute.bending``) or its torch twin (GPU, autograd, ``compute.twins``),
decided in ``compute.dispatch`` and nowhere else; ``IMPACTREG_KERNELS=0`` turns every kernel
off. ``compute.basis`` holds the torch B-spline basis both the twins and the package use."""
from .dispatch import (bending_energy, box_coordinates, bspline_map, bspline_prefilter, bspline_scatter, convolve_axis,
                       linear_intensity, parzen_contract, parzen_joint, sample_image, sample_values, sparse_gram,
                       voxel_world_points)
from .tables import ImageTable, ParzenParts, SplineTable

__all__ = ["bspline_prefilter", "sample_image", "sample_values", "bspline_map", "bspline_scatter", "bending_energy",
           "parzen_joint", "parzen_contract", "convolve_axis", "voxel_world_points", "sparse_gram", "linear_intensity", "box_coordinates",
           "ImageTable", "SplineTable", "ParzenParts"]
