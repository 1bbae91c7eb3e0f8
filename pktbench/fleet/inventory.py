"""The hosts of a fleet: our TOML inventory or an Ansible one (INI or YAML).

Owns: reading an inventory file into Host records, and selecting a group.

TOML: `[[hosts]]` tables with `name`, `address` (for SSH), `port` (22),
`user`, `key` (a private key file), `test_address` (on the network under
test; default `address`), `pktbench` (the command on that host, shell words;
default `pktbench`), `python` (the interpreter `--install` makes a venv with;
default `python3`) and `groups` (a list of names). Ansible: `ansible_host`,
`ansible_port`, `ansible_user`, `ansible_ssh_private_key_file`,
`ansible_python_interpreter`, plus our `pktbench_test_address` and
`pktbench_command` host variables; groups as Ansible defines them (children
included).

Every error names the file, the host and the key.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pktbench.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_TOML_KEYS = {"name", "address", "port", "user", "key", "test_address", "pktbench", "python",
              "groups"}


@dataclass(frozen=True)
class Host:
    """One fleet host: how to reach it over SSH and where to send it traffic."""

    name: str
    address: str
    port: int = 22
    user: str | None = None
    key: str | None = None
    test_address: str = ""
    pktbench: str = "pktbench"
    groups: tuple[str, ...] = field(default_factory=tuple)
    python: str = "python3"  # the interpreter --install makes the venv with (shell words)

    @property
    def target(self) -> str:
        """Its address on the network under test, as pktbench's HOST takes it."""
        addr = self.test_address or self.address
        return f"[{addr}]" if ":" in addr else addr

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "port": self.port,
                "user": self.user, "key": self.key,
                "test_address": self.test_address or self.address,
                "pktbench": self.pktbench, "python": self.python,
                "groups": list(self.groups)}


def _fail(source: str, host: str | None, key: str | None, text: str) -> ConfigError:
    where = source
    if host is not None:
        where += f": host {host}"
    if key is not None:
        where += f": key '{key}'"
    return ConfigError(f"{where}: {text}")


def _host(source: str, name: Any, values: Mapping[str, Any], *, address_key: str,
          port_key: str, user_key: str, key_key: str, test_key: str, cmd_key: str,
          python_key: str, groups: Iterable[str]) -> Host:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _fail(source, str(name), "name", "must be 1-63 letters, digits, '.', '_' or '-'")

    def text(key: str, default: str | None) -> str | None:
        value = values.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise _fail(source, name, key, f"must be a non-empty string (got {value!r})")
        return value.strip()

    address = text(address_key, name if address_key.startswith("ansible") else None)
    if address is None:
        raise _fail(source, name, address_key, "is missing (the address SSH connects to)")
    raw_port = values.get(port_key, 22)
    try:
        port = int(raw_port)
        if isinstance(raw_port, bool) or isinstance(raw_port, float):
            raise ValueError
    except (TypeError, ValueError):
        raise _fail(source, name, port_key, f"must be a port number (got {raw_port!r})") from None
    if not 1 <= port <= 65535:
        raise _fail(source, name, port_key, f"must be 1..65535 (got {port})")
    key = text(key_key, None)
    if key is not None:
        key = os.path.expanduser(key)
        if not Path(key).is_file():
            raise _fail(source, name, key_key, f"private key file {key} not found")
    command = text(cmd_key, "pktbench") or "pktbench"
    python = text(python_key, "python3") or "python3"
    for field_key, words in ((cmd_key, command), (python_key, python)):
        try:
            shlex.split(words)
        except ValueError as exc:
            raise _fail(source, name, field_key, f"is not a command line: {exc}") from None
    return Host(name=name, address=address, port=port, user=text(user_key, None), key=key,
                test_address=text(test_key, None) or address, pktbench=command,
                groups=tuple(groups), python=python)


def _from_toml(source: str, text: str) -> list[Host]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"hosts"})
    if unknown:
        raise _fail(source, None, unknown[0], "unknown top-level key (expected [[hosts]])")
    entries = doc.get("hosts")
    if not isinstance(entries, list) or not entries:
        raise _fail(source, None, "hosts", "needs at least one [[hosts]] table")
    hosts = []
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        label = name if isinstance(name, str) else f"#{i + 1}"
        if not isinstance(entry, dict):
            raise _fail(source, label, None, "must be a table")
        extra = sorted(set(entry) - _TOML_KEYS)
        if extra:
            raise _fail(source, label, extra[0],
                        f"unknown key (known: {', '.join(sorted(_TOML_KEYS))})")
        if name is None:
            raise _fail(source, label, "name", "is missing")
        groups = entry.get("groups", [])
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise _fail(source, label, "groups", "must be a list of group names")
        hosts.append(_host(source, name, entry, address_key="address", port_key="port",
                           user_key="user", key_key="key", test_key="test_address",
                           cmd_key="pktbench", python_key="python", groups=groups))
    return hosts


_ANSIBLE = {"address_key": "ansible_host", "port_key": "ansible_port",
            "user_key": "ansible_user", "key_key": "ansible_ssh_private_key_file",
            "test_key": "pktbench_test_address", "cmd_key": "pktbench_command",
            "python_key": "ansible_python_interpreter"}


