"""Typed readers for settings that come from the environment.

Each reader refuses a malformed value with an `ImproperlyConfigured` that names the variable and
says what it expects, so a deployment fails at start-up instead of at the first request.
A secret may also come from a file: `NAME_FILE=/run/secrets/name` is read when `NAME` is unset.
"""

import ipaddress
import os
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    value = os.environ.get(name)
    if value is not None:
        return value
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as error:
            raise ImproperlyConfigured(f"{name}_FILE={path} cannot be read: {error.strerror}") from error
    return default


def env_bool(name: str, default: bool = False) -> bool:
    raw = env_str(name, "1" if default else "0").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = env_str(name, str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum of {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} is above the maximum of {maximum}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_url(name: str, default: str = "", *, schemes: tuple[str, ...]) -> str:
    value = env_str(name, default).strip()
    if not value:
        return value
    scheme = urlsplit(value).scheme
    if scheme not in schemes:
        raise ImproperlyConfigured(f"{name} must start with one of {', '.join(s + '://' for s in schemes)}")
    return value


def env_rate(name: str, default: str) -> tuple[int, int]:
    """A rate written COUNT/SECONDS, such as 600/60."""
    raw = env_str(name, default).strip()
    count, slash, seconds = raw.partition("/")
    if not (slash and count.isdigit() and seconds.isdigit() and int(count) > 0 and int(seconds) > 0):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a rate: write COUNT/SECONDS, such as 600/60")
    return int(count), int(seconds)


def env_choice(name: str, default: str, *, choices: tuple[str, ...]) -> str:
    value = env_str(name, default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(choices)}")
    return value


def env_networks(name: str, default: str = "") -> tuple:
    """Address ranges (`10.0.0.0/8,127.0.0.1`); a bare address is a range of one."""
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in env_list(name, default))
    except ValueError as error:
        raise ImproperlyConfigured(
            f"{name} must be addresses or ranges, comma-separated (10.0.0.0/8,::1): {error}"
        ) from None


def env_proxies(name: str) -> int | tuple:
    """How many proxies stand in front (a count), or the address ranges they have; 0 trusts none."""
    value = env_str(name).strip()
    if not value:
        return 0
    if value.isdigit():
        return int(value)
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in env_list(name))
    except ValueError as error:
        raise ImproperlyConfigured(
            f"{name} must be a number of proxies (1 for one nginx in front) or their addresses and ranges, "
            f"comma-separated (10.0.0.0/8,127.0.0.1): {error}"
        ) from None
