"""The ``impactreg`` command line. Bad input gives one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .errors import ImpactRegError

log = logging.getLogger("impactreg")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda:N")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="impactreg", description="elastix-compatible image registration with the IMPACT metric")
    parser.add_argument("--version", action="version", version=f"impactreg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    tp = commands.add_parser("transform", help="apply a TransformParameters file (transformix)",
                             description="Apply an elastix TransformParameters file as transformix does.")
    tp.add_argument("-tp", dest="tp", required=True, metavar="FILE", help="TransformParameters.N.txt")
    tp.add_argument("-out", dest="out", required=True, metavar="DIR", help="output folder")
    tp.add_argument("-in", dest="input", metavar="IMAGE", help="image to resample (written as result.<ext>)")
    tp.add_argument("--labels", action="store_true", help="the image is a label map: nearest neighbour, pixel type kept")
    tp.add_argument("-def", dest="deformation", metavar="POINTS|all",
                    help="a point file (elastix point/index, .csv, .fcsv) -> outputpoints.txt; 'all' -> deformationField")
    tp.add_argument("-jac", dest="jacobian", metavar="all", help="'all' -> spatialJacobian (determinant)")
    tp.add_argument("-jacmat", dest="jacobian_matrix", metavar="all", help="'all' -> fullSpatialJacobian")
    _add_common(tp)
    return parser


def _run_transform(args) -> int:
    from .transformix import transform

    for flag, value in (("-jac", args.jacobian), ("-jacmat", args.jacobian_matrix)):
        if value is not None and value != "all":
            raise ImpactRegError(f"{flag} {value}: only '{flag} all' is supported")
    if not (args.input or args.deformation or args.jacobian or args.jacobian_matrix):
        raise ImpactRegError("nothing to do: give -in IMAGE, -def POINTS|all, -jac all or -jacmat all")
    points = args.deformation if args.deformation not in (None, "all") else None
    result = transform(args.tp, args.out, image=args.input, points=points,
                       deformation=args.deformation == "all", jacobian=args.jacobian == "all",
                       jacobian_matrix=args.jacobian_matrix == "all", labels=args.labels, device=args.device)
    if not args.quiet:
        for name, path in result.outputs.items():
            print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if not args.quiet else logging.ERROR,
                        format="%(message)s")
    handlers = {"transform": _run_transform}
    try:
        return handlers[args.command](args)
    except ImpactRegError as exc:
        if args.debug:
            raise
        print(f"impactreg {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("impactreg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
