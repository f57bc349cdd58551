"""Outputs are staged: an output never replaces an input, and a failed or interrupted command leaves
the output folder exactly as it was (engine/outputs.py, and every command that writes)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from impactreg import register
from impactreg.engine.outputs import StagedFolder
from impactreg.errors import OutputError
from impactreg.evaluation import evaluate
from impactreg.geometry import Grid
from impactreg.image import Image, write_image
from impactreg.points import write_points
from impactreg.qc import write_qc
from impactreg.transformix import transform
from impactreg.transforms import TranslationTransform

RIGID = ('(Transform "EulerTransform")\n(Metric "AdvancedMeanSquares")\n(NumberOfResolutions 1)\n'
         '(MaximumNumberOfIterations {iterations})\n(NumberOfSpatialSamples 300)\n')


def blob(shift=(0.0, 0.0), size=48) -> Image:
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    data = torch.exp(-((x - 24 - shift[0]) ** 2 + (y - 22 - shift[1]) ** 2) / 60.0)[None] * 100
    return Image(data, Grid((size, size), (1.0, 1.0), (0.0, 0.0), np.eye(2)))


def snapshot(folder):
    """Every file below ``folder`` (hidden ones too) with its bytes; None when the folder does not exist."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(*folders):
    return [p for folder in folders if folder.is_dir() for p in folder.iterdir() if ".partial-" in p.name]


@pytest.fixture()
def earlier_run(tmp_path):
    """Images and a parameter map in tmp_path, and an earlier registration's outputs in tmp_path/out."""
    fixed, moving = tmp_path / "fixed.mha", tmp_path / "moving.mha"
    write_image(blob(), fixed)
    write_image(blob((2.0, -1.0)), moving)
    pmap = tmp_path / "rigid.txt"
    pmap.write_text(RIGID.format(iterations=10))
    out = tmp_path / "out"
    register(fixed, moving, pmap, out_dir=out, seed=1)
    return fixed, moving, pmap, out


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "impactreg", *map(str, args)], capture_output=True, text=True)


def test_register_refuses_to_replace_any_input(earlier_run, tmp_path):
    fixed, moving, pmap, out = earlier_run
    map_named_like_an_output = out / "TransformParameters.1.txt"
    shutil.copy(pmap, map_named_like_an_output)
    before = snapshot(out)
    symlink, hardlink = tmp_path / "link.mha", tmp_path / "hard.mha"
    symlink.symlink_to(out / "result.0.mha")
    os.link(out / "result.0.mha", hardlink)
    chain = tmp_path / "other" / "TransformParameters.1.txt"
    chain.parent.mkdir()
    chain.write_text((out / "TransformParameters.0.txt").read_text().replace(
        '(InitialTransformParameterFileName "NoInitialTransform")',
        f'(InitialTransformParameterFileName "{out / "TransformParameters.0.txt"}")'))
    cases = [
        (dict(fixed=out / "result.0.mha"), "fixed image"),
        (dict(moving=symlink), "moving image"),
        (dict(fixed=hardlink), "fixed image"),
        (dict(fixed_mask=out / "result.0.mha"), "fixed mask"),
        (dict(initial_transform=out / "TransformParameters.0.txt"), "initial transform"),
        (dict(initial_transform=chain), "initial transform"),
    ]
    for change, what in cases:
        kwargs = dict(fixed=fixed, moving=moving, parameter_maps=pmap) | change
        with pytest.raises(OutputError, match=f"would replace the {what} .*; choose another output folder"):
            register(kwargs.pop("fixed"), kwargs.pop("moving"), kwargs.pop("parameter_maps"), out_dir=out, **kwargs)
        assert snapshot(out) == before, change
    with pytest.raises(OutputError, match="TransformParameters.1.txt would replace the parameter map"):
        register(fixed, moving, [pmap, map_named_like_an_output], out_dir=out)
    assert snapshot(out) == before and not leftovers(tmp_path, out)


def test_cli_refuses_an_output_folder_holding_an_input(earlier_run):
    fixed, moving, pmap, out = earlier_run
    before = snapshot(out)
    (out / "qc.png").symlink_to(moving)
    before = snapshot(out)
    cases = [(["-f", out / "result.0.mha", "-m", moving], "result.0.mha would replace the fixed image"),
             (["-f", fixed, "-m", moving, "-t0", out / "TransformParameters.0.txt"],
              "TransformParameters.0.txt would replace the initial transform"),
             (["-f", fixed, "-m", moving, "--qc"], "qc.png would replace the moving image")]
    for args, message in cases:
        r = run_cli("register", *args, "-p", pmap, "-out", out)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and message in lines[-1] and "choose another output folder (-out)" in lines[-1], r.stderr
        assert "Traceback" not in r.stderr and not any("error" in line for line in lines[:-1])
        assert snapshot(out) == before


