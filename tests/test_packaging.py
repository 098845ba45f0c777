"""What `pip install onecycle` (not -e) ships: the presets and the bundled data travel inside the package."""

import re
import shutil
import subprocess
import sys
import zipfile

from conftest import REPO


def test_the_wheel_carries_the_presets_and_the_bundled_sample(tmp_path):
    # built from a copy: setuptools leaves build/ beside the sources, and the checkout stays clean. Only what
    # the wheel is made of is copied: a checkout also holds venvs (scripts/floor.sh's .venv-floor is 5 GB)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("onecycle_cli", "configs"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(src)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    wheel = next(tmp_path.glob("onecycle-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for preset in ("cifar", "mnist", "mnist_sample", "folder"):
        assert f"onecycle_cli/configs/{preset}.yaml" in names
    assert "onecycle_cli/assets/mnist_sample.npz" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "onecycle = onecycle_cli.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_floor_ci_tests_is_the_floor_pyproject_declares():
    # scripts/floor.sh runs the suite on the oldest torch and torchvision that pyproject.toml accepts: raising
    # one without the other would test a floor nobody declared, or declare one nobody tests
    declared = dict(re.findall(r'"(torch|torchvision)>=([\d.]+)"', (REPO / "pyproject.toml").read_text()))
    constraints = (REPO / "scripts" / "floor-constraints.txt").read_text()
    pinned = dict(re.findall(r"^(torch|torchvision)==([\d.]+)$", constraints, re.M))
    assert declared.keys() == pinned.keys() == {"torch", "torchvision"}
    for name, floor in declared.items():
        assert pinned[name].split(".")[:2] == floor.split(".")[:2], (name, floor, pinned[name])
