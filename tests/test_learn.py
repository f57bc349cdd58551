"""The learning path: geometry of the model grid, training (loss, seed, resume), predict outputs that
elastix's transformix applies, and the IMPACT term's gradient reaching the network."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

pytest.importorskip("monai")

from impactreg.cli import main as cli_main  # noqa: E402
from impactreg.evaluation import evaluate  # noqa: E402
from impactreg.geometry import Grid  # noqa: E402
from impactreg.image import Image, write_image  # noqa: E402
from impactreg.learn import LearnSettings, ModelGrid, load_model, pair_grid, predict, read_pairs_csv, train  # noqa: E402
from impactreg.learn.cohort import load_pair  # noqa: E402
from impactreg.learn.grid import field_transform, on_grid, voxel_displacement, world_displacement  # noqa: E402
from impactreg.learn.losses import RegistrationLoss  # noqa: E402
from impactreg.learn.network import build_network  # noqa: E402
from impactreg.learn.train import _batch, loss_terms, network_field  # noqa: E402
from impactreg.transforms.elastix_files import write_transform_file  # noqa: E402
from impactreg.warp import map_points  # noqa: E402

train_module = importlib.import_module("impactreg.learn.train")  # the module, not the function of that name

TINY = dict(features=(4, 8, 8), strides=(2, 2), integration_steps=3, learning_rate=3e-3)


def rotation(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def blobs(grid: Grid, seed: int, shift_mm=(0.0, 0.0, 0.0)) -> Image:
    """Gaussian blobs placed in world space (so a shift_mm moves the content by that much)."""
    rng = np.random.default_rng(seed)
    points = grid.voxel_points().numpy()
    centre = grid.centre
    value = np.zeros(len(points))
    for _ in range(8):
        c = centre + rng.uniform(-10, 10, 3) + np.asarray(shift_mm)
        value += rng.uniform(50, 150) * np.exp(-((points - c) ** 2).sum(1) / (2 * rng.uniform(3, 5) ** 2))
    return Image(torch.from_numpy(value.reshape(1, *grid.shape)).float(), grid)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    grid = Grid((16, 16, 16), (2.0, 2.0, 2.0), (-15.0, -15.0, -15.0), np.eye(3))
    rows = ["id,fixed,moving,fixed_points,moving_points"]
    for i in range(4):
        shift = (2.0, -1.0, 1.0)
        write_image(blobs(grid, i), folder / f"f{i}.mha")
        write_image(blobs(grid, i, shift), folder / f"m{i}.mha")
        pts = np.array([[0.0, 0.0, 0.0], [4.0, -3.0, 2.0], [-5.0, 5.0, 0.0]])
        (folder / f"fp{i}.txt").write_text("point\n3\n" + "\n".join(" ".join(map(str, p)) for p in pts) + "\n")
        (folder / f"mp{i}.txt").write_text("point\n3\n" + "\n".join(" ".join(map(str, p + shift)) for p in pts) + "\n")
        rows.append(f"p{i},f{i}.mha,m{i}.mha,fp{i}.txt,mp{i}.txt")
    (folder / "cohort.csv").write_text("\n".join(rows) + "\n")
    return folder


def weights(path):
    return load_model(path).network.state_dict()


def test_known_translation_maps_points_and_images_in_world_space():
    """A constant world shift t as a MONAI ddf on an oblique pair grid: the field maps p -> p + t on the
    fixed grid (another direction and spacing), and MONAI's Warp resamples the moving image there."""
    fixed_grid = Grid((20, 18, 16), (1.5, 1.7, 2.0), (3.0, -4.0, 5.0), rotation(20))
    model = ModelGrid((16, 16, 16), (2.0, 2.0, 2.0), tuple(rotation(-35).ravel()))
    grid = pair_grid(model, fixed_grid)
    np.testing.assert_allclose(grid.centre, fixed_grid.centre, atol=1e-9)
    t = torch.tensor([3.0, -2.0, 1.5], dtype=torch.float64)
    world = t[:, None, None, None].expand(3, *grid.shape)
    ddf = voxel_displacement(world, grid)
    torch.testing.assert_close(world_displacement(ddf, grid), world.contiguous(), atol=1e-5, rtol=0)
    transform = field_transform(ddf, grid, fixed_grid)
    points = fixed_grid.voxel_points()[::97]
    np.testing.assert_allclose(map_points(transform, points.numpy()), (points + t).numpy(), atol=1e-5)
    moving_grid = Grid((24, 24, 24), (1.8, 1.8, 1.8), (-20.0, -20.0, -15.0), np.eye(3))
    moving = blobs(moving_grid, 3)
    network = build_network(model, LearnSettings(**TINY))
    warped = network.warp(on_grid(moving, grid)[None], ddf[None].float())[0, 0]
    expected = on_grid(Image(moving.data, moving_grid), Grid(grid.size, grid.spacing, grid.origin + t.numpy(),
                                                             grid.direction))[0]
    inner = (slice(3, -3),) * 3
    assert float((warped - expected)[inner].abs().max()) < 0.02 * float(expected.abs().max())


