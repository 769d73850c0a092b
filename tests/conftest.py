"""Shared test settings and fixtures."""
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cifar_subset(tmp_path_factory):
    """``cifar_subset(n_train, n_test)``: a tiny real subset of ../shared/data/cifar10-jpeg (or the
    embedded sample without ../shared), n_train / n_test images per class, in a fresh folder."""
    shared = REPO.parent / "shared" / "data" / "cifar10-jpeg"
    src = shared if shared.is_dir() else REPO / "data" / "cifar10-sample"

    def copy(n_train: int, n_test: int) -> Path:
        dst = tmp_path_factory.mktemp("cifar-tiny")
        for split, n in (("train", n_train), ("test", n_test)):
            for c in sorted((src / split).iterdir()):
                (dst / split / c.name).mkdir(parents=True)
                for f in sorted(c.iterdir())[:n]:
                    shutil.copy(f, dst / split / c.name / f.name)
        return dst
    return copy


@pytest.fixture(scope="module")
def cifar_root(cifar_subset):
    """12 train / 6 test real CIFAR-10 images per class."""
    return cifar_subset(12, 6)


@pytest.fixture(autouse=True, scope="session")
def _plain_config_text():
    """mmengine formats the whole config with yapf several times per Runner (over a second each on
    2 cores); tests do not read that text, so a plain repr keeps the suite fast."""
    from mmengine.config import Config
    original = Config.pretty_text
    Config.pretty_text = property(lambda self: repr(self.to_dict()))
    yield
    Config.pretty_text = original
