"""The Resampler component: the result image, the moving image warped into the fixed grid."""
from __future__ import annotations

from pathlib import Path

from .geometry import Grid
from .image import IMAGE_SUFFIXES, PIXEL_TYPES, Image, write_image
from .keys import NO_EFFECT, Key
from .transforms import Transform
from .warp import resample


class DefaultResampler:
    elastix_name = "DefaultResampler"
    keys = (
        Key("WriteResultImage", "bool", True, "write result.<stage>.<ext>"),
        Key("ResultImageFormat", "str", "mha", "result image format: any ITK writes (a 3D dcm is a DICOM series "
            "folder)", tuple(s.lstrip(".") for s in IMAGE_SUFFIXES)),
        Key("ResultImagePixelType", "str", "float", "result pixel type", tuple(PIXEL_TYPES)),
        Key("CompressResultImage", "bool", False, "compress the result image"),
        Key("DefaultPixelValue", "float", 0.0, "value of result voxels that map outside the moving image"),
        Key("WriteResultImageAfterEachResolution", "bool", False, NO_EFFECT, per_level=True),
    )

    def write(self, pm, moving: Image, transform: Transform, fixed: Image, order: int, folder: Path, stage: int,
              direction=None) -> Path | None:
        """result.<stage>.<format> in ``folder``, or None when the map asks for no result image; ``direction``
        replaces the result's direction (the original fixed direction of a UseDirectionCosines "false" run)."""
        if not pm.get("WriteResultImage"):
            return None
        warped = resample(moving, transform, fixed.grid, order, pm.get("DefaultPixelValue"))
        if direction is not None:
            warped = Image(warped.data, Grid(warped.grid.size, warped.grid.spacing, warped.grid.origin, direction),
                           warped.pixel_type)
        path = folder / f"result.{stage}.{pm.get('ResultImageFormat')}"
        write_image(warped, path, pm.get("ResultImagePixelType"), pm.get("CompressResultImage"))
        return path
