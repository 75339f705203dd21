"""Railpack's configuration, merged exactly as its code merges it.

Source: railwayapp/railpack at b5e805800e6787a4744cd944a357e29b848d38f3 (2026-08-18):

- `core/core.go` `GetConfig`: `Merge(optionsConfig, envConfig, fileConfig)`, later wins, so `railpack.json`
  beats the `RAILPACK_*` variables, which beat the CLI options. (Railpack's prose docs say the variables
  win; the code is what runs.)
- `core/core.go` `GenerateConfigFromEnvironment`: `RAILPACK_START_CMD`, `RAILPACK_INSTALL_CMD`,
  `RAILPACK_BUILD_CMD`, `RAILPACK_PACKAGES`, `RAILPACK_BUILD_APT_PACKAGES`, `RAILPACK_DEPLOY_APT_PACKAGES`;
  values are trimmed, lists split on single spaces (`core/app/environment.go`).
- `core/core.go` `GenerateConfigFromFile`: `railpack.json` at the source root, or `RAILPACK_CONFIG_FILE`
  (relative to the source); a named file that is missing fails the build, a bad one too.
- `internal/utils/merge.go` `mergeStruct`: a non-empty string replaces, a non-nil list replaces the whole
  earlier list (no spreading at this stage), maps merge key by key.
- `core/generate/context.go` `applyConfig` / `applyDeployAptPackages`, `core/plan/spread.go`
  `SpreadStrings`: only then is the merged list laid over what the provider generated, each `"..."`
  standing for the provider's list. So `"..."` in `railpack.json` spreads the *provider's* packages, never
  those of `RAILPACK_DEPLOY_APT_PACKAGES`, which the file's list has already replaced.
- Start command: the provider's default (`python main.py`, ...), then the Procfile provider, then a
  non-empty merged `deploy.startCommand` (`applyConfig`). Railway applies a service's Custom Start Command
  to the deployment over all of these (docs `deployments/start-command.md`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from emulator.model.plan import BuildError

CONFIG_FILE = "railpack.json"
SCHEMA_URL = "https://schema.railpack.com"
# hujson (Railpack's StandardizeJSON): comments and trailing commas, outside strings.
_STRING_OR_COMMENT = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/', re.S)
_STRING_OR_TRAILING_COMMA = re.compile(r'("(?:\\.|[^"\\])*")|,(?=\s*[}\]])')


@dataclass
class Config:
    """The parts of Railpack's `config.Config` the emulator acts on; None/empty is Go's zero value."""

    provider: str | None = None
    build_apt_packages: list[str] | None = None
    packages: dict[str, str] = field(default_factory=dict)
    install_cmd: str = ""  # RAILPACK_INSTALL_CMD
    build_cmd: str = ""  # RAILPACK_BUILD_CMD
    start_cmd: str = ""  # deploy.startCommand
    deploy_apt_packages: list[str] | None = None  # deploy.aptPackages
    deploy_variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Merged:
    config: Config
    config_file: str | None  # the file read, for the log line "Using config file `railpack.json`"
    ignored: tuple[str, ...] = ()  # RAILPACK_* variables the file overrode: Railpack drops them silently


def merge(*configs: Config) -> Config:
    """`config.Merge`: later configs win field by field, as `utils.MergeStructs` does."""
    result = Config()
    for config in configs:
        for item in fields(Config):
            value = getattr(config, item.name)
            if isinstance(value, dict):
                getattr(result, item.name).update(value)
            elif isinstance(value, list):  # a non-nil slice replaces, even an empty one
                setattr(result, item.name, list(value))
            elif value:  # the zero value ("" or None) never overrides
                setattr(result, item.name, value)
    return result


def spread(configured: list[str] | None, generated: list[str]) -> list[str]:
    """`plan.SpreadStrings`: nil keeps the generated list; every "..." stands for it; otherwise replaces."""
    if configured is None:
        return list(generated)
    out: list[str] = []
    for value in configured:
        out.extend(generated if value == "..." else [value])
    return out


def from_environment(variables: Mapping[str, str]) -> Config:
    def value(name: str) -> str:
        return variables.get(f"RAILPACK_{name}", "").strip()

    def listed(name: str) -> list[str] | None:
        return value(name).split(" ") if value(name) else None

    packages = listed("PACKAGES")
    return Config(
        install_cmd=value("INSTALL_CMD"),
        build_cmd=value("BUILD_CMD"),
        start_cmd=value("START_CMD"),
        packages=dict(_package(p) for p in packages) if packages else {},
        build_apt_packages=listed("BUILD_APT_PACKAGES"),
        deploy_apt_packages=listed("DEPLOY_APT_PACKAGES"),
    )


def from_file(source: Path, variables: Mapping[str, str]) -> tuple[Config, str | None]:
    """The config file's Config and its name, or an empty Config and None when there is none."""
    named = variables.get("RAILPACK_CONFIG_FILE", "").strip()
    name = named or CONFIG_FILE
    path = Path(source) / name
    if not path.is_file():
        if named:
            raise BuildError(f'config file "{path}" not found (RAILPACK_CONFIG_FILE={named}); fix the path, '
                             "which is relative to the repository root")
        return Config(), None
    try:
        doc = json.loads(standardize(path.read_text()))
    except ValueError as exc:
        raise BuildError(f"Failed to read config file `{name}`: {exc}. "
                         f"Use the following schema to validate your config file: {SCHEMA_URL}") from None
    return _config(name, doc), name


