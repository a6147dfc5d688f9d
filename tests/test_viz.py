"""The pictures: ``fastopt trajectories`` (PNG and GIF) and fastopt.viz, checked for content
(image size, each optimizer's colour drawn, frames that change), and the message when
matplotlib is missing."""
import sys

import numpy as np
import pytest

from fastopt.cli import main
from fastopt.cli import trajectories as traj

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")


def _rgb(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def _pixels_of(img, hex_color, tol=40):
    c = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return int(np.sum(np.abs(img - c).sum(axis=2) < tol))


def test_trajectories_png_shows_every_path_and_the_loss_curves(tmp_path, capsys):
    from fastopt.viz import _COLORS
    out = tmp_path / "rosen.png"
    algos = "sgd,momentum,nesterov,adagrad,rmsprop,adadelta,adam"
    assert main(["trajectories", "--problem", "rosenbrock", "--algos", algos, "--steps", "150",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for a in algos.split(","):
        assert a in printed
    img = _rgb(out)
    assert img.shape == (500, 1200, 3)
    left, right = img[:, :600], img[:, 600:]
    for k in range(7):
        # each optimizer's colour is drawn on the map and in the loss panel
        assert _pixels_of(left, _COLORS[k]) > 30, _COLORS[k]
        assert _pixels_of(right, _COLORS[k]) > 30, _COLORS[k]


def test_trajectories_run_returns_paths_that_differ_and_descend(tmp_path):
    paths, lines = traj.run("rosenbrock", ["sgd", "momentum", "adam", "newton"], steps=200,
                            out=str(tmp_path / "a.png"))
    assert len(lines) == 5
    for p in paths:
        np.testing.assert_array_equal(p.xs[0], [-1.2, 1.0])
        assert p.losses[-1] < p.losses[0]
    for i in range(len(paths)):
        for j in range(i + 1, len(paths)):
            n = min(len(paths[i].xs), len(paths[j].xs))
            assert np.abs(paths[i].xs[:n] - paths[j].xs[:n]).max() > 0.05
    assert paths[3].losses[-1] < 1e-20 and len(paths[3].xs) < 30        # Newton


def test_saddle_picture_separates_escapers_from_stallers(tmp_path):
    paths, _ = traj.run("saddle", ["sgd", "adagrad", "rmsprop", "adam"], steps=100, out=str(tmp_path / "s.png"))
    by = {p.algo: p for p in paths}
    # plain SGD from y = 1e-3 still hugs the ridge; the rules that rescale the gradient left it
    assert abs(by["sgd"].xs[-1, 1]) < 0.01 and by["sgd"].losses[-1] > 0
    for a in ("adagrad", "rmsprop", "adam"):
        assert abs(by[a].xs[-1, 1]) > 0.5 and by[a].losses[-1] < 0


def test_animated_gif_has_changing_frames(tmp_path):
    gif = tmp_path / "b.gif"
    assert main(["trajectories", "--problem", "booth", "--algos", "sgd,adam", "--steps", "20", "--out",
                 str(tmp_path / "b.png"), "--animate", str(gif)]) == 0
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.size == (480, 400)
        n = im.n_frames
        im.seek(0)
        first = np.asarray(im.convert("RGB")).astype(int)
        im.seek(n - 1)
        last = np.asarray(im.convert("RGB")).astype(int)
    assert n == 21                   # one frame per point: steps + 1
    assert np.abs(first - last).sum(axis=2).astype(bool).sum() > 200


def test_loss_curves_figure(tmp_path):
    from fastopt import viz
    fig = viz.loss_curves_figure({"a": ([1, 2, 3], [3.0, 2.0, 1.0]), "b": ([1, 2, 3], [2.0, 1.5, 1.2])},
                                 marks={"m": (2, 2.0, "best")})
    out = viz.save(fig, str(tmp_path / "c.png"))
    img = _rgb(out)
    assert img.shape == (450, 700, 3)
    assert _pixels_of(img, viz._COLORS[0]) > 30 and _pixels_of(img, viz._COLORS[1]) > 30


def test_bad_names_give_exit_code_2_and_a_message(tmp_path, capsys):
    assert main(["trajectories", "--algos", "sgd,adamm", "--out", str(tmp_path / "x.png")]) == 2
    assert "--algos: unknown algorithm(s) ['adamm']" in capsys.readouterr().err
    assert main(["trajectories", "--problem", "rosenbrok"]) == 2          # argparse choices
    assert main(["trajectories", "--start", "1,2,3", "--out", str(tmp_path / "x.png")]) == 2
    assert "x0 must have 2 coordinates" in capsys.readouterr().err
    assert main(["trajectories", "--start", "1,b", "--out", str(tmp_path / "x.png")]) == 2
    assert "--start must be two numbers" in capsys.readouterr().err
    assert main(["trajectories", "--steps", "0", "--out", str(tmp_path / "x.png")]) == 2
    assert "steps must be an int >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_missing_matplotlib_is_explained(monkeypatch, tmp_path, capsys):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from fastopt import viz
    with pytest.raises(ImportError, match=r"pip install 'fastopt\[plot\]'"):
        viz.require_matplotlib()
    assert main(["trajectories", "--out", str(tmp_path / "y.png")]) == 2
    assert "fastopt[plot]" in capsys.readouterr().err
    assert not (tmp_path / "y.png").exists()
