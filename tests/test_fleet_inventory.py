"""Fleet inventories: our TOML, Ansible INI and YAML, groups, and errors naming file/host/key."""
from __future__ import annotations

from pathlib import Path

import pytest

from pktbench.errors import ConfigError
from pktbench.fleet.inventory import load_inventory


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_inventory(tmp_path: Path) -> None:
    key = _write(tmp_path, "id_test", "not a real key, only a file")
    inv = _write(tmp_path, "fleet.toml", f"""
[[hosts]]
name = "web1"
address = "198.18.0.1"
port = 2222
user = "ops"
key = "{key}"
test_address = "198.19.0.1"
pktbench = "/opt/venv/bin/pktbench"
python = "/usr/bin/python3.11"
groups = ["web"]

[[hosts]]
name = "db1"
address = "198.18.0.2"
""")
    web, db = load_inventory(inv)
    assert (web.name, web.address, web.port, web.user, web.key) == (
        "web1", "198.18.0.1", 2222, "ops", str(key))
    assert web.target == "198.19.0.1" and web.pktbench == "/opt/venv/bin/pktbench"
    assert db.port == 22 and db.test_address == "198.18.0.2" and db.pktbench == "pktbench"
    assert web.python == "/usr/bin/python3.11" and db.python == "python3"
    assert [h.name for h in load_inventory(inv, group="web")] == ["web1"]


@pytest.mark.parametrize("body,expect", [
    ('[[hosts]]\nname = "a"\n', "host a: key 'address': is missing"),
    ('[[hosts]]\nname = "a"\naddress = "198.18.0.1"\nport = "x"\n', "host a: key 'port'"),
    ('[[hosts]]\nname = "a"\naddress = "198.18.0.1"\nkey = "/nonexistent"\n',
     "host a: key 'key': private key file /nonexistent not found"),
    ('[[hosts]]\nname = "a"\naddress = "198.18.0.1"\nadress = "x"\n', "host a: key 'adress'"),
    ('[[hosts]]\nname = "a"\naddress = "1"\n[[hosts]]\nname = "a"\naddress = "2"\n',
     "host a: key 'name': appears twice"),
    ('hosts = 3\n', "key 'hosts'"),
    ('[[hosts]\n', "not valid TOML"),
])
def test_toml_errors_name_file_host_and_key(tmp_path: Path, body: str, expect: str) -> None:
    inv = _write(tmp_path, "bad.toml", body)
    with pytest.raises(ConfigError) as info:
        load_inventory(inv)
    assert str(inv) in str(info.value) and expect in str(info.value)


def test_ansible_ini_with_groups_children_and_vars(tmp_path: Path) -> None:
    inv = _write(tmp_path, "hosts", """
# region one
[web]
web1 ansible_host=198.18.0.1 ansible_port=2201
web2 ansible_host=198.18.0.2

[db]
db1 ansible_host=198.18.0.3 pktbench_test_address=198.19.0.3 ansible_python_interpreter=/usr/bin/python3

[prod:children]
web
db

[prod:vars]
ansible_user=deploy
pktbench_command="/usr/bin/python3 -m pktbench"
""")
    hosts = {h.name: h for h in load_inventory(inv)}
    assert hosts["web1"].port == 2201 and hosts["web2"].port == 22
    assert all(h.user == "deploy" for h in hosts.values())
    assert hosts["db1"].target == "198.19.0.3" and hosts["db1"].python == "/usr/bin/python3"
    assert hosts["web1"].pktbench == "/usr/bin/python3 -m pktbench"
    assert [h.name for h in load_inventory(inv, group="db")] == ["db1"]
    assert len(load_inventory(inv, group="prod")) == 3
    with pytest.raises(ConfigError, match="no hosts in group 'cache'"):
        load_inventory(inv, group="cache")


def test_ansible_yaml(tmp_path: Path) -> None:
    inv = _write(tmp_path, "inv.yml", """
all:
  vars:
    ansible_user: root
  children:
    edge:
      hosts:
        e1: {ansible_host: 198.18.0.11}
        e2:
          ansible_host: 198.18.0.12
          ansible_port: 2022
""")
    hosts = load_inventory(inv)
    assert [(h.name, h.address, h.port, h.user) for h in hosts] == [
        ("e1", "198.18.0.11", 22, "root"), ("e2", "198.18.0.12", 2022, "root")]
    assert [h.name for h in load_inventory(inv, group="edge")] == ["e1", "e2"]
    bad = _write(tmp_path, "bad.yaml", "all:\n  hosts:\n    e1: {ansible_port: nope}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: host e1: key 'ansible_port'"):
        load_inventory(bad)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="inventory /nonexistent.toml not found"):
        load_inventory("/nonexistent.toml")


@pytest.mark.parametrize("name,ok", [
    ("pktbench-0.1.0-cp311-cp311-linux_x86_64.whl", True),
    ("pktbench-0.1.0-1-cp311-cp311-manylinux_2_17_x86_64.whl", True),
    ("numpy-1.26.0-cp311-cp311-linux_x86_64.whl", False),
    ("pktbench-0.1.0.tar.gz", False),
])
def test_install_takes_only_a_pktbench_wheel(tmp_path: Path, name: str, ok: bool) -> None:
    from pktbench.fleet.install import load_wheel

    path = _write(tmp_path, name, "wheel bytes")
    if ok:
        wheel = load_wheel(str(path))
        assert wheel.version == "0.1.0" and len(wheel.sha256) == 64
        assert wheel.venv_name == f"venv-{wheel.sha256[:16]}"
    else:
        with pytest.raises(ConfigError, match="not a pktbench wheel"):
            load_wheel(str(path))
    with pytest.raises(ConfigError, match="no such file"):
        load_wheel(str(tmp_path / "pktbench-0.1.0-py3-none-any.whl"))
