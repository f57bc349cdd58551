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
    parser.add_argument("--device", default=None, help="torch device: cpu (default) or cuda:N; when given, IMPACT's "
                        "models run there too, whatever the map's ImpactGPU says")
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
    rg.add_argument("-fp", dest="fixed_points", metavar="POINTS",
                    help="fixed landmarks (elastix point/index file, .csv, .fcsv) for CorrespondingPointsEuclideanDistanceMetric")
    rg.add_argument("-mp", dest="moving_points", metavar="POINTS", help="the corresponding moving landmarks")
    rg.add_argument("-threads", dest="threads", type=int, metavar="N", help="CPU threads")
    rg.add_argument("--seed", type=int, help="random seed (overrides RandomSeed)")
    rg.add_argument("--memory-limit", metavar="SIZE",
                    help="the most memory the registration may hold (peak resident set, images included), e.g. 4G or "
                         "800M; a configuration that cannot fit is refused at the start (default: what it holds plus "
                         "half of the free memory)")
    rg.add_argument("--strict", action="store_true",
                    help="refuse keys elastix would ignore (unknown keys, wrong values of unused components, "
                         "per-level lists of another length) instead of warning")
    rg.add_argument("--qc", action="store_true", help="also write qc.png and qc.html (visual quality control)")
    rg.add_argument("--ensemble", type=int, metavar="K",
                    help="K registrations with seeds seed..seed+K-1 (in -out/member<i>/); writes their mean field "
                         "(TransformParameters.0.txt, a DeformationFieldTransform) and uncertainty.nii.gz")
    _add_common(rg)

    bt = commands.add_parser("batch", help="register a cohort (a CSV of pairs) on Dask, resumable, with a report",
                             description="Register every pair of COHORT.csv (columns id,fixed,moving and optionally "
                                         "fixed_mask, moving_mask, fixed_points, moving_points, fixed_labels, "
                                         "moving_labels, initial_transform, and parameter-map keys as per-row "
                                         "overrides) into DIR/<id>/ as `register` does; finished pairs are skipped "
                                         "on a rerun; DIR/summary.csv, .json and .html report every pair. Exit code "
                                         "0 when every pair succeeded, 1 when some failed, 2 on bad input.")
    bt.add_argument("cohort", metavar="COHORT.csv")
    bt.add_argument("-out", dest="out", required=True, metavar="DIR", help="output folder (one sub-folder per pair)")
    bt.add_argument("-p", dest="maps", action="append", metavar="MAP", help="elastix parameter map; repeat for stages")
    bt.add_argument("--preset", metavar="NAME", help="a shipped preset instead of -p")
    bt.add_argument("--workers", type=int, metavar="N", help="local Dask workers (default: cores / threads per worker)")
    bt.add_argument("--threads-per-worker", type=int, metavar="T", help="CPU threads per pair (default 1)")
    bt.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://host:8786")
    bt.add_argument("--cluster", choices=("slurm", "pbs", "sge"), help="submit workers as batch jobs (dask-jobqueue)")
    bt.add_argument("--jobs", type=int, default=1, metavar="N", help="--cluster: number of worker jobs")
    bt.add_argument("--job-memory", default="8GB", metavar="SIZE", help="--cluster: memory per job (default 8GB)")
    bt.add_argument("--walltime", default="01:00:00", metavar="HH:MM:SS", help="--cluster: walltime per job")
    bt.add_argument("--queue", metavar="NAME", help="--cluster: queue / partition")
    bt.add_argument("--account", metavar="NAME", help="--cluster: account / project to charge")
    bt.add_argument("--job-directive", action="append", default=[], metavar="TEXT",
                    help="--cluster: an extra scheduler directive, e.g. --job-directive=--gres=gpu:1 (repeatable)")
    bt.add_argument("--job-script", action="store_true", help="--cluster: print one worker job's script and exit")
    bt.add_argument("--seed", type=int, help="random seed for every pair (overrides RandomSeed)")
    bt.add_argument("--memory-limit", metavar="SIZE",
                    help="peak memory of each worker process while it registers a pair, e.g. 4G (as register's)")
    bt.add_argument("--no-qc", dest="qc", action="store_false", help="skip the per-pair QC pictures")
    bt.add_argument("--strict", action="store_true", help="refuse keys elastix would ignore, as register --strict")
    bt.add_argument("--ensemble", type=int, default=1, metavar="K",
                    help="K registrations per pair (seeds seed..seed+K-1, run as separate tasks): the mean field "
                         "is the result, uncertainty.nii.gz its spread")
    _add_common(bt)

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
    _add_learn_commands(commands)
    return parser


