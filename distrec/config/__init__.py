"""Typed run configuration: schema, loading with overrides, and validation."""

from distrec.config.environment import check_environment
from distrec.config.errors import ConfigError
from distrec.config.load import config_from_dict, dump_config, load_config, load_data_config
from distrec.config.metric_names import MetricName, parse_metric
from distrec.config.schema import DomainConfig, RunConfig

__all__ = [
    "ConfigError",
    "DomainConfig",
    "MetricName",
    "RunConfig",
    "check_environment",
    "config_from_dict",
    "dump_config",
    "load_config",
    "load_data_config",
    "parse_metric",
]
