"""The Resampler component: the result image, the moving image warped into the fixed grid."""
from __future__ import annotations

from pathlib import Path

from .image import PIXEL_TYPES, Image, write_image
from .keys import NO_EFFECT, Key
from .transforms import Transform
from .warp import resample


class DefaultResampler:
    elastix_name = "DefaultResampler"
    keys = (
        Key("WriteResultImage", "bool", True, "write result.<stage>.<ext>"),
        Key("ResultImageFormat", "str", "mha", "result image format", ("mha", "mhd", "nii", "nii.gz", "nrrd")),
        Key("ResultImagePixelType", "str", "float", "result pixel type", tuple(PIXEL_TYPES)),
        Key("CompressResultImage", "bool", False, "compress the result image"),
        Key("DefaultPixelValue", "float", 0.0, "value of result voxels that map outside the moving image"),
        Key("WriteResultImageAfterEachResolution", "bool", False, NO_EFFECT, per_level=True),
    )

    def write(self, pm, moving: Image, transform: Transform, fixed: Image, order: int, folder: Path, stage: int) -> Path | None:
        """result.<stage>.<format> in ``folder``, or None when the map asks for no result image."""
        if not pm.get("WriteResultImage"):
            return None
        warped = resample(moving, transform, fixed.grid, order, pm.get("DefaultPixelValue"))
        path = folder / f"result.{stage}.{pm.get('ResultImageFormat')}"
        write_image(warped, path, pm.get("ResultImagePixelType"), pm.get("CompressResultImage"))
        return path