def test_training_loss_decreases_and_validation_is_reported(cohort, tmp_path):
    lines = []
    settings = LearnSettings(**TINY, epochs=4, seed=1)
    result = train(read_pairs_csv(cohort / "cohort.csv"), tmp_path / "model.pt", settings,
                   validation_fraction=0.25, report=lines.append)
    assert result.finished and result.model_path.is_file() and not (tmp_path / "model.pt.checkpoint").exists()
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0]
    assert all(np.isfinite(row["val_tre_mm"]) for row in result.history)
    assert any(line.startswith("epoch 4:") and "val_tre_mm" in line for line in lines)
    model = load_model(result.model_path)
    assert model.grid.size == (16, 16, 16) and model.settings.features == (4, 8, 8) and model.history


def test_same_seed_same_weights_and_resume_gives_the_same_state(cohort, tmp_path):
    pairs = read_pairs_csv(cohort / "cohort.csv")
    settings = lambda seed=0: LearnSettings(**TINY, epochs=2, seed=seed)  # noqa: E731
    kw = dict(validation_fraction=0.25, report=None, checkpoint_every=1)
    train(pairs, tmp_path / "a.pt", settings(), **kw)
    train(pairs, tmp_path / "b.pt", settings(), **kw)
    stopped = train(pairs, tmp_path / "c.pt", settings(), max_steps=4, **kw)  # 3 steps an epoch: stops mid-epoch 2
    assert not stopped.finished and stopped.steps == 4 and not (tmp_path / "c.pt").exists()
    assert (tmp_path / "c.pt.checkpoint").is_file()
    resumed = train(pairs, tmp_path / "c.pt", settings(), **kw)
    train(pairs, tmp_path / "d.pt", settings(seed=1), **kw)
    a, b, c, d = (weights(tmp_path / f"{n}.pt") for n in "abcd")
    assert resumed.finished and resumed.steps == 6
    for key in a:
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])
    assert any(not torch.equal(a[key], d[key]) for key in a)


def test_cached_fixed_features_train_the_same_weights(cohort, tmp_path, monkeypatch):
    """Each pair's fixed-image features are computed once and kept: the weights equal those of a run that
    recomputes them at every step (a cache of no values)."""
    pairs = read_pairs_csv(cohort / "cohort.csv")
    settings = lambda: LearnSettings(**TINY, epochs=2, seed=0)  # noqa: E731
    train(pairs, tmp_path / "cached.pt", settings(), validation_fraction=0.0, report=None)
    monkeypatch.setattr(train_module, "FIXED_CACHE_VALUES", 0)
    train(pairs, tmp_path / "recomputed.pt", settings(), validation_fraction=0.0, report=None)
    cached, recomputed = weights(tmp_path / "cached.pt"), weights(tmp_path / "recomputed.pt")
    for key in cached:
        torch.testing.assert_close(cached[key], recomputed[key], rtol=1e-6, atol=1e-9)


def test_impact_gradient_reaches_the_network(cohort):
    settings = LearnSettings(**TINY, regularization_weight=0.0)
    grid = ModelGrid((16, 16, 16), (2.0, 2.0, 2.0), tuple(np.eye(3).ravel()))
    network = build_network(grid, settings)
    pair = load_pair(read_pairs_csv(cohort / "cohort.csv")[0], grid)
    batch = _batch([pair], "cpu")
    terms = loss_terms(network, RegistrationLoss(settings, 3), batch, network_field(network, batch, settings, "cpu"))
    terms["loss"].backward()
    assert float(terms["reg"]) >= 0 and float(terms["impact"]) > 0
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    first = next(p for n, p in network.named_parameters() if n.startswith("unet") and n.endswith("weight"))
    assert float(first.grad.abs().sum()) > 0 and float(network.flow.weight.grad.abs().sum()) > 0


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    train(read_pairs_csv(cohort / "cohort.csv"), path, LearnSettings(**TINY, epochs=2), report=None)
    return path


def test_predict_writes_a_field_transformix_applies(cohort, trained, tmp_path):
    pytest.importorskip("itk")
    from elastix_peer import transformix_points

    out = tmp_path / "out"
    result = predict(trained, cohort / "f1.mha", cohort / "m1.mha", out, instance_steps=5)
    assert {"TransformParameters.0.txt", "DeformationFieldImage.0.mha", "result.0.mha", "predict.json"} <= set(result.outputs)
    assert result.losses["instance_last"] < result.losses["instance_first"]
    tp = out / "TransformParameters.0.txt"
    assert '(Transform "DeformationFieldTransform")' in tp.read_text()
    points = np.random.default_rng(0).uniform(-12, 12, (40, 3))
    theirs = transformix_points(tp, points, cohort / "m1.mha", tmp_path / "tx")
    np.testing.assert_allclose(theirs, map_points(result.transform, points), atol=1e-3)
    summary = evaluate(tp, cohort / "fp1.txt", cohort / "mp1.txt", fixed_image=cohort / "f1.mha",
                       moving_image=cohort / "m1.mha")
    assert np.isfinite(summary["tre"]["mean"]) and np.isfinite(summary["mae"])


