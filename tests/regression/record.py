"""Re-record the golden outputs of the regression test (tests/test_regression_outputs.py).

    python tests/regression/record.py                 # every case
    python tests/regression/record.py CASE_ID ...     # only these cases
    python tests/regression/record.py --inputs        # also rebuild inputs/ (then re-record all)

Re-record ONLY when a change is meant to change registration results (a fix, a new default, a
deliberate numerical change), and say so in the commit: the golden files are the record of what
the engine computed before, and re-recording after an unintended change hides the regression.
A refactoring must leave them byte-identical.

Each case (regression_cases.CASES) is run with impactreg.register into a temporary
folder; its TransformParameters.<i>.txt (one per stage) are stored as golden/<case id>/, with
path-valued keys (InitialTransformParameterFileName) reduced to the file name, and
golden/environment.txt notes the library versions and CPU they were computed with. Run it with the
code under test on the path, e.g. from the repository root:

    PYTHONPATH=src python tests/regression/record.py
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import regression_cases as rc  # noqa: E402


def record(case: rc.Case) -> float:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        files = rc.run_case(case, Path(tmp) / "out")
        target = rc.GOLDEN / case.id
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for f in files:
            (target / f.name).write_text(rc.normalise(f.read_text()))
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help="case ids (default: all)")
    parser.add_argument("--inputs", action="store_true", help="rebuild the synthetic inputs first")
    args = parser.parse_args(argv)
    if args.inputs:
        rc.make_inputs()
    known = {c.id for c in rc.CASES}
    unknown = [c for c in args.cases if c not in known]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    cases = [c for c in rc.CASES if not args.cases or c.id in args.cases]
    if not args.cases:  # drop golden folders of cases that no longer exist
        for folder in rc.GOLDEN.glob("*"):
            if folder.is_dir() and folder.name not in known:
                shutil.rmtree(folder)
    if os.environ.get("IMPACTREG_KERNELS", "1") == "0":
        parser.error("IMPACTREG_KERNELS=0: the golden files record the compiled-kernel path; unset it")
    for case in cases:
        print(f"{case.id}: {record(case):.1f} s", flush=True)
    rc.ENVIRONMENT_FILE.write_text("".join(f"{k}: {v}\n" for k, v in rc.environment().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