def resolve(source: Path, variables: Mapping[str, str]) -> Merged:
    """GetConfig: (CLI options, which Railway leaves empty) < RAILPACK_* variables < the config file."""
    file_config, name = from_file(source, variables)
    environment = from_environment(variables)
    ignored = tuple(f"RAILPACK_{variable}" for variable, item in _OVERRIDABLE
                    if getattr(environment, item) and getattr(file_config, item) is not None
                    and getattr(file_config, item) != "")
    return Merged(merge(Config(), environment, file_config), name, ignored)


# The variables a config file field replaces outright when it is set (`mergeStruct`).
_OVERRIDABLE = (("START_CMD", "start_cmd"), ("BUILD_APT_PACKAGES", "build_apt_packages"),
                ("DEPLOY_APT_PACKAGES", "deploy_apt_packages"))


def standardize(text: str) -> str:
    without_comments = _STRING_OR_COMMENT.sub(lambda m: m[1] or "", text)
    return _STRING_OR_TRAILING_COMMA.sub(lambda m: m[1] or "", without_comments)


def _config(name: str, doc: Any) -> Config:
    def bad(where: str, expected: str) -> BuildError:
        return BuildError(f"Failed to read config file `{name}`: {where} must be {expected}. "
                          f"Use the following schema to validate your config file: {SCHEMA_URL}")

    def strings(value: Any, where: str) -> list[str] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad(where, 'a list of strings like ["...", "git"]')
        return list(value)

    def text(value: Any, where: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise bad(where, "a string")
        return value

    def table(value: Any, where: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise bad(where, "an object")
        return value

    doc = table(doc, "the file")
    deploy = table(doc.get("deploy"), "`deploy`")
    if doc.get("steps"):
        raise BuildError(f"`steps` in `{name}` are not modelled by the emulator (it runs the Python provider's "
                         "own install only); remove them to deploy locally")
    return Config(
        provider=text(doc.get("provider"), "`provider`") or None,
        build_apt_packages=strings(doc.get("buildAptPackages"), "`buildAptPackages`"),
        packages={str(k): str(v) for k, v in table(doc.get("packages"), "`packages`").items()},
        start_cmd=text(deploy.get("startCommand"), "`deploy.startCommand`"),
        deploy_apt_packages=strings(deploy.get("aptPackages"), "`deploy.aptPackages`"),
        deploy_variables={str(k): str(v) for k, v in table(deploy.get("variables"), "`deploy.variables`").items()},
    )


def _package(spec: str) -> tuple[str, str]:
    name, _, version = spec.partition("@")
    return name, version or "latest"
