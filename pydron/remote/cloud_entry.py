"""The `cloud` entry of pydron.conf: its fields and their checks (the nodes: cloud.py).

Only validated here: nodes are created when the pool starts its workers.
"""
from __future__ import annotations

from pydron.config_entry import Entry, kind, show, warn_if_readable
from pydron.remote import cloud, ssh
from pydron.remote.specs import GatewaySpec
from pydron.remote.ssh_entry import (read_data_ports, read_key_file, read_port, read_python,
                                      read_ssh_options)

def key_pair_name(entry: Entry) -> str:
    name = entry.string("keypair")
    if not name.strip() or len(name) > 255 or any(not c.isprintable() for c in name):
        raise entry.error("keypair", f"expected a key pair name (printable, at most 255 characters), "
                          f"got {show(name)}")
    return name


def parse(entry: Entry) -> list[GatewaySpec]:
    """`count` libcloud nodes of `cores` workers each (see pydron/remote/cloud.py).

    Only validated here: nodes are created when the pool starts its workers.
    """
    entry.fields(required=cloud.REQUIRED_FIELDS, optional=cloud.OPTIONAL_FIELDS)
    data = entry.data
    provider = entry.string("provider").strip()
    try:
        driver_class = cloud.resolve_provider(provider)
    except ValueError as exc:
        raise entry.error("provider", str(exc)) from None
    credentials = {}
    for name in ("accesskeyid", "accesskey"):
        if name in data:
            value = data[name]
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                # Never show the value: it may be a real credential with a typo.
                raise entry.error(name, "expected a non-empty one-line string")
            credentials[name] = value
    if "accesskey" in credentials and "accesskeyid" not in credentials:
        raise entry.error("accesskeyid", "missing: accesskey is given without its accesskeyid")
    if "accesskey" in credentials:
        warn_if_readable(entry.path, "cloud credentials")
    username = None
    if "username" in data:
        username = entry.string("username")
        if not ssh.USER_RE.match(username):
            raise entry.error("username", f"not a user name: {show(username)}")
    objects = {}
    for name in ("driver_options", "node_options"):
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise entry.error(name, f"expected an object of keyword arguments, got {kind(value)}")
        for key in value:
            if not key.isidentifier():
                raise entry.error(f"{name}.{key}", "not a Python keyword argument name")
        objects[name] = dict(value)
    timeouts = {}
    for name in ("ssh_timeout", "boot_timeout", "poll_interval"):
        if name in data:
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise entry.error(name, f"expected a positive number of seconds, got {show(value)}")
            timeouts[name] = float(value)
    keep = {}
    if "keep_alive" in data:
        value = data["keep_alive"]
        if isinstance(value, bool):
            keep["keep_alive"] = value
        elif isinstance(value, (int, float)) and value > 0:
            keep.update(keep_alive=True, lease=float(value))
        else:
            raise entry.error("keep_alive", f"expected true, false or a lease in minutes (> 0), "
                              f"got {show(value)}")
    if data.get("address", "public") not in ("public", "private"):
        raise entry.error("address", f'expected "public" or "private", got {show(data["address"])}')
    cores = entry.positive_int("cores") if "cores" in data else 1
    settings = cloud.CloudSettings(
        name=f"{entry.name}", error=entry.error, provider=provider, driver_class=driver_class,
        accesskeyid=credentials.get("accesskeyid"), accesskey=credentials.get("accesskey"),
        region=entry.string("region") if "region" in data else None,
        imageid=entry.string("imageid"), sizeid=entry.string("sizeid"), username=username,
        publickey=read_key_file(entry, "publickey") if "publickey" in data else None,
        privatekey=read_key_file(entry, "privatekey") if "privatekey" in data else None,
        keypair=key_pair_name(entry) if "keypair" in data else None,
        tmp_dir=entry.string("tmp_dir") if "tmp_dir" in data else None,
        data_ports=read_data_ports(entry, cores),
        count=entry.positive_int("count") if "count" in data else 1, cores=cores,
        driver_options=objects["driver_options"], node_options=objects["node_options"],
        port=read_port(entry), python=read_python(entry), ssh_options=read_ssh_options(entry), **timeouts,
        address=data.get("address", "public"), **keep,
    )
    return cloud.gateway_specs(settings)
