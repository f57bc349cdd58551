import numpy as np
import pytest

from impactreg.errors import InputError
from impactreg.geometry import Grid
from impactreg.points import format_output_points, read_output_points, read_points, write_points


def test_elastix_point_and_index_files(tmp_path):
    pts = np.array([[1.5, -2.25, 3.0], [4.0, 5.0, -6.125]])
    back = read_points(write_points(tmp_path / "p.txt", pts))
    assert back.kind == "point"
    np.testing.assert_allclose(back.values, pts)
    (tmp_path / "i.txt").write_text("index\n2\n1 2 3\n4.6 5 6\n")
    idx = read_points(tmp_path / "i.txt")
    grid = Grid((10, 10, 10), (2.0, 2.0, 2.0), (-1.0, 0.0, 1.0), np.eye(3))
    np.testing.assert_allclose(idx.world(grid), [[1.0, 4.0, 7.0], [9.0, 10.0, 13.0]])


def test_csv_and_fcsv(tmp_path):
    (tmp_path / "a.csv").write_text("name,x,y,z\nA,1,2,3\nB,4,5,6\n")
    np.testing.assert_allclose(read_points(tmp_path / "a.csv").values, [[1, 2, 3], [4, 5, 6]])
    (tmp_path / "b.csv").write_text("1,2\n3,4\n")
    assert read_points(tmp_path / "b.csv").dim == 2
    (tmp_path / "c.fcsv").write_text(
        "# Markups fiducial file version = 4.11\n# CoordinateSystem = RAS\n"
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
        "vtkMRMLMarkupsFiducialNode_0,10,-20,30,0,0,0,1,1,1,0,F-1,,\n")
    np.testing.assert_allclose(read_points(tmp_path / "c.fcsv").values, [[-10, 20, 30]])


@pytest.mark.parametrize("text,message", [
    ("point\n3\n1 2 3\n", "says 3 points"),
    ("point\nabc\n", "malformed"),
    ("point\n2\n1 2 3\n1 2\n", "same 2 or 3"),
    ("", "empty"),
])
def test_bad_point_files(tmp_path, text, message):
    (tmp_path / "p.txt").write_text(text)
    with pytest.raises(InputError, match=message):
        read_points(tmp_path / "p.txt")


def test_output_points_format_round_trip():
    grid = Grid((10, 10), (1.0, 1.0), (0.0, 0.0), np.eye(2))
    from impactreg.points import PointSet
    pts = PointSet(np.array([[1.2, 3.4]]))
    text = format_output_points(pts, pts.values, pts.values + 0.5, grid, grid)
    assert text.startswith("Point\t0\t; InputIndex = [ 1 3 ]\t; InputPoint = [ 1.200000 3.400000 ]")
    assert "Deformation = [ 0.500000 0.500000 ]" in text and "OutputIndexMoving = [ 2 4 ]" in text
    inputs, outputs = read_output_points_from_text(text)
    np.testing.assert_allclose(outputs, [[1.7, 3.9]])


def read_output_points_from_text(text, tmp=None):
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "outputpoints.txt"
        p.write_text(text)
        return read_output_points(p)
