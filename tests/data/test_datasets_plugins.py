"""Datasets are plug-ins (finessl/data/base.py): one file registers a dataset by name,
and ``DATA.NAME`` finds it, whether the file is in finessl/data/ or named by the
``plugins`` config key."""
from __future__ import annotations

import ast
import json
import os

import numpy as np
import pytest

import finessl.data
from conftest import main_inprocess, tiny_args
from finessl.data import datasets, loaders
from finessl.data.base import DATASETS, ArrayImages, Dataset
from finessl.errors import UserError
from finessl.config_load import load_config

# A whole dataset in one file, as a user writes it: ten classes of generated images,
# made in memory (no files), with a config key of its own.
TOY_PLUGIN = '''
"""Toy shapes: class k is a ground of colour k with a grey square at a random place
(no files needed)."""
import numpy as np

from finessl.config import declare, positive
from finessl.data.base import ArrayImages, Dataset, register

declare("TOYSHAPES.PER_CLASS", 30, "toyshapes: training images per class", check=positive)

COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (250, 250, 250), (0, 0, 0)]


def shapes(per_class, seed):
    """(images, labels): per_class 32x32 images of each class, shuffled."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(len(COLOURS)).repeat(per_class))
    images = np.array(COLOURS, np.float64)[labels][:, None, None, :]
    images = images + rng.normal(0, 20, (len(labels), 32, 32, 3))
    for image in images:
        side = rng.integers(8, 17)
        y, x = rng.integers(0, 33 - side, 2)
        image[y:y + side, x:x + side] = 128
    return ArrayImages(images.clip(0, 255).astype(np.uint8)), labels.tolist()


@register("toyshapes", "toy-shapes")
class ToyShapes(Dataset):
    title = "Toy shapes"
    stats = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    def load(self, root, download):
        train_images, train_targets = shapes(self.setting("TOYSHAPES.PER_CLASS"), seed=0)
        test_images, test_targets = shapes(10, seed=1)
        return self.raw(train_targets=train_targets, test_targets=test_targets,
                        classnames=[f"colour {k}" for k in range(len(COLOURS))],
                        train_images=train_images, test_images=test_images)

    def classnames(self, root):
        return [f"colour {k}" for k in range(len(COLOURS))]
'''

# The paper's datasets and the offline ones, with the unlabeled pool each one's released
# rule takes; the registry may hold more (a plug-in's), which the tests enumerate.
POOLS = {"CIFAR10": "num_u", "CIFAR100": "num_u", "CIFAR100_OpenSet": "num_u", "FOOD101": "all",
         "FashionMNIST": "num_u", "ImageFolder": "num_u", "Semi_Aves": "num_u",
         "semi_ImageNet": "num_u"}


def test_unknown_name_is_one_line_naming_key_value_and_choices(tmp_path):
    for call in (lambda: load_config(None, ["DATA.NAME", "mnist"]),
                 lambda: datasets.load_dataset("mnist", str(tmp_path), download=False),
                 lambda: datasets.dataset_stats("mnist"),
                 lambda: datasets.dataset_classnames("mnist", str(tmp_path))):
        with pytest.raises(UserError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "DATA.NAME" in message and "'mnist'" in message
        assert all(name in message for name in DATASETS.names()), message


@pytest.mark.parametrize("spelling, name", [
    ("CIFAR10", "CIFAR10"), ("cifar-10", "CIFAR10"), ("cifar10", "CIFAR10"),
    ("Cifar-100", "CIFAR100"), ("CIFAR_100", "CIFAR100"), ("FOOD101", "FOOD101"),
    ("food-101", "FOOD101"), ("Food_101", "FOOD101"), ("FashionMNIST", "FashionMNIST"),
    ("fashion_mnist", "FashionMNIST"), ("fashion-mnist", "FashionMNIST"),
    ("ImageFolder", "ImageFolder"), ("image_folder", "ImageFolder"), ("folder", "ImageFolder"),
])
def test_every_spelling_finds_its_dataset(spelling, name):
    assert DATASETS.get(spelling).name == name
    cfg = load_config(None, ["DATA.NAME", spelling])  # the config accepts it too
    assert cfg.DATA.NAME == spelling


def test_built_in_datasets_are_registered_with_their_rules():
    assert set(POOLS) <= set(DATASETS.names())
    assert {n: DATASETS.get(n).unlabeled_pool for n in POOLS} == POOLS
    assert all(DATASETS.get(n).unlabeled_pool in ("num_u", "all") for n in DATASETS.names())
    assert datasets.dataset_stats("ImageFolder") == datasets.dataset_stats("x", "clip")


@pytest.fixture
def scratch_registry(monkeypatch):
    """DATASETS as it is, restored after the test (a dataset registered in it goes)."""
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))
    return DATASETS


