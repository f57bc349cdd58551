"""The Registration components: how a stage combines its metrics over its resolution levels.
They also hold the keys that are about the whole stage (levels, masks, seeds, what to write)."""
from __future__ import annotations

from ..errors import ParameterError
from ..keys import NO_EFFECT, Key


class MultiResolutionRegistration:
    elastix_name = "MultiResolutionRegistration"
    keys = (
        Key("NumberOfResolutions", "int", 3, "number of resolution levels", minimum=1),
        Key("Metric0Weight", "float", 1.0, "weight of metric <i> in the weighted sum (default 1 / number of metrics)",
            per_level=True,
            pattern=r"Metric(\d+)Weight"),
        Key("Metric0Use", "bool", True, "whether metric <i> is used at a level", per_level=True, pattern=r"Metric(\d+)Use"),
        Key("ErodeMask", "bool", False, "erode masks at each level by the pyramid's smoothing extent", per_level=True),
        Key("ErodeFixedMask", "bool", None, "erode the fixed mask (default ErodeMask)", per_level=True),
        Key("ErodeMovingMask", "bool", None, "erode the moving mask (default ErodeMask)", per_level=True),
        Key("RandomSeed", "int", None, "seed of every random choice (same seed, same result)"),
        Key("WriteIterationInfo", "bool", False, "write IterationInfo.<stage>.R<level>.txt"),
        Key("FixedImageDimension", "int", None, "must match the fixed image if given"),
        Key("MovingImageDimension", "int", None, "must match the moving image if given"),
        Key("UseDirectionCosines", "bool", True, "use the images' direction matrices; \"false\": register as if they "
            "were identity (elastix's legacy mode; results are written on the fixed image's direction)"),
        Key("ITKTransformOutputFileNameExtension", "str", None, "also write TransformParameters.<i>.<ext> as an ITK "
            "transform file (tfm, txt, h5, hdf5, mat) that SimpleITK, ANTs and 3D Slicer read"),
        Key("WriteITKCompositeTransform", "bool", False, "with ITKTransformOutputFileNameExtension: also write "
            "TransformParameters.<i>-Composite.<ext>, the whole chain of transforms"),
        Key("MaximumNumberOfThreads", "int", None, "threads (same as -threads)", minimum=1),
        Key("FixedInternalImagePixelType", "str", "float", NO_EFFECT),
        Key("MovingInternalImagePixelType", "str", "float", NO_EFFECT),
        Key("UseMultiThreadingForMetrics", "bool", True, NO_EFFECT),
        Key("WriteTransformParametersEachIteration", "bool", False, NO_EFFECT, per_level=True),
        Key("WriteTransformParametersEachResolution", "bool", False, NO_EFFECT, per_level=True),
        Key("WritePyramidImagesAfterEachResolution", "bool", False, NO_EFFECT, per_level=True),
    )

    def check_metrics(self, names: list[str]) -> None:
        if len(names) > 1:
            raise ParameterError(f"{len(names)} metrics need (Registration \"MultiMetricMultiResolutionRegistration\")")

    def weights(self, view, count: int) -> list[float]:
        """Each metric's weight at this level (0 where Metric<i>Use is false)."""
        return [view.get(f"Metric{i}Weight", 1.0) if view.get(f"Metric{i}Use", True) else 0.0 for i in range(count)]

    def relative_weights(self, view, count: int) -> list[float] | None:
        """Relative weights (elastix's UseRelativeWeights), or None for fixed weights."""
        return None


class MultiMetricMultiResolutionRegistration(MultiResolutionRegistration):
    """elastix's CombinationImageToImageMetric: fixed weights (default 1 / number of metrics) or, with
    UseRelativeWeights, weights recomputed at every evaluation so that metric i's gradient norm is
    Metric<i>RelativeWeight times metric 0's (weight 1 where a gradient norm is below 1e-10)."""

    elastix_name = "MultiMetricMultiResolutionRegistration"
    keys = MultiResolutionRegistration.keys + (
        Key("UseRelativeWeights", "bool", False, "weigh metric i so that its gradient norm is Metric<i>RelativeWeight "
            "times metric 0's, at every iteration", per_level=True),
        Key("Metric0RelativeWeight", "float", None, "relative weight of metric <i> (default 1 / number of metrics)",
            per_level=True, minimum=0, pattern=r"Metric(\d+)RelativeWeight"),
    )

    def check_metrics(self, names: list[str]) -> None:
        pass

    def weights(self, view, count: int) -> list[float]:
        return [view.get(f"Metric{i}Weight", 1.0 / count) if view.get(f"Metric{i}Use", True) else 0.0
                for i in range(count)]

    def relative_weights(self, view, count: int) -> list[float] | None:
        if not view.get("UseRelativeWeights"):
            return None
        return [view.get(f"Metric{i}RelativeWeight", 1.0 / count) if view.get(f"Metric{i}Use", True) else 0.0
                for i in range(count)]