def test_written_known_translation_is_applied_by_transformix(tmp_path):
    pytest.importorskip("itk")
    from elastix_peer import transformix_points

    fixed_grid = Grid((12, 10, 8), (2.0, 2.5, 3.0), (1.0, 2.0, -3.0), rotation(15))
    grid = pair_grid(ModelGrid((8, 8, 8), (3.0, 3.0, 3.0), tuple(np.eye(3).ravel())), fixed_grid)
    t = torch.tensor([1.25, -2.5, 0.75], dtype=torch.float64)
    ddf = voxel_displacement(t[:, None, None, None].expand(3, *grid.shape), grid)
    transform = field_transform(ddf, grid, fixed_grid)
    tp = write_transform_file(tmp_path / "TransformParameters.0.txt", transform, fixed_grid)
    moving = tmp_path / "moving.mha"
    write_image(blobs(fixed_grid, 0), moving)
    points = fixed_grid.voxel_points()[::37].numpy()
    np.testing.assert_allclose(transformix_points(tp, points, moving, tmp_path / "tx"), points + t.numpy(), atol=1e-3)


def test_cli_train_predict_and_bad_input(cohort, trained, tmp_path, capsys):
    assert cli_main(["predict", "--model", str(trained), "-f", str(cohort / "f2.mha"), "-m", str(cohort / "m2.mha"),
                     "-out", str(tmp_path / "p"), "-q"]) == 0
    assert (tmp_path / "p" / "TransformParameters.0.txt").is_file()
    assert cli_main(["predict", "--model", str(cohort / "cohort.csv"), "-f", str(cohort / "f2.mha"),
                     "-m", str(cohort / "m2.mha"), "-out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "not an impactreg model file" in err and "Traceback" not in err and not (tmp_path / "q").exists()
    listing = tmp_path / "images.txt"
    listing.write_text(f"{cohort / 'm0.mha'}\n{cohort / 'm1.mha'}\n")
    assert cli_main(["train", "--atlas", str(cohort / "f0.mha"), "--images", str(listing), "-o", str(tmp_path / "atlas.pt"),
                     "--features", "4", "8", "--epochs", "1", "--validation", "0", "-q"]) == 0
    assert load_model(tmp_path / "atlas.pt").grid.size == (16, 16, 16)
    assert cli_main(["train", "--pairs", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "x.pt")]) == 2
    assert "no such cohort file" in capsys.readouterr().err


@pytest.mark.parametrize("similarity", ["mi", "lncc"])
def test_intensity_similarities_for_comparison(cohort, similarity):
    settings = LearnSettings(**TINY, similarity=similarity)
    grid = ModelGrid((16, 16, 16), (2.0, 2.0, 2.0), tuple(np.eye(3).ravel()))
    network = build_network(grid, settings)
    batch = _batch([load_pair(read_pairs_csv(cohort / "cohort.csv")[0], grid)], "cpu")
    terms = loss_terms(network, RegistrationLoss(settings, 3), batch, network_field(network, batch, settings, "cpu"))
    terms["loss"].backward()
    assert similarity in terms and torch.isfinite(terms["loss"]) and float(network.flow.weight.grad.abs().sum()) > 0


def test_model_file_holds_grid_and_settings_and_refuses_other_files(tmp_path):
    from impactreg.errors import ModelError
    from impactreg.learn import save_model

    grid = ModelGrid(np.array([16, 16, 8]), np.array([2.0, 2.0, 3.0]), rotation(10).ravel())  # numpy values
    settings = LearnSettings(**TINY, similarity="lncc", dice_weight=0.5, labels=(1, 2))
    path = save_model(tmp_path / "m.pt", build_network(grid, settings), grid, settings)
    model = load_model(path)
    assert model.grid == grid and model.settings == settings
    (tmp_path / "other.pt").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not an impactreg model file"):
        load_model(tmp_path / "other.pt")


def test_two_dimensional_pairs_train_and_predict(tmp_path):
    grid = Grid((24, 20), (1.5, 1.5), (0.0, 0.0), np.eye(2))
    points = grid.voxel_points().numpy()
    rows = ["id,fixed,moving"]
    for i in range(2):
        for name, shift in (("f", 0.0), ("m", 2.0)):
            value = np.exp(-((points - [15.0 + shift, 14.0 + 2 * i]) ** 2).sum(1) / 30.0) * 100
            write_image(Image(torch.from_numpy(value.reshape(1, *grid.shape)).float(), grid), tmp_path / f"{name}{i}.mha")
        rows.append(f"p{i},f{i}.mha,m{i}.mha")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    result = train(read_pairs_csv(tmp_path / "pairs.csv"), tmp_path / "m2d.pt", LearnSettings(**TINY, epochs=1),
                   validation_fraction=0, report=None)
    assert load_model(result.model_path).grid.size == (24, 20)
    out = predict(result.model_path, tmp_path / "f0.mha", tmp_path / "m0.mha", tmp_path / "out", instance_steps=2)
    assert out.transform.dim == 2 and out.warped.grid.same_as(grid)
    assert (tmp_path / "out" / "TransformParameters.0.txt").is_file()
