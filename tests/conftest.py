"""Shared test settings."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _plain_config_text():
    """mmengine formats the whole config with yapf several times per Runner (over a second each on
    2 cores); tests do not read that text, so a plain repr keeps the suite fast."""
    from mmengine.config import Config
    original = Config.pretty_text
    Config.pretty_text = property(lambda self: repr(self.to_dict()))
    yield
    Config.pretty_text = original