def test_a_registered_class_is_loaded_split_and_normalised(scratch_registry, tmp_path):
    @scratch_registry.register("stripes")
    class Stripes(Dataset):
        title = "Stripes"
        stats = ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
        unlabeled_pool = "all"

        def load(self, root, download):
            images = ArrayImages(np.zeros((12, 8, 8, 3), np.uint8))
            return self.raw(train_targets=[0, 1, 2] * 4, test_targets=[0, 1, 2] * 4,
                            classnames=["a", "b", "c"], train_images=images,
                            test_images=images)

    assert "stripes" in DATASETS.names()  # what the tests above enumerate
    with pytest.raises(UserError, match="Stripes|stripes"):
        load_config(None, ["DATA.NAME", "mnist"])  # named among the choices
    assert datasets.dataset_stats("Stripes") == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert datasets.dataset_classnames("STRIPES", str(tmp_path)) == ["a", "b", "c"]
    cfg = load_config(None, ["DATA.NAME", "stripes", "DATA.DATAPATH", str(tmp_path),
                             "DATA.NUM_L", "1", "DATA.CUTOUT", "4"])  # 8 px views
    bundle = loaders.build_data(cfg, 8, str(tmp_path))
    assert (bundle.mean, bundle.std) == Stripes.stats
    assert bundle.labeled_idx == [0, 1, 2] and bundle.unlabeled_idx == list(range(12))
    split = json.load(open(tmp_path / "split.json"))
    assert split["meta"]["dataset"] == "Stripes" and split["meta"]["UNLABELED"] == "all"


def _imports(path: str) -> set[str]:
    """The finessl.data modules that the module at ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found |= {n.split(".")[2] for n in names if n.startswith("finessl.data.")}
    return found


def test_data_modules_import_only_lower_ones():
    folder = os.path.dirname(finessl.data.__file__)
    graph = {f[:-3]: _imports(os.path.join(folder, f))
             for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py"}
    assert graph["base"] == set()
    for name in ("cifar", "food101", "fashion_mnist", "folder"):  # datasets: base only
        assert graph[name] == {"base"}, name
    assert graph["datasets"] == {"base"}  # by name, through the registry
    done: set[str] = set()
    while len(done) < len(graph):  # peel modules whose imports are all peeled: no cycle
        ready = {m for m, deps in graph.items() if m not in done and deps <= done}
        assert ready, f"import cycle among {sorted(set(graph) - done)}"
        done |= ready


@pytest.mark.slow  # trains 3 short epochs
def test_a_plugin_file_trains_through_main(tmp_path, forget_plugins, figures_not_rasterised):
    plugin = tmp_path / "toyshapes.py"
    plugin.write_text(TOY_PLUGIN)
    out = str(tmp_path / "run")
    args = tiny_args(str(tmp_path), out, **{"DATA.NAME": "toyshapes",
                                            "TOYSHAPES.PER_CLASS": 40})
    code, _, err = main_inprocess(["plugins", str(plugin), *args])
    assert code == 0, err
    result = json.load(open(os.path.join(out, "results.json")))
    assert result["last_top1"] >= 0.3, result  # 10 classes: chance is 0.1
    split = json.load(open(os.path.join(out, "split.json")))
    assert split["meta"]["dataset"] == "Toy shapes"
    assert split["labeled_per_class"] == [4] * 10 and split["unlabeled_per_class"] == [40] * 10