def test_transform_evaluate_and_qc_refuse_to_replace_their_inputs(earlier_run, tmp_path):
    fixed, moving, pmap, out = earlier_run
    tp = out / "TransformParameters.0.txt"
    transform(tp, out, image=moving)
    points = out / "outputpoints.txt"
    write_points(points, np.array([[20.0, 20.0]]))
    before = snapshot(out)
    with pytest.raises(OutputError, match="result.mha would replace the image"):
        transform(tp, out, image=out / "result.mha")
    with pytest.raises(OutputError, match="outputpoints.txt would replace the point file"):
        transform(tp, out, points=points)
    with pytest.raises(OutputError, match="evaluation.json would replace the fixed point file"):
        evaluate(tp, fixed_points=out / "evaluation.json", moving_points=points, out_json=out / "evaluation.json")
    (out / "qc.png").symlink_to(fixed)
    with pytest.raises(OutputError, match="qc.png would replace the fixed image"):
        write_qc(blob(), blob(), TranslationTransform(2), out, inputs={"fixed image": fixed})
    (out / "qc.png").unlink()
    assert snapshot(out) == before and not leftovers(tmp_path, out)


def test_commit_checks_what_was_written_as_well_as_what_was_planned(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("input")
    with pytest.raises(OutputError, match="in.txt would replace the input"):
        with StagedFolder(tmp_path, [], {"input": source}) as folder:
            folder.path("in.txt").write_text("output")
            folder.commit()
    assert source.read_text() == "input" and not leftovers(tmp_path)


def test_a_failed_registration_leaves_the_output_folder_as_it_was(earlier_run, tmp_path):
    fixed, moving, pmap, out = earlier_run
    before = snapshot(out)

    def fail(info):
        if info.iteration == 3:
            raise RuntimeError("stopped")

    for target in (out, tmp_path / "new" / "deeper" / "out"):
        with pytest.raises(RuntimeError, match="stopped"):
            register(fixed, moving, pmap, out_dir=target, callbacks=[fail])
    assert snapshot(out) == before
    assert not (tmp_path / "new").exists() and not leftovers(tmp_path, out)


def test_a_successful_registration_replaces_the_earlier_outputs(earlier_run):
    fixed, moving, pmap, out = earlier_run
    before = snapshot(out)
    register(fixed, moving, pmap, out_dir=out, seed=2)
    after = snapshot(out)
    assert after.keys() == before.keys() and after != before and not leftovers(out)


@pytest.mark.parametrize("existing", [True, False])
def test_sigterm_mid_registration_leaves_nothing_half_written(earlier_run, tmp_path, existing):
    fixed, moving, pmap, out = earlier_run
    slow = tmp_path / "slow.txt"
    slow.write_text(RIGID.format(iterations=100000))
    target = out if existing else tmp_path / "fresh"
    before = snapshot(out)
    process = subprocess.Popen([sys.executable, "-m", "impactreg", "register", "-f", fixed, "-m", moving, "-p", slow,
                                "-out", target], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not leftovers(tmp_path, out) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert leftovers(tmp_path, out), "the registration never started writing"
    time.sleep(1.0)  # into the iterations
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1] == "impactreg: terminated" and "Traceback" not in stderr
    assert not leftovers(tmp_path, out)
    assert snapshot(out) == before
    assert existing or not target.exists()


def test_outputs_are_readable_by_others(earlier_run, tmp_path):
    """Output files get the mode a plain open() gives (0666 less the umask), folders mkdir's."""
    fixed, moving, pmap, _ = earlier_run
    previous = os.umask(0o022)
    try:
        out = tmp_path / "modes"
        register(fixed, moving, pmap, out_dir=out, seed=1)
        transform(out / "TransformParameters.0.txt", out / "transformix", image=moving, jacobian=True)
        write_qc(blob(), blob(), TranslationTransform(2), out / "qc")
        evaluate(out / "TransformParameters.0.txt", out_json=out / "evaluation.json")
        volume = Image(torch.randint(0, 100, (1, 3, 8, 8)).float(), Grid((8, 8, 3), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)))
        write_image(volume, out / "dicom")
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in out.rglob("*")}
    assert out.stat().st_mode & 0o777 == 0o755
    assert {p: m for p, m in modes.items() if m != (0o755 if (out / p).is_dir() else 0o644)} == {}
    assert "TransformParameters.0.txt" in modes and "dicom/slice_0000.dcm" in modes
