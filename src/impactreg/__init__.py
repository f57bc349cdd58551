"""impactreg: elastix-compatible multimodal image registration with the IMPACT semantic metric."""
import os as _os

# OpenMP threads that spin while waiting for work (libgomp's default) make a registration 4-6x
# slower when other processes share the cores; waiting passively keeps it near elastix's slow-down
# and costs about 10% on a quiet machine (benchmarks/load.py). OpenMP reads this when torch loads,
# so it is set before torch is imported; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from .errors import ImageError, ImpactRegError, InputError, ModelError, OutputError, ParameterError, TransformFileError
from .geometry import Grid
from .image import Image, read_image, write_image
from .interpolation import Interpolator, sample
from .loss import IMPACT
from .points import PointSet, read_points, write_points
from .transformix import transform
from .warp import deformation_field, jacobian_determinant, map_points, resample
from .engine.registration import RegistrationResult, register
from .transforms.elastix_files import read_transform_file, write_transform_chain, write_transform_file

__all__ = [
    "__version__", "register", "RegistrationResult", "IMPACT", "Grid", "Image", "read_image", "write_image", "Interpolator", "sample",
    "PointSet", "read_points", "write_points", "transform", "resample", "deformation_field",
    "jacobian_determinant", "map_points", "read_transform_file", "write_transform_file",
    "write_transform_chain", "ImpactRegError", "InputError", "ImageError", "ParameterError",
    "TransformFileError", "ModelError", "OutputError",
]