def _add_learn_commands(commands) -> None:
    """`train` and `predict`: the learning path (needs MONAI, the `learn` extra)."""
    tr = commands.add_parser("train", help="train a VoxelMorph-style network with the IMPACT loss (MONAI)",
                             description="Train a registration network on a cohort (CSV of pairs, or an atlas and a "
                                         "list of images) with IMPACT + a regulariser (+ Dice on labels); writes ONE "
                                         "model file (weights, model grid, settings). Resumes from MODEL.checkpoint.")
    tr.add_argument("--pairs", metavar="CSV", help="cohort CSV: id,fixed,moving[,fixed_mask,moving_mask,fixed_labels,"
                                                   "moving_labels,fixed_points,moving_points]")
    tr.add_argument("--atlas", metavar="IMAGE", help="the fixed image of every pair (with --images)")
    tr.add_argument("--images", metavar="LIST", help="moving images, one per line (or a CSV image[,mask,labels,points])")
    tr.add_argument("--atlas-mask", metavar="MASK")
    tr.add_argument("--atlas-labels", metavar="IMAGE")
    tr.add_argument("--atlas-points", metavar="FILE")
    tr.add_argument("-o", "--model", required=True, metavar="FILE", help="the model file to write, e.g. model.pt")
    tr.add_argument("--spacing", type=float, nargs="+", metavar="MM", help="model grid spacing (default: the first fixed image's)")
    tr.add_argument("--size", type=int, nargs="+", metavar="N", help="model grid size x y [z] (default: covers the fixed images)")
    tr.add_argument("--epochs", type=int, default=10)
    tr.add_argument("--batch-size", type=int, default=1)
    tr.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    tr.add_argument("--weight-decay", type=float, default=1e-4)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--features", type=int, nargs="+", default=[16, 32, 32, 32], help="UNet channels per level")
    tr.add_argument("--integration-steps", type=int, default=7, help="scaling and squaring steps (0: a displacement)")
    tr.add_argument("--similarity", default="impact", choices=("impact", "mi", "lncc"),
                    help="impact (default), or MONAI's mutual information / local NCC for comparison")
    tr.add_argument("--impact-model", default="MIND/R1D2", help="IMPACT model(s), comma-separated: MIND/R<r>D<d>, "
                                                                 "a TorchScript path or a hub name")
    tr.add_argument("--impact-layers", default="1", help="layers mask(s), comma-separated, e.g. 1 or 0110")
    tr.add_argument("--impact-weights", type=float, nargs="+", help="one weight per selected layer")
    tr.add_argument("--impact-distance", default="L1", help="L1, L2, Cosine, L1Cosine, DotProduct, Dice or NCC")
    tr.add_argument("--impact-normalization", default="none", help="none, zscore, minmax, ct or imagenet")
    tr.add_argument("--impact-channels", type=int, default=1, help="input channels of the model (3: replicated grey)")
    tr.add_argument("--impact-slice-axis", type=int, choices=(0, 1, 2), help="run a 2D model slice by slice along this "
                                                                             "tensor axis (0 = z)")
    tr.add_argument("--regularizer", default="diffusion", choices=("diffusion", "bending"))
    tr.add_argument("--lambda", dest="regularization_weight", type=float, default=1.0, help="regulariser weight")
    tr.add_argument("--dice-weight", type=float, default=0.0, help="weight of the Dice loss on labels (semi-supervised)")
    tr.add_argument("--validation", type=float, default=0.2, help="fraction of the pairs held out for validation")
    tr.add_argument("--checkpoint-every", type=int, default=50, metavar="STEPS")
    tr.add_argument("--no-resume", action="store_true", help="start afresh even if MODEL.checkpoint exists")
    tr.add_argument("--max-steps", type=int, help="stop after this many steps in all, leaving a checkpoint")
    tr.add_argument("--no-amp", action="store_true", help="no bfloat16 mixed precision on CUDA")
    _add_common(tr)

    pd = commands.add_parser("predict", help="register a pair with a trained model (+ instance optimisation)",
                             description="Apply a model from `impactreg train` to a pair in physical space, optionally "
                                         "refine it by instance optimisation, and write TransformParameters.0.txt "
                                         "(DeformationFieldTransform, read by transformix and `impactreg evaluate`), "
                                         "the field DeformationFieldImage.0.mha and result.0.mha to -out.")
    pd.add_argument("--model", required=True, metavar="FILE")
    pd.add_argument("-f", dest="fixed", required=True, metavar="FIXED")
    pd.add_argument("-m", dest="moving", required=True, metavar="MOVING")
    pd.add_argument("-out", dest="out", required=True, metavar="DIR")
    pd.add_argument("-fMask", dest="fixed_mask", metavar="MASK", help="fixed-image mask (instance optimisation)")
    pd.add_argument("--instance-steps", type=int, default=0, help="Adam steps of the training loss on this pair")
    pd.add_argument("--instance-lr", type=float, default=0.1, help="Adam learning rate (voxels of the model grid)")
    pd.add_argument("--qc", action="store_true", help="also write qc.png and qc.html")
    _add_common(pd)


