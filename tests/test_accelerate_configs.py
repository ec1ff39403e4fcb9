"""companion/accelerate_configs: every file loads with accelerate's own loader and says what its name says."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import launch_command_parser
from accelerate.utils import DistributedType

CONFIGS = Path(__file__).parents[1] / "companion" / "accelerate_configs"
EXPECTED = {  # file: (distributed_type, use_cpu, the section with its settings, settings it must hold)
    "multi_gpu.yaml": (DistributedType.MULTI_GPU, False, None, {}),
    "fsdp2.yaml": (DistributedType.FSDP, False, "fsdp_config",
                   {"fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, False, "deepspeed_config", {"zero_stage": 2}),
    "deepspeed_zero3.yaml": (DistributedType.DEEPSPEED, False, "deepspeed_config", {"zero_stage": 3}),
    "cpu_2proc.yaml": (DistributedType.MULTI_GPU, True, None, {}),  # MULTI_GPU: launched with torchrun
}


def test_every_shipped_file_is_tested():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerate(name):
    kind, use_cpu, section, settings = EXPECTED[name]
    config = load_config_from_file(str(CONFIGS / name))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == kind
    assert config.num_processes == 2 and config.num_machines == 1
    assert config.use_cpu is use_cpu
    assert config.mixed_precision == "no"  # the trainer's bf16/fp16 decides (a T4 has no bf16)
    if section:
        values = getattr(config, section)
        assert {k: values.get(k) for k in settings} == settings
        # `accelerate launch` copies each entry to the option of the same name: it must exist
        options = {a.dest for a in launch_command_parser()._actions}
        assert set(values) <= options, set(values) - options


def test_fsdp2_config_builds_accelerate_s_fsdp2_plugin(monkeypatch):
    """What `accelerate launch` hands the processes (environment variables) makes a valid FSDP2 plugin."""
    from accelerate.commands.launch import _validate_launch_command
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / "fsdp2.yaml"), "train.py"])
    args, _, _ = _validate_launch_command(args)
    for key, value in prepare_multi_gpu_env(args).items():
        if key.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"
