"""Configuration: every default in default.yaml, validated by schema.py, loaded by load.py."""

from hydradet.config.load import ConfigError, dump_config, load_config
from hydradet.config.schema import Config, HeadConfig, ModelConfig, SourceConfig
from hydradet.config.train_schema import TrainConfig

__all__ = [
    "Config",
    "ConfigError",
    "HeadConfig",
    "ModelConfig",
    "SourceConfig",
    "TrainConfig",
    "dump_config",
    "load_config",
]
