"""Config models and file loading for edgecore.yaml and cloudcore.yaml (upstream keys and defaults)."""

from common.config.base import ConfigModel, Duration
from common.config.cloudcore import CloudCoreConfig
from common.config.edgecore import EdgeCoreConfig
from common.config.loader import (
    DEFAULT_BOOTSTRAP_TOKEN_PATH,
    DEFAULT_CLOUDCORE_CONFIG_PATH,
    DEFAULT_EDGECORE_CONFIG_PATH,
    ConfigError,
    ConfigIssue,
    LoadResult,
    default_config_yaml,
    dump_yaml,
    load_cloudcore,
    load_config,
    load_edgecore,
)

__all__ = [
    "DEFAULT_BOOTSTRAP_TOKEN_PATH",
    "DEFAULT_CLOUDCORE_CONFIG_PATH",
    "DEFAULT_EDGECORE_CONFIG_PATH",
    "CloudCoreConfig",
    "ConfigError",
    "ConfigIssue",
    "ConfigModel",
    "Duration",
    "EdgeCoreConfig",
    "LoadResult",
    "default_config_yaml",
    "dump_yaml",
    "load_cloudcore",
    "load_config",
    "load_edgecore",
]
