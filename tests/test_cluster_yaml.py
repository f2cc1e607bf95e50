"""cluster.yaml: valid for the installed Ray's launcher (its own JSON schema, offline), and
holding the properties xlt relies on."""

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT

CLUSTER = ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_valid_against_the_ray_launcher_schema(config):
    jsonschema = pytest.importorskip("jsonschema")
    autoscaler = pytest.importorskip("ray.autoscaler")
    schema = json.loads((Path(autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(config)
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(config)
    prepared = prepare_config(config)  # merged with the provider's defaults, as `ray up` does
    validate_config(prepared)


def test_trial_drivers_stay_on_the_head(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("TRAIN_DRIVER", 0) >= 1
    for name, t in types.items():
        if name != config["head_node_type"]:
            assert "TRAIN_DRIVER" not in t["resources"], name
            assert t["node_config"]["InstanceType"].startswith(("g", "p")), name  # GPU workers
    assert "InstanceMarketOptions" not in head["node_config"]  # the head is not spot


def test_nothing_open_to_the_internet(config):
    assert "0.0.0.0" not in json.dumps(config)  # (the comments may mention it)
    for name, t in config["available_node_types"].items():
        # an own security group: Ray's default one would open SSH to 0.0.0.0/0
        assert t["node_config"].get("SecurityGroupIds"), name
    assert "security_group" not in config["provider"]
    starts = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts


def test_nodes_install_xlt_and_pin_ray(config):
    import ray

    setup = "\n".join(config["setup_commands"])
    assert "torch==" in setup and "-e ~/xlt" in setup
    assert f"ray[default,tune,train]=={ray.__version__}" in setup  # client and cluster must match
    assert config["file_mounts"].get("~/xlt") == "."


def test_every_node_and_shell_uses_rays_token_auth_with_a_token_from_home(config):
    for cmds in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = next(c for c in cmds if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in start.split("ray start")[0], start
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"  # the user's, not the repo's
    assert "export RAY_AUTH_MODE=token" in "\n".join(config["setup_commands"])  # `xlt run` on a node
    assert not (ROOT / ".ray").exists()
