"""impactreg batch: a cohort CSV on a Dask LocalCluster, isolated failures, resume, report, job scripts."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from impactreg.cli import main
from impactreg.cohort import JobQueueSettings, job_script, read_cohort, run_cohort
from impactreg.errors import InputError, ParameterError
from impactreg.geometry import Grid
from impactreg.image import Image, write_image
from impactreg.points import write_points

pytest.importorskip("distributed", reason="the cohort extra (pip install 'impactreg[cohort]') is not installed")

MAP = ('(Transform "TranslationTransform")\n(Metric "AdvancedMattesMutualInformation")\n(NumberOfResolutions 2)\n'
       '(MaximumNumberOfIterations 40)\n(NumberOfSpatialSamples 400)\n(AutomaticTransformInitialization "true")\n')


def blob(shift=(0.0, 0.0), size=40) -> Image:
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    data = (torch.exp(-((x - 19 - shift[0]) ** 2 + (y - 18 - shift[1]) ** 2) / 50.0) +
            0.5 * torch.exp(-((x - 12 - shift[0]) ** 2 + (y - 26 - shift[1]) ** 2) / 20.0))[None] * 100
    return Image(data, Grid((size, size), (1.0, 1.0), (0.0, 0.0), np.eye(2)))


def make_cohort(folder, shifts, broken=(), extra_columns=None):
    """A CSV of pairs (fixed blob, moving blob shifted), landmarks for TRE; ``broken`` ids name a missing file."""
    folder.mkdir(parents=True, exist_ok=True)
    write_image(blob(), folder / "fixed.mha")
    landmarks = np.array([[19.0, 18.0], [12.0, 26.0], [25.0, 10.0]])
    write_points(folder / "fixed.txt", landmarks)
    rows = []
    for i, shift in enumerate(shifts):
        pid = f"p{i}"
        write_image(blob(shift), folder / f"moving{i}.mha")
        write_points(folder / f"moving{i}.txt", landmarks + np.array(shift))
        row = {"id": pid, "fixed": "fixed.mha", "moving": "missing.mha" if pid in broken else f"moving{i}.mha",
               "fixed_points": "fixed.txt", "moving_points": f"moving{i}.txt"}
        row.update((extra_columns or {}).get(pid, {}))
        rows.append(row)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with (folder / "cohort.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (folder / "map.txt").write_text(MAP)
    return folder / "cohort.csv", folder / "map.txt"


SHIFTS = [(2.0, -1.5), (-3.0, 1.0), (1.0, 2.5), (-1.5, -2.0)]


def test_cohort_on_two_workers_isolates_a_broken_pair_and_resumes(tmp_path):
    cohort, map_file = make_cohort(tmp_path / "in", SHIFTS, broken={"p2"})
    out = tmp_path / "out"
    result = run_cohort(cohort, out, [map_file], workers=2, threads_per_worker=1)
    by_id = {r["id"]: r for r in result.records}
    assert [r["status"] for r in result.records] == ["ok", "ok", "failed", "ok"]
    assert "missing.mha" in by_id["p2"]["error"] and "\n" not in by_id["p2"]["error"]
    for pid in ("p0", "p1", "p3"):
        assert (out / pid / "TransformParameters.0.txt").is_file() and (out / pid / "qc.png").is_file()
        assert by_id[pid]["tre_mean"] < 0.3, by_id[pid]
        assert by_id[pid]["folded_percent"] == 0.0
    assert len({by_id[p]["worker"] for p in ("p0", "p1", "p3")}) >= 1
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["status"] for r in summary] == ["ok", "ok", "failed", "ok"]
    assert json.loads((out / "summary.json").read_text())[1]["id"] == "p1"
    page = (out / "summary.html").read_text()
    assert "p0/qc.png" in page and "<svg" in page and "failed" in page

    # the rerun skips finished pairs (their files untouched) and retries the failed one, now fixed
    stamps = {p: (out / p / "TransformParameters.0.txt").stat().st_mtime_ns for p in ("p0", "p1", "p3")}
    (tmp_path / "in" / "missing.mha").write_bytes((tmp_path / "in" / "moving2.mha").read_bytes())
    result = run_cohort(cohort, out, [map_file], workers=2, threads_per_worker=1)
    assert [r["status"] for r in result.records] == ["ok"] * 4
    assert stamps == {p: (out / p / "TransformParameters.0.txt").stat().st_mtime_ns for p in stamps}
    assert result.records[0]["tre_mean"] == by_id["p0"]["tre_mean"]


def test_results_do_not_depend_on_the_number_of_workers(tmp_path):
    cohort, map_file = make_cohort(tmp_path / "in", SHIFTS[:3])
    run_cohort(cohort, tmp_path / "one", [map_file], workers=1, threads_per_worker=1, qc=False)
    run_cohort(cohort, tmp_path / "two", [map_file], workers=2, threads_per_worker=1, qc=False)
    for pid in ("p0", "p1", "p2"):
        one = (tmp_path / "one" / pid / "TransformParameters.0.txt").read_text()
        two = (tmp_path / "two" / pid / "TransformParameters.0.txt").read_text()
        assert one == two


def test_an_interrupted_cohort_resumes_where_it_stopped(tmp_path):
    shifts = SHIFTS + [(0.5, 1.5), (-2.5, 0.5)]
    cohort, map_file = make_cohort(tmp_path / "in", shifts)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "impactreg", "batch", str(cohort), "-out", str(out), "-p",
                             str(map_file), "--workers", "1", "--threads-per-worker", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not any(out.glob("p*/pair.json")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    finished = sorted(p.parent.name for p in out.glob("p*/pair.json"))
    assert 1 <= len(finished) < len(shifts), finished
    assert not list(out.glob("p*/.impactreg.partial-*"))
    records = json.loads((out / "summary.json").read_text())
    assert 1 <= len({r["id"] for r in records if r["status"] == "ok"}) and \
        {r["id"] for r in records if r["status"] == "ok"} <= set(finished)
    stamps = {p: (out / p / "pair.json").stat().st_mtime_ns for p in finished}
    assert main(["batch", str(cohort), "-out", str(out), "-p", str(map_file), "--workers", "1", "-q"]) == 0
    assert stamps == {p: (out / p / "pair.json").stat().st_mtime_ns for p in finished}
    assert all(r["status"] == "ok" for r in json.loads((out / "summary.json").read_text()))


def test_row_overrides_change_only_their_row(tmp_path):
    cohort, map_file = make_cohort(tmp_path / "in", SHIFTS[:2],
                                   extra_columns={"p0": {"MaximumNumberOfIterations": "3"}, "p1": {}})
    pairs = read_cohort(cohort)
    assert pairs[0].overrides == (("MaximumNumberOfIterations", ("3",)),) and pairs[1].overrides == ()
    result = run_cohort(cohort, tmp_path / "out", [map_file], workers=1, qc=False)
    log0 = (tmp_path / "out" / "p0" / "impactreg.log").read_text()
    log1 = (tmp_path / "out" / "p1" / "impactreg.log").read_text()
    assert "3 iterations" in log0 and "40 iterations" in log1
    assert all(r["status"] == "ok" for r in result.records)


def test_results_of_other_settings_are_never_overwritten(tmp_path):
    cohort, map_file = make_cohort(tmp_path / "in", SHIFTS[:1])
    out = tmp_path / "out"
    run_cohort(cohort, out, [map_file], workers=1, qc=False)
    before = (out / "p0" / "TransformParameters.0.txt").read_bytes()
    result = run_cohort(cohort, out, [map_file], workers=1, qc=False, seed=7)
    assert result.records[0]["status"] == "failed" and "other inputs or settings" in result.records[0]["error"]
    assert (out / "p0" / "TransformParameters.0.txt").read_bytes() == before


@pytest.mark.parametrize("text, message", [
    ("id,fixed\np0,a.mha\n", "lacks column(s) moving"),
    ("id,fixed,moving,Colour\np0,a.mha,b.mha,red\n", "'Colour' is neither a file column"),
    ("id,fixed,moving\np0,a.mha,b.mha\np0,a.mha,c.mha\n", "appears twice"),
    ("id,fixed,moving\n../x,a.mha,b.mha\n", "cannot name a folder"),
    ("id,fixed,moving\n", "has no pairs"),
])
def test_bad_cohort_tables_are_one_line(tmp_path, capsys, text, message):
    (tmp_path / "c.csv").write_text(text)
    (tmp_path / "map.txt").write_text(MAP)
    code = main(["batch", str(tmp_path / "c.csv"), "-out", str(tmp_path / "out"), "-p", str(tmp_path / "map.txt")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_read_cohort_refuses_unknown_and_missing(tmp_path):
    with pytest.raises(InputError):
        read_cohort(tmp_path / "none.csv")
    (tmp_path / "c.csv").write_text("id,fixed,moving,NumberOfResolution\np,a,b,2\n")
    with pytest.raises(ParameterError):
        read_cohort(tmp_path / "c.csv")


def test_slurm_job_script(capsys):
    script = job_script(JobQueueSettings("slurm", jobs=4, cores=2, memory="6GB", walltime="02:00:00",
                                         queue="short", account="rt-lab", directives=["--gres=gpu:1"]))
    for line in ("#SBATCH -p short", "#SBATCH -A rt-lab", "#SBATCH --cpus-per-task=2", "#SBATCH -t 02:00:00",
                 "#SBATCH --gres=gpu:1", "export OMP_NUM_THREADS=2"):
        assert line in script, script
    assert "--resources impactreg_pair=1" in script
    assert main(["batch", "x.csv", "-out", "o", "--preset", "rigid", "--cluster", "pbs", "--queue", "batch",
                 "--threads-per-worker", "4", "--job-script"]) == 0
    pbs = capsys.readouterr().out
    assert "#PBS -q batch" in pbs and "ncpus=4" in pbs


@pytest.mark.parametrize("flags, message", [
    (["--cluster", "slurm", "--jobs", "0"], "--jobs 0"),
    (["--cluster", "slurm", "--jobs", "-2"], "--jobs -2"),
    (["--workers", "0"], "--workers 0"),
    (["--strict"], "NumberOfResolution"),
])
def test_bad_batch_options_are_one_line_before_any_pair(tmp_path, capsys, flags, message):
    cohort, map_file = make_cohort(tmp_path / "in", SHIFTS[:1])
    map_file.write_text(MAP + "(NumberOfResolution 2)\n")  # a typo elastix ignores; --strict refuses it
    code = main(["batch", str(cohort), "-out", str(tmp_path / "out"), "-p", str(map_file), "--job-script", *flags]
                if "--cluster" in flags else ["batch", str(cohort), "-out", str(tmp_path / "out"), "-p", str(map_file), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out" / "p0").exists()


def test_workers_reuse_freed_memory_where_dask_pins_malloc_thresholds(tmp_path):
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536, which maps every buffer over 128 KiB afresh; a pair
    raises glibc's thresholds again (page faults of 1000 allocations of 4 MiB: ~1 M pinned, ~1 k raised)."""
    script = ("import resource, torch\n"
              "from impactreg.compute.process import reuse_freed_memory\n"
              "import sys\n"
              "changed = reuse_freed_memory() if sys.argv[1] == 'raise' else False\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
              "for _ in range(1000):\n"
              "    torch.ones(2 ** 20).sum()\n"
              "print(changed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    faults = {}
    for mode in ("pinned", "raise"):
        out = subprocess.run([sys.executable, "-c", script, mode], env=env, capture_output=True, text=True, check=True)
        changed, count = out.stdout.split()
        faults[mode] = int(count)
        assert changed == str(mode == "raise")
    assert faults["raise"] * 20 < faults["pinned"], faults


BSPLINE = ('(Transform "BSplineTransform")\n(Metric "AdvancedMattesMutualInformation")\n(NumberOfResolutions 1)\n'
           '(FinalGridSpacingInPhysicalUnits 10)\n(MaximumNumberOfIterations 30)\n(NumberOfSpatialSamples 300)\n')


def test_ensemble_mean_field_and_uncertainty(tmp_path):
    from impactreg.ensemble import register_ensemble
    from impactreg.image import read_image
    from impactreg.transforms.elastix_files import read_transform_file
    from impactreg.warp import deformation_field

    write_image(blob(), tmp_path / "f.mha")
    write_image(blob((1.5, -1.0)), tmp_path / "m.mha")
    out = tmp_path / "out"
    result = register_ensemble(tmp_path / "f.mha", tmp_path / "m.mha", BSPLINE, 3, out_dir=out, seed=5)
    grid = read_image(tmp_path / "f.mha").grid
    fields = torch.stack([deformation_field(r.transform, grid).data.double() for r in result.members])
    expected_mean = fields.mean(0)
    expected_uncertainty = fields.std(0, unbiased=True).pow(2).sum(0).sqrt()
    assert float(expected_uncertainty.max()) > 1e-3  # the seeds do give different members
    back = read_transform_file(out / "TransformParameters.0.txt").transform
    assert back.elastix_name == "DeformationFieldTransform"
    written = deformation_field(back, grid).data.double()
    assert torch.allclose(written, expected_mean, atol=1e-5)
    uncertainty = read_image(out / "uncertainty.nii.gz").data[0].double()
    assert torch.allclose(uncertainty, expected_uncertainty, atol=1e-5)
    for i in range(3):
        assert (out / f"member{i}" / "TransformParameters.0.txt").is_file()
    assert (out / "result.0.nii.gz").is_file()


def test_batch_ensemble_runs_members_as_tasks_and_resumes(tmp_path):
    cohort, _ = make_cohort(tmp_path / "in", SHIFTS[:2])
    (tmp_path / "in" / "bspline.txt").write_text(BSPLINE)
    out = tmp_path / "out"
    result = run_cohort(cohort, out, [tmp_path / "in" / "bspline.txt"], workers=2, ensemble=3, qc=False)
    assert [r["status"] for r in result.records] == ["ok", "ok"]
    for pid in ("p0", "p1"):
        assert (out / pid / "uncertainty.nii.gz").is_file() and (out / pid / "member2" / "pair.json").is_file()
        assert result.records[int(pid[1])]["uncertainty_mean"] > 0
    member = out / "p0" / "member1" / "TransformParameters.0.txt"
    stamp = member.stat().st_mtime_ns
    (out / "p0" / "pair.json").unlink()  # the combination was interrupted: members are reused
    result = run_cohort(cohort, out, [tmp_path / "in" / "bspline.txt"], workers=2, ensemble=3, qc=False)
    assert [r["status"] for r in result.records] == ["ok", "ok"] and member.stat().st_mtime_ns == stamp