def _run_train(args) -> int:
    from .learn import LearnSettings, atlas_pairs, read_pairs_csv, train

    if bool(args.pairs) == bool(args.atlas or args.images):
        raise ImpactRegError("give the cohort as --pairs CSV, or as --atlas IMAGE with --images LIST (not both)")
    if args.atlas and not args.images or args.images and not args.atlas:
        raise ImpactRegError("an atlas cohort needs both --atlas IMAGE and --images LIST")
    pairs = read_pairs_csv(args.pairs) if args.pairs else atlas_pairs(
        args.atlas, args.images, args.atlas_mask, args.atlas_labels, args.atlas_points)
    models, layers = args.impact_model.split(","), args.impact_layers.split(",")
    settings = LearnSettings(
        features=tuple(args.features), strides=(2,) * (len(args.features) - 1),
        integration_steps=args.integration_steps, similarity=args.similarity, models=models[0] if len(models) == 1 else models,
        layers_mask=layers[0] if len(layers) == 1 else layers, layer_weights=args.impact_weights,
        distance=args.impact_distance, normalization=args.impact_normalization, feature_channels=args.impact_channels,
        slice_axis=args.impact_slice_axis, regularizer=args.regularizer,
        regularization_weight=args.regularization_weight, dice_weight=args.dice_weight, learning_rate=args.lr,
        weight_decay=args.weight_decay, batch_size=args.batch_size, epochs=args.epochs, seed=args.seed,
        mixed_precision=not args.no_amp)
    report = None if args.quiet else print
    result = train(pairs, args.model, settings, spacing=args.spacing, size=args.size,
                   validation_fraction=args.validation, checkpoint_every=args.checkpoint_every,
                   resume=not args.no_resume, max_steps=args.max_steps, device=args.device,
                   progress=not args.quiet and sys.stderr.isatty(), report=report)
    if not args.quiet:
        if result.finished:
            print(f"trained {result.steps} step(s) in {result.seconds:.1f} s; wrote {result.model_path}")
        else:
            print(f"stopped after {result.steps} step(s); resume with the same command (checkpoint {args.model}.checkpoint)")
    return 0


