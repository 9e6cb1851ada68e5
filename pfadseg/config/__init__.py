"""params.yaml -> typed, validated, frozen config objects: :mod:`.schema` (what is valid), :mod:`.loading` (read,
override, upgrade, validate; errors name the file, line and key) and :mod:`.scoping` (the params a stage may
read)."""

from pfadseg.config.loading import (
    DEFAULT_PARAMS,
    apply_overrides,
    config_from_dict,
    load_config,
    profile_overrides,
    read_params,
    upgrade_stored_config,
)
from pfadseg.config.schema import (
    STUDENT_SAFE_BATCH,
    ADPSConfig,
    ADPSTrainConfig,
    ArchiveConfig,
    ArchiveLimitsConfig,
    AugmentConfig,
    Backbone,
    BankConfig,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    ProceduralTexturesConfig,
    RCMConfig,
    SegTrainConfig,
    StudentTrainConfig,
    SyntheticDataConfig,
    TrainConfig,
)
from pfadseg.config.scoping import ParamView, UndeclaredParamError, scoped_config, select_params

__all__ = [
    "DEFAULT_PARAMS", "STUDENT_SAFE_BATCH", "ADPSConfig", "ADPSTrainConfig", "ArchiveConfig", "ArchiveLimitsConfig",
    "AugmentConfig", "Backbone", "BankConfig", "Config", "ConfigError", "DataConfig", "EvalConfig", "ModelConfig",
    "ParamView", "ProceduralTexturesConfig", "RCMConfig", "SegTrainConfig", "StudentTrainConfig",
    "SyntheticDataConfig", "TrainConfig", "UndeclaredParamError", "apply_overrides", "config_from_dict",
    "load_config", "profile_overrides", "read_params", "scoped_config", "select_params", "upgrade_stored_config",
]
