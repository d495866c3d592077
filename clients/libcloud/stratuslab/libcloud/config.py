"""The user configuration the StratusLab command line client reads, read the same way.

The INI file ``~/.stratuslab/stratuslab-user.cfg`` (or ``$STRATUSLAB_CONFIG``) has a
``[default]`` section and named sections; a named section's values win over ``[default]``'s,
and ``STRATUSLAB_*`` environment variables win over the file. The section is the one the
driver is given, else ``$STRATUSLAB_USER_CONFIG_SECTION``, else ``selected_section`` of
``[default]``. Endpoints are ``host``, ``host:port`` or ``http(s)://`` URLs (HTTPS and port
8440 unless given), or a comma-separated list of them (the controller nodes of one cloud);
``ca_certificate`` names the site CA the controller's certificate must chain to (else the
system's trusted roots).
"""

import configparser
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional
from urllib.parse import urlsplit

DEFAULT_SECTION = "default"
DEFAULT_PORT = 8440
RELATIVE_PATH = os.path.join(".stratuslab", "stratuslab-user.cfg")
DEFAULT_PUBLIC_KEY = os.path.join(".ssh", "id_rsa.pub")

#: Environment variables over the file's keys, as the command line client has them.
ENVIRONMENT = {
    "endpoint": "STRATUSLAB_ENDPOINT",
    "username": "STRATUSLAB_USERNAME",
    "password": "STRATUSLAB_PASSWORD",
    "pdisk_endpoint": "STRATUSLAB_PDISK_ENDPOINT",
    "pdisk_username": "STRATUSLAB_PDISK_USERNAME",
    "pdisk_password": "STRATUSLAB_PDISK_PASSWORD",
    "marketplace_endpoint": "STRATUSLAB_MARKETPLACE_ENDPOINT",
    "user_public_key_file": "STRATUSLAB_KEY",
    "ca_certificate": "STRATUSLAB_CA_CERTIFICATE",
}


class ConfigError(Exception):
    """The configuration cannot be used (a missing section, no endpoint, a bad endpoint)."""


@dataclass(frozen=True)
class Endpoint:
    """One controller node: scheme, host, port and an optional path prefix."""

    secure: bool
    host: str
    port: int
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> "Endpoint":
        text = text.strip()
        if not text:
            raise ConfigError("the endpoint is empty")
        if "://" not in text:
            text = "https://" + text
        parts = urlsplit(text)
        if parts.scheme.lower() not in ("http", "https"):
            raise ConfigError(f"endpoint {text!r}: unsupported scheme (use http or https)")
        if parts.username or parts.password:
            raise ConfigError(
                f"endpoint {text!r}: put credentials in username and password, not in the URL"
            )
        if parts.query or parts.fragment:
            raise ConfigError(f"endpoint {text!r}: a query or fragment is not allowed")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError as e:
            raise ConfigError(f"endpoint {text!r}: invalid port") from e
        if not parts.hostname:
            raise ConfigError(f"endpoint {text!r}: invalid host name")
        return cls(
            secure=parts.scheme.lower() == "https",
            host=parts.hostname,
            port=port,
            path=parts.path.rstrip("/"),
        )


@dataclass
class UserConfig:
    """The settings a driver runs with."""

    path: str
    section: Optional[str]
    endpoints: List[Endpoint]
    username: Optional[str]
    password: Optional[str]
    public_key_file: Optional[str]
    #: The site CA file the controller's certificate must chain to (None: the system's roots).
    ca_certificate: Optional[str] = None
    values: Dict[str, str] = field(default_factory=dict)


def config_path(environ=None) -> str:
    environ = os.environ if environ is None else environ
    if environ.get("STRATUSLAB_CONFIG"):
        return environ["STRATUSLAB_CONFIG"]
    home = environ.get("HOME")
    if not home:
        raise ConfigError("HOME is not set: name the configuration file with STRATUSLAB_CONFIG")
    return os.path.join(home, RELATIVE_PATH)


def read_sections(path: str) -> Dict[str, Dict[str, str]]:
    """Section name to (lower-case key to value); a missing file is empty. Keys written before
    any section header belong to ``[default]``, as for the command line client."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    parser = configparser.RawConfigParser(default_section="\0none", strict=False)
    parser.optionxform = str.lower
    try:
        parser.read_string(text)
    except configparser.MissingSectionHeaderError:
        parser.read_string(f"[{DEFAULT_SECTION}]\n" + text)
    except configparser.Error as e:
        raise ConfigError(f"cannot parse the configuration file {path}: {e}") from e
    return {
        name: {k: v.strip() for k, v in parser.items(name) if v.strip()}
        for name in parser.sections()
    }


def sections(environ=None) -> List[str]:
    """The sections of the configuration file, ``default`` first."""
    names = list(read_sections(config_path(environ)))
    return sorted(names, key=lambda n: (n != DEFAULT_SECTION, names.index(n)))


def load(section: Optional[str] = None, environ=None) -> UserConfig:
    """Resolves the settings of `section` (see the module's documentation for the order)."""
    environ = os.environ if environ is None else environ
    path = config_path(environ)
    file = read_sections(path)
    default = file.get(DEFAULT_SECTION, {})
    chosen = (
        section
        or environ.get("STRATUSLAB_USER_CONFIG_SECTION")
        or default.get("selected_section")
    )
    if chosen == DEFAULT_SECTION:
        chosen = None
    if chosen is not None and chosen not in file:
        raise ConfigError(f"section [{chosen}] not found in the configuration file {path}")
    values = dict(default)
    values.update(file.get(chosen, {}) if chosen else {})
    for key, variable in ENVIRONMENT.items():
        if environ.get(variable):
            values[key] = environ[variable]
    if not values.get("endpoint"):
        raise ConfigError(
            f"no cloud endpoint configured: run stratus-copy-config and set endpoint in "
            f"{path}, or set STRATUSLAB_ENDPOINT"
        )
    endpoints = [Endpoint.parse(e) for e in values["endpoint"].split(",") if e.strip()]
    key = values.get("user_public_key_file")
    if not key and environ.get("HOME"):
        key = os.path.join(environ["HOME"], DEFAULT_PUBLIC_KEY)
    return UserConfig(
        path=path,
        section=chosen,
        endpoints=endpoints,
        username=values.get("username"),
        password=values.get("password"),
        public_key_file=key,
        ca_certificate=values.get("ca_certificate"),
        values=values,
    )