def _run_predict(args) -> int:
    from .learn import predict

    result = predict(args.model, args.fixed, args.moving, args.out, fixed_mask=args.fixed_mask,
                     instance_steps=args.instance_steps, instance_learning_rate=args.instance_lr, device=args.device,
                     progress=not args.quiet and sys.stderr.isatty(), qc=args.qc)
    if not args.quiet:
        extra = (f"; instance optimisation loss {result.losses['instance_first']:.5g} -> "
                 f"{result.losses['instance_last']:.5g}" if result.losses else "")
        print(f"predicted in {result.seconds:.1f} s{extra}; outputs in {args.out}")
        for path in result.outputs.values():
            print(f"  {path}")
    return 0


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
              "moving mask": args.moving_mask, "initial transform": args.initial, "parameter map": args.maps,
              "fixed points": args.fixed_points, "moving points": args.moving_points}
    if args.qc:
        from .engine.outputs import input_files, refuse_replacing_inputs

        refuse_replacing_inputs(args.out, ("qc.png", "qc.html"), input_files(inputs))
    options = dict(fixed_mask=args.fixed_mask, moving_mask=args.moving_mask, initial_transform=args.initial,
                   device=args.device, threads=args.threads, progress=progress, memory_limit=args.memory_limit,
                   strict=args.strict, fixed_points=args.fixed_points, moving_points=args.moving_points)
    if args.ensemble is not None:
        return _run_ensemble(args, maps, options)
    result = register(args.fixed, args.moving, maps, out_dir=args.out, seed=args.seed, **options)
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


def _run_ensemble(args, maps, options) -> int:
    from .ensemble import register_ensemble

    if args.qc:
        raise ImpactRegError("--qc with --ensemble: run `impactreg qc -tp OUT/TransformParameters.0.txt` afterwards")
    result = register_ensemble(args.fixed, args.moving, maps, args.ensemble, out_dir=args.out, seed=args.seed, **options)
    if not args.quiet:
        u = result.fields.uncertainty.data
        print(f"ensemble of {args.ensemble}: uncertainty mean {float(u.mean()):.3f} mm, max {float(u.max()):.3f} mm; "
              f"outputs in {args.out}")
        for path in result.outputs.values():
            print(f"  {path}")
    return 0


def _run_batch(args) -> int:
    from .cohort import JobQueueSettings, job_script, run_cohort
    from .cohort.cluster import default_layout

    jobqueue = None
    if args.cluster:
        _, threads = default_layout(args.workers, args.threads_per_worker)
        jobqueue = JobQueueSettings(args.cluster, args.jobs, threads, args.job_memory, args.walltime, args.queue,
                                    args.account, args.job_directive)
        if args.job_script:
            print(job_script(jobqueue))
            return 0
    elif args.job_script:
        raise ImpactRegError("--job-script needs --cluster slurm|pbs|sge")
    result = run_cohort(args.cohort, args.out, args.maps, args.preset, workers=args.workers,
                        threads_per_worker=args.threads_per_worker, scheduler=args.scheduler, jobqueue=jobqueue,
                        device=args.device, seed=args.seed, memory_limit=args.memory_limit, qc=args.qc,
                        ensemble=args.ensemble, progress=not args.quiet and sys.stderr.isatty(), strict=args.strict)
    if not args.quiet:
        ok = len(result.records) - len(result.failed)
        print(f"{ok} of {len(result.records)} pairs registered; report in {result.summary[-1]}")
        for record in result.failed:
            print(f"  {record['id']}: {record.get('error') or record.get('status')}")
    return 1 if result.failed else 0


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
                "qc": _run_qc, "batch": _run_batch}
    handlers.update({"train": _run_train, "predict": _run_predict})
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
    finally:  # main() may run many times in one process (tests, notebooks): leave no handler on a closed stream
        log.removeHandler(console)


if __name__ == "__main__":
    sys.exit(main())