def _ansible_hosts(source: str, hostvars: dict[str, dict[str, Any]],
                   members: dict[str, set[str]], group_vars: dict[str, dict[str, Any]],
                   children: dict[str, set[str]]) -> list[Host]:
    def closure(group: str, seen: set[str]) -> set[str]:
        if group in seen:
            return set()
        seen.add(group)
        found = set(members.get(group, ()))
        for child in children.get(group, ()):
            found |= closure(child, seen)
        return found

    groups_of: dict[str, set[str]] = {name: set() for name in hostvars}
    all_groups = set(members) | set(children) | set(group_vars)
    for group in all_groups:
        for name in closure(group, set()):
            groups_of.setdefault(name, set()).add(group)
    hosts = []
    for name in hostvars:
        merged: dict[str, Any] = {}
        # Group variables first, the host's own win (as in Ansible).
        for group in sorted(groups_of[name]):
            merged.update(group_vars.get(group, {}))
        merged.update(hostvars[name])
        hosts.append(_host(source, name, merged, groups=sorted(groups_of[name] - {"all"}),
                           **_ANSIBLE))
    return hosts


def _from_ini(source: str, text: str) -> list[Host]:
    hostvars: dict[str, dict[str, Any]] = {}
    members: dict[str, set[str]] = {}
    children: dict[str, set[str]] = {}
    group_vars: dict[str, dict[str, Any]] = {}
    section, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            head = line[1:-1].strip()
            section, _, suffix = head.partition(":")
            kind = {"": "hosts", "children": "children", "vars": "vars"}.get(suffix, "")
            if not kind:
                raise ConfigError(f"{source}: line {number}: unknown section [{head}]")
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ConfigError(f"{source}: line {number}: {exc}") from None
        if not words:
            continue
        if kind == "children":
            children.setdefault(section, set()).add(words[0])
            continue
        if kind == "vars":
            key, sep, value = line.partition("=")
            if not sep:
                raise ConfigError(f"{source}: line {number}: expected KEY=VALUE in "
                                  f"[{section}:vars]")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            group_vars.setdefault(section, {})[key.strip()] = value
            continue
        name, settings = words[0], words[1:]
        values = hostvars.setdefault(name, {})
        for setting in settings:
            key, sep, value = setting.partition("=")
            if not sep:
                raise _fail(source, name, setting, f"line {number}: expected KEY=VALUE")
            values[key] = value
        members.setdefault(section, set()).add(name)
    if not hostvars:
        raise ConfigError(f"{source}: no hosts in this Ansible inventory")
    return _ansible_hosts(source, hostvars, members, group_vars, children)


def _from_yaml(source: str, text: str) -> list[Host]:
    try:
        import yaml  # type: ignore[import-untyped]
    except ModuleNotFoundError:
        raise ConfigError(f"{source}: a YAML inventory needs PyYAML "
                          "(pip install 'pktbench[fleet]')") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: a YAML inventory is a mapping of groups (e.g. all:)")
    hostvars: dict[str, dict[str, Any]] = {}
    members: dict[str, set[str]] = {}
    children: dict[str, set[str]] = {}
    group_vars: dict[str, dict[str, Any]] = {}

    def walk(group: str, body: Any) -> None:
        if body is None:
            return
        if not isinstance(body, dict):
            raise _fail(source, None, group, "a group must be a mapping (hosts:, children:, vars:)")
        hosts = body.get("hosts") or {}
        if not isinstance(hosts, dict):
            raise _fail(source, None, f"{group}.hosts", "must be a mapping of host names")
        for name, values in hosts.items():
            if values is not None and not isinstance(values, dict):
                raise _fail(source, str(name), None, "host variables must be a mapping")
            hostvars.setdefault(str(name), {}).update(values or {})
            members.setdefault(group, set()).add(str(name))
        vars_ = body.get("vars") or {}
        if not isinstance(vars_, dict):
            raise _fail(source, None, f"{group}.vars", "must be a mapping")
        group_vars.setdefault(group, {}).update(vars_)
        kids = body.get("children") or {}
        if not isinstance(kids, dict):
            raise _fail(source, None, f"{group}.children", "must be a mapping of groups")
        for child, child_body in kids.items():
            children.setdefault(group, set()).add(str(child))
            walk(str(child), child_body)

    for group, body in doc.items():
        walk(str(group), body)
    if not hostvars:
        raise ConfigError(f"{source}: no hosts in this Ansible inventory")
    return _ansible_hosts(source, hostvars, members, group_vars, children)


def load_inventory(path: str | os.PathLike[str], *, group: str | None = None) -> list[Host]:
    """Read an inventory; with `group`, only that group's hosts.

    The format follows the extension: .toml is ours, .yml/.yaml Ansible YAML,
    anything else Ansible INI.

    Raises:
        ConfigError: unreadable file, bad syntax, a bad or missing key (named
            with its host), duplicate names, an unknown group.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"inventory {source} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"inventory {source} cannot be read: {exc}") from None
    suffix = Path(path).suffix.lower()
    if suffix == ".toml":
        hosts = _from_toml(source, text)
    elif suffix in (".yml", ".yaml"):
        hosts = _from_yaml(source, text)
    else:
        hosts = _from_ini(source, text)
    seen: set[str] = set()
    for host in hosts:
        if host.name in seen:
            raise _fail(source, host.name, "name", "appears twice")
        seen.add(host.name)
    if group is not None:
        picked = [h for h in hosts if group in h.groups or (group == "all")]
        if not picked:
            known = sorted({g for h in hosts for g in h.groups})
            raise ConfigError(f"{source}: no hosts in group {group!r} (groups: "
                              f"{', '.join(known) or 'none'})")
        hosts = picked
    return hosts
