"""Shipped parameter maps, chosen with ``--preset NAME``; each preset is a list of stages."""
from __future__ import annotations

from importlib import resources

from ..errors import ParameterError
from ..parameters import ParameterMap

PRESETS: dict[str, tuple[str, list[str]]] = {
    "rigid": ("Euler transform with Mattes MI: same-subject alignment, any modalities", ["rigid.txt"]),
    "affine": ("affine transform with Mattes MI: global alignment with scaling and shear", ["affine.txt"]),
    "bspline-mi": ("affine then B-spline with Mattes MI (elastix's classic multimodal setup)", ["affine.txt", "bspline.txt"]),
    "impact-mind": ("affine MI then B-spline with IMPACT MIND Static: the default, needs no weights",
                    ["affine.txt", "impact_mind.txt"]),
    "impact-ct-cbct": ("affine MI then B-spline with IMPACT Jacobian on early M730 layers: CT/CBCT (downloads TS/M730_2_Layers.pt)",
                       ["affine.txt", "impact_ct_cbct.txt"]),
    "impact-mr-ct": ("affine MI started by a search over every overlap (partial fields of view), then B-spline "
                     "with IMPACT MIND Static, cubic feature maps: MR/CT", ["affine_search.txt", "impact_mr_ct.txt"]),
    "dense-mind": ("affine MI then the dense engine on MIND (coupled-convex search + Adam on a field, ConvexAdam's "
                   "recipe): writes a DeformationFieldTransform, needs no weights", ["affine.txt", "dense_mind.txt"]),
    "dense-mr-ct": ("affine MI then the dense engine on wider-radius MIND at 3 mm, diffeomorphic field: MR/CT",
                    ["affine.txt", "dense_mr_ct.txt"]),
}
DEFAULT = "impact-mind"


def preset_texts(name: str) -> list[str]:
    if name not in PRESETS:
        raise ParameterError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)} (`impactreg presets` describes them)")
    folder = resources.files(__package__)
    return [(folder / f).read_text() for f in PRESETS[name][1]]


def preset_maps(name: str) -> list[ParameterMap]:
    return [ParameterMap.from_text(text, f"preset {name}, stage {i}") for i, text in enumerate(preset_texts(name))]
