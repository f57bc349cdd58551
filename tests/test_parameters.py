import pytest

from impactreg.errors import ParameterError
from impactreg.parameters import ParameterMap, format_parameter_map, parse_parameter_text, parse_toml_text

TEXT = """
// a comment
(Transform "BSplineTransform")   // trailing comment
(Metric "AdvancedMattesMutualInformation" "TransformBendingEnergyPenalty")
(Metric1Weight 0.5)
(MaximumNumberOfIterations 100 200 300)
(NewSamplesEveryIteration "true")
(FinalGridSpacingInPhysicalUnits 8.0)
(ResultImagePixelType "unsigned char")
"""


def test_text_syntax_and_typed_access():
    raw = parse_parameter_text(TEXT)
    assert raw["Metric"] == ["AdvancedMattesMutualInformation", "TransformBendingEnergyPenalty"]
    assert raw["ResultImagePixelType"] == ["unsigned char"]
    pm = ParameterMap(raw)
    assert pm.get("MaximumNumberOfIterations", 1) == 200
    assert pm.get("MaximumNumberOfIterations", 5) == 100  # beyond the list: the first value, as elastix
    assert pm.get("NewSamplesEveryIteration") is True
    assert pm.get("Metric1Weight") == 0.5 and pm.get("Metric0Weight") == 1.0
    assert pm.get("NumberOfHistogramBins") == 32  # schema default
    again = ParameterMap(parse_parameter_text(format_parameter_map(pm.as_dict())))
    assert again.as_dict() == pm.as_dict()


def test_toml_form():
    pm = ParameterMap(parse_toml_text('Transform = "AffineTransform"\nMaximumNumberOfIterations = [10, 20]\n'
                                      'AutomaticTransformInitialization = true\n'))
    assert pm.get("MaximumNumberOfIterations", 1) == 20 and pm.get("AutomaticTransformInitialization") is True


@pytest.mark.parametrize("entries,message", [
    ({"Transfrom": "EulerTransform"}, "unknown parameter 'Transfrom'; did you mean 'Transform'"),
    ({"transform": "EulerTransform"}, "did you mean 'Transform'"),
    ({"Transform": "BSplineTransfrom"}, "did you mean 'BSplineTransform'"),
    ({"MaximumNumberOfIterations": "many"}, "takes a whole number"),
    ({"NewSamplesEveryIteration": "yes"}, 'takes "true" or "false"'),
    ({"NumberOfResolutions": ["2", "3"]}, "takes one value"),
    ({"BSplineTransformSplineOrder": "4"}, "takes one of 1, 2, 3"),
])
def test_wrong_keys_and_values_name_the_problem(entries, message):
    with pytest.raises(ParameterError, match=message.replace("(", r"\(")) as err:
        ParameterMap(entries, "map.txt", strict=True)
    assert "map.txt" in str(err.value) and "\n" not in str(err.value)


def test_per_level_counts_fall_back_as_elastix_and_strict_refuses_them(caplog):
    pm = ParameterMap({"NumberOfResolutions": 3, "MaximumNumberOfIterations": [10, 20]}, "map.txt")
    assert [pm.get("MaximumNumberOfIterations", level) for level in range(3)] == [10, 20, 10]
    pm.warn_ignored()
    assert "MaximumNumberOfIterations (2)" in caplog.text and "takes the first" in caplog.text
    with pytest.raises(ParameterError, match="one per level"):
        pm.warn_ignored(strict=True)


@pytest.mark.parametrize("text,message", [
    ('(Transform "EulerTransform"', "not closed"),
    ("Transform EulerTransform", "expected an entry"),
    ('(Transform "EulerTransform)', "not closed|unterminated"),
])
def test_syntax_errors(text, message):
    with pytest.raises(ParameterError, match=message):
        parse_parameter_text(text, "p.txt")
