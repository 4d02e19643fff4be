"""``cloud`` worker entries: libcloud's dummy driver and EC2 against a moto server.

Only 127.0.0.1 is ever contacted.  The nodes' addresses are invented by the
stand-ins (dummy: 127.0.0.N, moto: public 54.x addresses); ssh reaches them
through ``ProxyCommand nc 127.0.0.1 PORT`` to the test sshd (``proxy_options``),
with the host key checked under ``HostKeyAlias``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cloudpickle
import pytest

from realparts import need_module, unavailable  # noqa: E402

need_module("libcloud", "cloud tests need apache-libcloud (the 'test' extra)")

import cloudhelpers as C  # noqa: E402
import sshd as S  # noqa: E402
import test_ssh as T  # noqa: E402
from pydron.config import load_config  # noqa: E402
from pydron.errors import ConfigError, PydronError  # noqa: E402
from pydron.remote import cloud, keypair  # noqa: E402
from pydron.remote import pool as pool_module  # noqa: E402
from pydron.remote.pool import Pool  # noqa: E402
from pydron.runtime.graph import Graph  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
SECRET = "moto-Secret-9f3e21"   # the test credential, never to be seen anywhere
KEY_ID = "AKIAPYDRONTEST0001"
MOTO_PROVIDER = "cloudhelpers:MotoEC2NodeDriver"
IMAGE = "ami-03cf127a"          # one of moto's stock images
SIZE = "t2.micro"


def write_conf(directory, *entries):
    return T.write_conf(directory, *entries)


@pytest.fixture(scope="module", autouse=True)
def by_value():
    cloudpickle.register_pickle_by_value(T)
    yield
    cloudpickle.unregister_pickle_by_value(T)


@pytest.fixture
def server(sshd):
    """The sshd fixture; afterwards no process of the test user and an empty tmp_dir."""
    yield sshd
    leftovers = sshd.leftover_processes(timeout=15)  # a killed master's workers take a moment
    deadline = time.monotonic() + 5
    while os.listdir(sshd.user_tmp) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = os.listdir(sshd.user_tmp)
    if leftovers or left:
        S._kill(S._user_pids(sshd.user, sshd.tag))
        for name in left:
            os.system(f"rm -rf {sshd.user_tmp}/{name}")
    assert leftovers == [], f"processes of {sshd.user} left behind: {leftovers}"
    assert left == [], f"tmp_dir {sshd.user_tmp} not emptied: {left}"


def node_ssh(sshd, **extra):
    """The ssh part of a cloud entry: the nodes are reached through the test sshd."""
    options = {**T.known_hosts(sshd), "IdentitiesOnly": "yes", **sshd.proxy_options()}
    entry = {"username": sshd.user, "privatekey": sshd.identity_file,
             "python": T.matching_python(sshd) or "python3", "tmp_dir": sshd.user_tmp,
             "ssh_options": options}
    entry.update(extra)
    return entry


def dummy_entry(sshd, **extra):
    entry = {"type": "cloud", "provider": "dummy", "accesskeyid": "pydron",
             "imageid": "1", "sizeid": "2", "count": 2, "cores": 1, **node_ssh(sshd)}
    entry.update(extra)
    return entry


# ------------------------------------------------------------------ configuration


def test_entry_is_validated_but_nothing_is_provisioned(tmp_path):
    specs = load_config(write_conf(tmp_path, {
        "type": "cloud", "provider": "dummy", "accesskeyid": "x", "imageid": "1", "sizeid": "1",
        "count": 3, "cores": 2, "data_ports": "9000-9001", "ssh_timeout": 5}))
    assert len(specs) == 6 and len({s.label for s in specs}) == 6
    assert {(s.node, s.core) for s in specs} == {(n, c) for n in range(3) for c in range(2)}
    cluster = specs[0].cluster
    assert all(s.cluster is cluster for s in specs) and cluster.nodes == []
    assert cluster._driver is None  # no driver, no call, until the pool starts
    assert specs[0].data_ports == (9000, 9001)


@pytest.mark.parametrize("extra,field,expected", [
    ({"provider": "no-such-cloud"}, "provider", "unknown libcloud compute provider 'no-such-cloud'"),
    ({"provider": "nosuchmodule_pd:Driver"}, "provider", "cannot import module"),
    ({"provider": "os:path"}, "provider", "not a libcloud NodeDriver class"),
    ({"provider": "cloudhelpers:Nope"}, "provider", "has no 'Nope'"),
    ({"imageid": ""}, "imageid", "non-empty string"),
    ({"sizeid": 5}, "sizeid", "non-empty string"),
    ({"count": 0}, "count", "positive integer"),
    ({"cores": "2"}, "cores", "positive integer"),
    ({"accesskey": SECRET}, "accesskeyid", "without its accesskeyid"),
    ({"accesskeyid": "a", "accesskey": ["x"]}, "accesskey", "one-line string"),
    ({"driver_options": "host=x"}, "driver_options", "expected an object"),
    ({"node_options": {"a b": 1}}, "node_options.a b", "keyword argument name"),
    ({"ssh_options": {"Port": 22}}, "ssh_options.Port", "field 'port'"),
    ({"ssh_timeout": 0}, "ssh_timeout", "positive number of seconds"),
    ({"poll_interval": "fast"}, "poll_interval", "positive number of seconds"),
    ({"keypair": " "}, "keypair", "non-empty string"),
    ({"keypair": "a\nb"}, "keypair", "printable, at most 255 characters"),
    ({"privatekey": "/nonexistent/key"}, "privatekey", "no such file"),
    ({"port": 70000}, "port", "1-65535"),
    ({"python": "a//b"}, "python", "not a command"),
    ({"cores": 3, "data_ports": "9000-9001"}, "data_ports", "fewer than cores=3"),
    ({"keep": True}, "keep", "unknown field"),
    ({"keep_alive": -1}, "keep_alive", "a lease in minutes"),
    ({"keep_alive": "yes"}, "keep_alive", "expected true, false"),
    ({"address": "ipv6"}, "address", 'expected "public" or "private"'),
])
def test_entry_errors(tmp_path, extra, field, expected):
    entry = {"type": "cloud", "provider": "dummy", "imageid": "1", "sizeid": "1", **extra}
    path = write_conf(tmp_path, {"type": "multicore", "cores": 1}, entry)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and f"workers[1].{field}: " in message, message
    assert expected in message, message
    assert SECRET not in message


def test_missing_provider(tmp_path):
    with pytest.raises(ConfigError, match=r"workers\[0\]\.provider: missing required field"):
        load_config(write_conf(tmp_path, {"type": "cloud", "imageid": "1", "sizeid": "1"}))


def test_credentials_not_in_specs(tmp_path):
    specs = load_config(write_conf(tmp_path, {
        "type": "cloud", "provider": MOTO_PROVIDER, "accesskeyid": KEY_ID, "accesskey": SECRET,
        "imageid": IMAGE, "sizeid": SIZE}))
    assert SECRET not in repr(specs) and KEY_ID not in repr(specs)
    assert SECRET not in repr(specs[0].cluster) and SECRET not in repr(specs[0].cluster.settings)


# ------------------------------------------------------------------ dummy driver


def _pool_failure(specs):
    with pytest.raises(PydronError) as info:
        Pool(specs).shutdown()
    return info.value


@pytest.mark.parametrize("field,value,expected", [
    ("imageid", "99", "no image '99' at provider 'dummy'"),
    ("sizeid", "large", "no size 'large' at provider 'dummy'"),
    ("node_options", {"ex_color": "red"}, "does not take 'ex_color'"),
])
def test_dummy_unknown_image_or_size(tmp_path, sshd, field, value, expected):
    path = write_conf(tmp_path, dummy_entry(sshd, **{field: value}))
    specs = load_config(path)
    error = _pool_failure(specs)
    assert isinstance(error, ConfigError), error
    name = field if field != "node_options" else "node_options.ex_color"
    assert f"{path}: workers[0].{name}: " in str(error) and expected in str(error), str(error)
    assert specs[0].cluster.nodes == []


@pytest.fixture
def runnable(server):
    return T.need_matching_python(server)


def test_dummy_run_terminates_every_node(server, runnable, tmp_path):
    """Provision with libcloud's dummy driver, run tasks on its nodes, terminate them."""
    from libcloud.compute.types import NodeState

    specs = load_config(write_conf(tmp_path, dummy_entry(server, count=2, cores=2)))
    cluster = specs[0].cluster
    pool = Pool(specs)
    try:
        driver = cluster.driver()
        assert len(cluster.nodes) == 2 and len(pool.workers) == 4
        assert all(node in driver.list_nodes() for node in cluster.nodes)
        # ssh went to the invented addresses, through the ProxyCommand only
        hosts = set()
        for worker in pool.workers:
            config_file = worker.gateway._io.popen.args[3]
            with open(config_file) as handle:
                text = handle.read()
            hosts |= {line.split()[1] for line in text.splitlines() if "HostName" in line}
            assert f"ProxyCommand nc 127.0.0.1 {server.port}" in text
        assert hosts == {node.public_ips[0] for node in cluster.nodes}
        graph = Graph(lambda: pool)
        futures = [graph.submit(T.square, (i,), {}) for i in range(12)]
        assert [f._pd_result() for f in futures] == [i * i for i in range(12)]
    finally:
        pool.shutdown()
    assert all(node.state == NodeState.TERMINATED for node in cluster.nodes)
    assert not [node for node in driver.list_nodes() if node in cluster.nodes]
    assert cluster not in cloud._live


def test_released_nodes_are_not_reused(server, runnable, tmp_path):
    specs = load_config(write_conf(tmp_path, dummy_entry(server, count=1)))
    Pool(specs).shutdown()
    with pytest.raises(PydronError, match="released when their pool shut down"):
        Pool(specs)


def test_dummy_differential_subset(server, runnable, tmp_path):
    """A subset of the differential suite on dummy-provisioned nodes."""
    import test_differential
    import test_differential_more
    from difftest import assert_equivalent

    modules = (test_differential, test_differential_more)
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    cases = (test_differential.CASES + test_differential_more.CASES)[::12]
    specs = load_config(write_conf(tmp_path, dummy_entry(server, count=2, cores=1)))
    cluster = specs[0].cluster
    saved = pool_module._pool
    pool = pool_module._pool = Pool(specs)
    try:
        for case in cases:
            assert_equivalent(case.fn, *case.args, **case.kwargs)
        assert all(worker.alive for worker in pool.workers)
        assert sum(len(w.functions_sent) for w in pool.workers) > 0
    finally:
        pool_module._pool = saved
        pool.shutdown()
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)
    assert len(cluster.nodes) == 2 and len(cluster._terminated) == 2
    assert not [node for node in cluster.driver().list_nodes() if node in cluster.nodes]


# ------------------------------------------------------------------ EC2 against moto


@pytest.fixture(scope="module")
def moto():
    """A moto server on 127.0.0.1 that checks credentials; no instance alive at the end."""
    need_module("moto.server", "EC2 tests need moto[server] (the 'test' extra)")
    need_module("boto3", "EC2 tests count instances with boto3 (the 'test' extra)")
    try:
        server = C.MotoServer().start()
    except RuntimeError as exc:
        unavailable(f"EC2 tests need a moto server on 127.0.0.1: {exc}")
    try:
        yield server
        assert server.instances() == []
    finally:
        server.stop()


@pytest.fixture
def ec2(moto):
    """Each test starts and must end with zero instances running or pending in moto."""
    assert moto.instances() == []
    yield moto
    left = moto.instances()
    for instance in left:  # do not spill over into the next test
        moto.client().terminate_instances(InstanceIds=[instance["InstanceId"]])
    assert left == [], [(i["InstanceId"], i["State"]["Name"]) for i in left]


def ec2_entry(moto, sshd, **extra):
    entry = {"type": "cloud", "provider": MOTO_PROVIDER, "accesskeyid": moto.key_id,
             "accesskey": moto.secret, "region": moto.region, "imageid": IMAGE, "sizeid": SIZE,
             "count": 2, "cores": 1, "driver_options": moto.driver_options(), **node_ssh(sshd)}
    entry.update(extra)
    return entry


def tags_of(instance):
    return {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}


def all_instance_ids(moto):
    return {i["InstanceId"] for i in moto.instances(states=(
        "pending", "running", "stopping", "stopped", "shutting-down", "terminated"))}


@pytest.mark.filterwarnings("ignore:This method has been deprecated:UserWarning")  # libcloud's own
def test_ec2_run_tags_and_terminates(server, runnable, ec2, tmp_path):
    entry = ec2_entry(ec2, server, count=2, cores=2, publickey=server.identity_file + ".pub")
    specs = load_config(write_conf(tmp_path, entry))
    cluster = specs[0].cluster
    pool = Pool(specs)
    try:
        running = ec2.instances(states=("running", "pending"))
        assert len(running) == 2 and len(pool.workers) == 4
        for instance in running:
            assert instance.get("KeyName")  # publickey went in as create_node(auth=...)
            tags = tags_of(instance)
            assert tags[cloud.RUN_TAG] == cluster.run_id
            assert tags["Name"].startswith(f"pydron-{cluster.run_id}-")
            assert instance["InstanceType"] == SIZE and instance["ImageId"] == IMAGE
        graph = Graph(lambda: pool)
        futures = [graph.submit(T.square, (i,), {}) for i in range(10)]
        assert [f._pd_result() for f in futures] == [i * i for i in range(10)]
        # never on a command line, in a message or in a spec
        assert not [line for line in T.all_cmdlines() if ec2.secret in line]
        assert ec2.secret not in repr(specs) + repr(cluster)
    finally:
        pool.shutdown()
    assert ec2.instances() == []
    assert {node.id for node in cluster.nodes} <= all_instance_ids(ec2)


def test_ec2_private_address(server, runnable, ec2, tmp_path):
    """``address: private``: ssh goes to the nodes' private addresses (e.g. behind a ProxyJump)."""
    specs = load_config(write_conf(tmp_path, ec2_entry(ec2, server, count=1, address="private")))
    pool = Pool(specs)
    try:
        node = specs[0].cluster.nodes[0]
        with open(pool.workers[0].gateway._io.popen.args[3]) as handle:
            assert f"HostName {node.private_ips[0]}" in handle.read()
        assert Graph(lambda: pool).submit(T.square, (3,), {})._pd_result() == 9
    finally:
        pool.shutdown()


def test_ec2_bad_credential(ec2, sshd, tmp_path):
    path = write_conf(tmp_path, ec2_entry(ec2, sshd, accesskey="not-the-Secret-0000"))
    error = _pool_failure(load_config(path))
    message = str(error)
    assert isinstance(error, ConfigError)
    assert f"{path}: workers[0].accesskey: " in message and "refused the credentials" in message
    assert "AuthFailure" in message
    assert "not-the-Secret-0000" not in message and ec2.secret not in message


@pytest.mark.parametrize("field,value,expected", [
    ("imageid", "ami-00000000", "no image 'ami-00000000' at provider"),
    ("sizeid", "t9.enormous", "no size 't9.enormous'"),
])
def test_ec2_unknown_image_or_size(ec2, sshd, tmp_path, field, value, expected):
    path = write_conf(tmp_path, ec2_entry(ec2, sshd, **{field: value}))
    before = all_instance_ids(ec2)
    error = _pool_failure(load_config(path))
    assert isinstance(error, ConfigError)
    assert f"{path}: workers[0].{field}: " in str(error) and expected in str(error), str(error)
    assert all_instance_ids(ec2) == before  # nothing was started


def test_ec2_unreachable_node_fails_and_is_terminated(ec2, sshd, tmp_path):
    closed = S.free_port()  # nobody listens there
    entry = ec2_entry(ec2, sshd, count=2, ssh_timeout=3)
    entry["ssh_options"]["ProxyCommand"] = f"nc 127.0.0.1 {closed}"
    specs = load_config(write_conf(tmp_path, entry))
    start = time.monotonic()
    error = _pool_failure(specs)
    message = str(error)
    assert time.monotonic() - start < 30
    node_ids = [node.id for node in specs[0].cluster.nodes]
    assert len(node_ids) == 2 and any(f"node {i} " in message for i in node_ids), message
    assert "did not answer ssh within 3 s (ssh_timeout)" in message, message
    assert "workers[0]" in message and ec2.secret not in message
    assert ec2.instances() == []


# ------------------------------------------------------------------ 10 nodes, key pairs, refused logins


def nap_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def key_pairs(moto):
    return {pair["KeyName"]: pair.get("KeyFingerprint") for pair in
            moto.client().describe_key_pairs()["KeyPairs"]}


def delete_key_pairs(moto):
    for name in key_pairs(moto):
        moto.client().delete_key_pair(KeyName=name)


def new_key(tmp_path, name="other"):
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
                   stdin=subprocess.DEVNULL, check=True, timeout=30)
    return str(path)


def test_ec2_ten_nodes_one_key_pair_all_terminated(server, runnable, ec2, tmp_path, monkeypatch):
    """The seed's ``"count": 10``: ten nodes, one key pair imported once, every node used and ended."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    delete_key_pairs(ec2)
    publickey = server.identity_file + ".pub"
    entry = ec2_entry(ec2, server, count=10, cores=1, publickey=publickey, poll_interval=0.2)
    specs = load_config(write_conf(tmp_path, entry))
    cluster = specs[0].cluster
    before = all_instance_ids(ec2)
    start = time.monotonic()
    pool = Pool(specs)
    started = time.monotonic() - start
    try:
        assert len(pool.workers) == 10 and len(cluster.nodes) == 10
        running = ec2.instances(states=("running", "pending"))
        assert len(running) == 10
        name = keypair.read_public_key(publickey).default_name()
        assert list(key_pairs(ec2)) == [name]             # imported once, not once per node
        assert {instance.get("KeyName") for instance in running} == {name}
        graph = Graph(lambda: pool)
        futures = [graph.submit(nap_pid, (0.5,), {}) for _ in range(10)]
        pids = {f._pd_result() for f in futures}
        assert len(pids) == 10, pids                      # each node's worker ran one
        assert [f._pd_result() for f in [graph.submit(T.square, (i,), {}) for i in range(30)]] \
            == [i * i for i in range(30)]
    finally:
        pool.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ids = {node.id for node in cluster.nodes}
    assert len(ids) == 10 and ids == all_instance_ids(ec2) - before
    assert ec2.instances() == []                          # every one of them terminated
    terminated = {i["InstanceId"] for i in ec2.instances(states=("terminated",))}
    assert ids <= terminated
    assert not [line for line in T.all_cmdlines()
                if "pydron.remote.cloud guard" in line and cluster.run_id in line]
    assert started < 60, f"10 nodes took {started:.1f} s to start"


GUARDED = """
import sys
from pydron.config import load_config
cluster = load_config(sys.argv[1])[0].cluster
cluster.provision()
print(" ".join(str(node.id) for node in cluster.nodes), flush=True)
sys.stdin.read()
"""


def test_guardian_terminates_ten_nodes_of_a_killed_master(ec2, sshd, tmp_path):
    """A master killed with SIGKILL right after creating 10 nodes: its guardian ends all 10."""
    conf = write_conf(tmp_path, ec2_entry(ec2, sshd, count=10, poll_interval=0.2))
    script = tmp_path / "guarded.py"
    script.write_text(GUARDED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, TESTS])}
    master = subprocess.Popen([sys.executable, str(script), str(conf)], cwd=str(tmp_path), env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        ids = set(master.stdout.readline().split())
        assert len(ids) == 10, master.stderr.read() if master.poll() is not None else ids
        assert {i["InstanceId"] for i in ec2.instances()} == ids
        master.kill()
        master.wait(timeout=10)
        deadline = time.monotonic() + 30
        while ec2.instances() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ec2.instances() == []
        assert ids <= {i["InstanceId"] for i in ec2.instances(states=("terminated",))}
    finally:
        if master.poll() is None:
            master.kill()
        master.communicate(timeout=10)


def test_ec2_existing_key_pair_is_reused_by_every_entry(server, runnable, ec2, tmp_path):
    """A key pair of that name with the same key is used as it is, by two entries at once."""
    delete_key_pairs(ec2)
    publickey = server.identity_file + ".pub"
    with open(publickey) as handle:
        ec2.client().import_key_pair(KeyName="my laptop", PublicKeyMaterial=handle.read().encode())
    entries = [ec2_entry(ec2, server, count=1, publickey=publickey, keypair="my laptop"),
               ec2_entry(ec2, server, count=1, publickey=publickey)]
    specs = load_config(write_conf(tmp_path, *entries))
    pool = Pool(specs)
    try:
        assert len(pool.workers) == 2
        by_id = {i["InstanceId"]: i.get("KeyName") for i in ec2.instances()}
        default = keypair.read_public_key(publickey).default_name()
        assert by_id == {specs[0].cluster.nodes[0].id: "my laptop",
                         specs[1].cluster.nodes[0].id: default}
        assert sorted(key_pairs(ec2)) == sorted(["my laptop", default])
        assert Graph(lambda: pool).submit(T.square, (5,), {})._pd_result() == 25
    finally:
        pool.shutdown()
    assert ec2.instances() == []


def test_ec2_other_key_under_the_same_name_is_an_error(ec2, sshd, tmp_path):
    delete_key_pairs(ec2)
    other = new_key(tmp_path)
    with open(other + ".pub") as handle:
        ec2.client().import_key_pair(KeyName="team-key", PublicKeyMaterial=handle.read().encode())
    remote = key_pairs(ec2)["team-key"]
    publickey = sshd.identity_file + ".pub"
    path = write_conf(tmp_path, ec2_entry(ec2, sshd, publickey=publickey, keypair="team-key"))
    before = all_instance_ids(ec2)
    error = _pool_failure(load_config(path))
    message = str(error)
    assert isinstance(error, ConfigError), message
    assert f"{path}: workers[0].keypair: " in message, message
    assert "key pair 'team-key' holds another key" in message, message
    assert remote in message and publickey in message, message
    assert keypair.read_public_key(publickey).openssh_fingerprint in message, message
    assert all_instance_ids(ec2) == before                # nothing was started
    assert key_pairs(ec2) == {"team-key": remote}         # and nothing overwritten


def test_ec2_key_pair_name_without_publickey(ec2, sshd, tmp_path):
    delete_key_pairs(ec2)
    path = write_conf(tmp_path, ec2_entry(ec2, sshd, keypair="nobody-has-this"))
    error = _pool_failure(load_config(path))
    assert isinstance(error, ConfigError)
    assert f"{path}: workers[0].keypair: " in str(error)
    assert "no key pair 'nobody-has-this' (give `publickey` to import one)" in str(error)


def test_dummy_driver_has_no_key_pairs(sshd, tmp_path):
    path = write_conf(tmp_path, dummy_entry(sshd, keypair="mine"))
    error = _pool_failure(load_config(path))
    assert isinstance(error, ConfigError)
    assert f"{path}: workers[0].keypair: driver DummyNodeDriver has no named key pairs" in str(error)


def test_publickey_that_is_not_one(tmp_path):
    private = new_key(tmp_path)
    path = write_conf(tmp_path, {"type": "cloud", "provider": "dummy", "imageid": "1",
                                 "sizeid": "1", "publickey": private})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}: workers[0].publickey: {private} is not an OpenSSH public key" in str(info.value)


def test_ec2_refused_login_fails_at_once(server, ec2, tmp_path):
    """A node that refuses the key is not retried for ssh_timeout: the error names node and user."""
    entry = ec2_entry(ec2, server, count=2, ssh_timeout=120, privatekey=new_key(tmp_path))
    specs = load_config(write_conf(tmp_path, entry))
    start = time.monotonic()
    error = _pool_failure(specs)
    elapsed = time.monotonic() - start
    message = str(error)
    assert elapsed < 20, f"{elapsed:.1f} s: {message}"
    nodes = specs[0].cluster.nodes
    assert any(f"node {node.id} ({node.name}) at provider {MOTO_PROVIDER!r} refused the ssh "
               f"login of user {server.user!r}" in message for node in nodes), message
    assert "Permission denied" in message and "did not answer ssh" not in message, message
    assert ec2.secret not in message
    assert ec2.instances() == []


def test_ssh_entry_refused_login_says_so(server, tmp_path):
    entry = T.key_entry(server, identity_file=new_key(tmp_path))
    error = _pool_failure(load_config(write_conf(tmp_path, entry)))
    assert f"ssh worker on {server.user}@{server.host}:{server.port}: ssh login refused for user " \
           f"{server.user!r}" in str(error), str(error)
    assert "Permission denied" in str(error), str(error)



# ------------------------------------------------------------------ cloud list / cleanup


def run_cli(*args, conf):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, TESTS]), "PYDRON_CONF": str(conf)}
    env.pop("PYDRON_TX", None)
    return subprocess.run([sys.executable, "-m", "pydron", *args], cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def test_cloud_list_and_cleanup(ec2, sshd, tmp_path):
    conf = write_conf(tmp_path, ec2_entry(ec2, sshd, count=2))
    cluster = load_config(conf)[0].cluster
    cluster.provision()  # nodes as a run killed with SIGKILL would leave them
    try:
        ids = {node.id for node in cluster.nodes}
        assert {i["InstanceId"] for i in ec2.instances()} == ids
        listed = run_cli("cloud", "list", conf=conf)
        assert listed.returncode == 0, listed.stderr
        for node_id in ids:
            assert node_id in listed.stdout and f"run={cluster.run_id}" in listed.stdout
        other = run_cli("cloud", "list", "--run", "someotherrun", conf=conf)
        assert other.returncode == 0 and not any(i in other.stdout for i in ids)
        cleanup = run_cli("cloud", "cleanup", conf=conf)
        assert cleanup.returncode == 0, cleanup.stderr
        assert cleanup.stdout.count("terminated\t") == 2, cleanup.stdout
        assert ec2.instances() == []
        after = run_cli("cloud", "list", conf=conf)
        assert after.returncode == 0 and "no pydron nodes alive" in after.stdout
        for result in (listed, other, cleanup, after):
            assert ec2.secret not in result.stdout + result.stderr
    finally:
        cluster.release()


def test_cloud_list_with_a_bad_credential(ec2, sshd, tmp_path):
    conf = write_conf(tmp_path, ec2_entry(ec2, sshd, accesskey="not-the-Secret-0000"))
    result = run_cli("cloud", "list", conf=conf)
    assert result.returncode == 1
    assert "workers[0] (cloudhelpers:MotoEC2NodeDriver): cannot list nodes" in result.stderr
    assert "AuthFailure" in result.stderr and "not-the-Secret-0000" not in result.stderr


def test_cloud_list_without_cloud_entries(tmp_path):
    conf = write_conf(tmp_path, {"type": "multicore", "cores": 1})
    result = run_cli("cloud", "list", conf=conf)
    assert result.returncode == 0 and "no cloud entries" in result.stdout


# ------------------------------------------------------------------ the master fails or is killed


SCRIPT = """
import sys, time
import pydron

@pydron.functional
def square(x):
    return x * x

@pydron.functional
def nap(x):
    time.sleep(x)
    return x

@pydron.schedule
def fails(n):
    values = [square(i) for i in range(n)]
    total = sum(values)
    if total > 10:
        raise ValueError(f"boom {total}")
    return total

@pydron.schedule
def sleeps():
    nap(60)
    return 1

if sys.argv[1] == "fail":
    print(fails(6))
else:
    from pydron.remote import pool
    pool.get_pool()
    print("ready", flush=True)
    sleeps()
"""


def start_master(tmp_path, conf, mode):
    script = tmp_path / "master.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, TESTS]), "PYDRON_CONF": str(conf)}
    env.pop("PYDRON_TX", None)
    return subprocess.Popen([sys.executable, str(script), mode], cwd=str(tmp_path), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_exception_in_schedule_function_terminates_nodes(server, runnable, ec2, tmp_path):
    conf = write_conf(tmp_path, ec2_entry(ec2, server, count=2))
    before = all_instance_ids(ec2)
    master = start_master(tmp_path, conf, "fail")
    out, err = master.communicate(timeout=60)
    assert master.returncode == 1 and "ValueError: boom 55" in err, err
    assert len(all_instance_ids(ec2) - before) == 2  # nodes were made ...
    assert ec2.instances() == []                    # ... and are gone
    assert ec2.secret not in out + err


@pytest.mark.parametrize("how,when", [("SIGTERM", "running"), ("SIGTERM", "starting"),
                                      ("SIGINT", "running"), ("SIGKILL", "running")])
def test_signal_to_the_master_terminates_nodes(server, runnable, ec2, tmp_path, how, when):
    entry = ec2_entry(ec2, server, count=2)
    if when == "starting":  # SIGTERM while the pool waits for a node that never answers
        entry["ssh_options"]["ProxyCommand"] = f"nc 127.0.0.1 {S.free_port()}"
        entry["ssh_timeout"] = 60
    conf = write_conf(tmp_path, entry)
    before = all_instance_ids(ec2)
    master = start_master(tmp_path, conf, "sleep")
    try:
        if when == "running":
            line = master.stdout.readline()
            assert line == "ready\n", line + master.stderr.read()
        else:
            deadline = time.monotonic() + 30
            while len(all_instance_ids(ec2) - before) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
        assert len(ec2.instances()) == 2
        master.send_signal(getattr(signal, how))
        out, err = master.communicate(timeout=30)
        if how == "SIGTERM":
            assert master.returncode == 128 + signal.SIGTERM, err  # SIGTERM -> SystemExit(143)
        elif how == "SIGINT":
            assert master.returncode != 0 and "KeyboardInterrupt" in err, err
        else:  # nothing runs in the master: its guardian process terminates the nodes
            assert master.returncode == -signal.SIGKILL
            deadline = time.monotonic() + 30
            while ec2.instances() and time.monotonic() < deadline:
                time.sleep(0.2)
        assert ec2.instances() == [], err
        assert ec2.secret not in out + err
    finally:
        if master.poll() is None:
            master.kill()
            master.communicate()


# ------------------------------------------------------------------ termination is retried, failures named


@pytest.mark.parametrize("fail_destroy", [2, -1])
def test_termination_is_retried_and_failures_name_the_nodes(server, runnable, tmp_path,
                                                             monkeypatch, fail_destroy):
    monkeypatch.setattr(cloud, "TERMINATE_BACKOFF", 0.01)
    entry = dummy_entry(server, provider="cloudhelpers:FlakyDummyDriver", count=2,
                        driver_options={"fail_destroy": fail_destroy})
    specs = load_config(write_conf(tmp_path, entry))
    cluster = specs[0].cluster
    pool = Pool(specs)
    driver = cluster.driver()
    ids = [str(node.id) for node in cluster.nodes]
    if fail_destroy >= 0:
        pool.shutdown()  # third attempt succeeds
        assert driver.destroy_calls == {i: 3 for i in ids}
        assert not [n for n in driver.list_nodes() if n in cluster.nodes]
        return
    with pytest.raises(cloud.CloudError) as info:
        pool.shutdown()
    message = str(info.value)
    assert driver.destroy_calls == {i: cloud.TERMINATE_ATTEMPTS for i in ids}
    assert "2 node(s) at provider 'cloudhelpers:FlakyDummyDriver' could not be terminated" in message
    for node in cluster.nodes:
        assert f"node {node.id} ({node.name}): " in message
    assert "injected failure" in message and "cloud cleanup" in message
    assert not pool.workers[0].alive or pool._closed  # the workers were stopped all the same
    driver.fail_destroy = 0
    cluster._released = False
    cluster.release()  # leave nothing behind for the atexit hook


# ------------------------------------------------------------------ warm nodes (keep_alive)


@pytest.fixture
def state(tmp_path, monkeypatch):
    directory = tmp_path / "cloud-state"
    monkeypatch.setenv("PYDRON_CLOUD_STATE", str(directory))
    return directory


def run_once(conf):
    specs = load_config(conf)
    pool = Pool(specs)
    try:
        graph = Graph(lambda: pool)
        assert graph.submit(T.square, (7,), {})._pd_result() == 49
    finally:
        pool.shutdown()
    return specs[0].cluster


def test_lease_reuses_warm_nodes_then_ends_them(server, runnable, ec2, tmp_path, state):
    conf = write_conf(tmp_path, ec2_entry(ec2, server, count=2, keep_alive=0.05))  # 3 s lease
    before = all_instance_ids(ec2)
    first = run_once(conf)
    ids = {node.id for node in first.nodes}
    assert {i["InstanceId"] for i in ec2.instances()} == ids  # outlived the run
    reapers = [line for line in T.all_cmdlines() if "pydron.remote.cloud reap" in line]
    assert reapers and not [line for line in reapers if ec2.secret in line or ec2.key_id in line]
    second = run_once(conf)
    assert second.reused and {node.id for node in second.nodes} == ids
    assert all_instance_ids(ec2) - before == ids  # nothing new was started
    assert second.run_id == first.run_id
    deadline = time.monotonic() + 30  # the lease ends 3 s after the second run
    while ec2.instances() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ec2.instances() == []
    assert [p.name for p in state.iterdir() if p.suffix == ".json"] == []


def test_keep_alive_until_cleanup(server, runnable, ec2, tmp_path, state):
    conf = write_conf(tmp_path, ec2_entry(ec2, server, count=1, keep_alive=True))
    cluster = run_once(conf)
    assert [i["InstanceId"] for i in ec2.instances()] == [cluster.nodes[0].id]
    listed = run_cli("cloud", "list", conf=conf)
    assert cluster.nodes[0].id in listed.stdout
    assert run_cli("cloud", "cleanup", conf=conf).returncode == 0
    assert ec2.instances() == []
    again = run_once(conf)  # the kept node is gone: a new one, kept in turn
    assert not again.reused and again.nodes[0].id != cluster.nodes[0].id
    assert run_cli("cloud", "cleanup", conf=conf).returncode == 0


def test_warm_nodes_are_not_kept_when_a_node_fails(ec2, sshd, tmp_path, state):
    entry = ec2_entry(ec2, sshd, count=1, keep_alive=True, ssh_timeout=2)
    entry["ssh_options"]["ProxyCommand"] = f"nc 127.0.0.1 {S.free_port()}"
    _pool_failure(load_config(write_conf(tmp_path, entry)))
    assert ec2.instances() == []
    assert [p.name for p in state.iterdir() if p.suffix == ".json"] == []


# ------------------------------------------------------------------ a dead worker's node: same or new


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def host_of(worker):
    """The address ssh went to for ``worker`` (its ssh config's HostName)."""
    with open(worker.gateway._io.popen.args[3]) as handle:
        return [line.split()[1] for line in handle.read().splitlines() if "HostName" in line][0]


def running_somewhere(pool, count):
    """Wait until ``count`` tasks have been sent to the pool's workers."""
    wait_until(lambda: sum(len(w.inflight) for w in pool.workers) == count, 30,
               f"{count} task(s) in flight")


@pytest.fixture
def by_value_here():
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.timeout(150)
@pytest.mark.parametrize("how,cores", [("terminate", 1), ("stop", 1), ("terminate", 2)])
def test_ec2_gone_node_is_replaced_by_a_new_node(server, runnable, ec2, tmp_path, by_value_here,
                                                 how, cores):
    """The node goes away (EC2 API) under running tasks: a new node takes its slot, its
    workers re-run the tasks there, and every node, old and new, is terminated at the end."""
    entry = ec2_entry(ec2, server, count=1, cores=cores, poll_interval=0.2,
                      publickey=server.identity_file + ".pub")
    specs = load_config(write_conf(tmp_path, entry))
    cluster = specs[0].cluster
    pool = Pool(specs)
    told = []  # node ids the guardian was told about
    tell = cluster._guardian.node
    cluster._guardian.node = lambda node: (told.append(node.id), tell(node))
    try:
        [old] = cluster.nodes
        old_workers = pool.workers
        assert {host_of(w) for w in old_workers} == {old.public_ips[0]}
        graph = Graph(lambda: pool)
        futures = [graph.submit(nap_pid, (3,), {}) for _ in range(cores)]
        running_somewhere(pool, cores)
        if how == "terminate":
            ec2.client().terminate_instances(InstanceIds=[old.id])
        else:
            ec2.client().stop_instances(InstanceIds=[old.id])
        for worker in old_workers:  # what the instance's shutdown does to its processes
            os.kill(worker.info["pid"], signal.SIGTERM)
        pids = {f._pd_result() for f in futures}
        assert len(pids) == cores and not pids & {w.info["pid"] for w in old_workers}

        assert len(cluster.nodes) == 2 and cluster.replaced == 1
        new = cluster.nodes[1]
        assert cluster.slots == [new] and told == [new.id]
        assert new.name == f"pydron-{cluster.run_id}-1-2"
        [instance] = ec2.instances()                      # the old one is terminated already
        assert instance["InstanceId"] == new.id and instance["State"]["Name"] == "running"
        assert tags_of(instance)[cloud.RUN_TAG] == cluster.run_id
        assert instance.get("KeyName")                    # same key pair as the first node
        assert [cloud.node_run(n) for n in cloud.alive_nodes(cluster)] == [cluster.run_id]
        # the tasks ran on the new node's workers, which took the dead ones' places
        workers = pool.workers
        assert pids == {w.info["pid"] for w in workers}
        assert {host_of(w) for w in workers} == {new.public_ips[0]} != {old.public_ips[0]}
        assert sorted(w.label.rsplit("+", 1)[0] for w in workers) == sorted(
            w.label for w in old_workers)
        assert pool.replacements == cores and sorted(pool.deaths) == sorted(
            w.label for w in old_workers)
        assert [f._pd_result() for f in [graph.submit(T.square, (i,), {}) for i in range(6)]] \
            == [i * i for i in range(6)]
    finally:
        pool.shutdown()
    assert ec2.instances() == []
    terminated = {i["InstanceId"] for i in ec2.instances(states=("terminated",))}
    assert {old.id, new.id} <= terminated


@pytest.mark.timeout(120)
def test_ec2_killed_worker_on_a_running_node_reconnects_to_it(server, runnable, ec2, tmp_path,
                                                              by_value_here):
    specs = load_config(write_conf(tmp_path, ec2_entry(ec2, server, count=1, poll_interval=0.2)))
    cluster = specs[0].cluster
    pool = Pool(specs)
    try:
        [node] = cluster.nodes
        before = all_instance_ids(ec2)
        [old] = pool.workers
        shipped = set(os.listdir(server.user_tmp))        # the killed worker cannot remove its own
        graph = Graph(lambda: pool)
        future = graph.submit(nap_pid, (2,), {})
        running_somewhere(pool, 1)
        os.kill(old.info["pid"], signal.SIGKILL)
        pid = future._pd_result()
        [worker] = pool.workers
        assert pid == worker.info["pid"] != old.info["pid"] and worker.label == f"{old.label}+1"
        assert host_of(worker) == node.public_ips[0]     # the same node, reached again
        assert all_instance_ids(ec2) == before and cluster.nodes == [node]
        assert cluster.replaced == 0 and cluster.slots == [node]
    finally:
        pool.shutdown()
        for name in shipped:
            subprocess.run(["rm", "-rf", os.path.join(server.user_tmp, name)], check=False)
    assert ec2.instances() == []


@pytest.mark.timeout(150)
def test_ec2_node_that_keeps_going_is_replaced_at_most_count_times(server, runnable, ec2,
                                                                    tmp_path, by_value_here):
    """count=1: one new node; when that one goes too, the call fails at once, naming the limit."""
    specs = load_config(write_conf(tmp_path, ec2_entry(ec2, server, count=1, poll_interval=0.2)))
    cluster = specs[0].cluster
    pool = Pool(specs)
    try:
        graph = Graph(lambda: pool)
        future = graph.submit(nap_pid, (20,), {})
        for round in range(2):
            running_somewhere(pool, 1)
            [worker] = pool.workers
            node = cluster.slots[0]
            ec2.client().terminate_instances(InstanceIds=[node.id])
            os.kill(worker.info["pid"], signal.SIGTERM)
            if round == 0:
                wait_until(lambda: pool.workers[0] is not worker and pool.workers[0].alive, 60,
                           "a worker on a new node")
        start = time.monotonic()
        with pytest.raises(pool_module.WorkerDied) as info:
            future._pd_result()
        assert time.monotonic() - start < 20
        message = str(info.value)
        assert f"node {node.id} ({node.name}) at provider {MOTO_PROVIDER!r} is gone (terminated " \
               f"at the provider); not replaced: this entry already started 1 new node(s) in " \
               f"this run, at most count=1" in message, message
        assert len(cluster.nodes) == 2 and ec2.instances() == []
    finally:
        pool.shutdown()
    assert ec2.instances() == []


@pytest.mark.timeout(120)
def test_dummy_silent_node_that_is_not_running_is_replaced(server, runnable, tmp_path,
                                                           monkeypatch, by_value_here):
    """The provider says "pending" and ssh gets no answer: after NOT_RUNNING_GRACE, a new node."""
    from libcloud.compute.types import NodeState

    monkeypatch.setattr(cloud, "NOT_RUNNING_GRACE", 1.0)
    entry = dummy_entry(server, count=1, poll_interval=0.2, ssh_timeout=60)
    specs = load_config(write_conf(tmp_path, entry))
    cluster = specs[0].cluster
    pool = Pool(specs)
    try:
        driver = cluster.driver()
        [old] = cluster.nodes
        [worker] = pool.workers
        # the node hangs: its provider calls it pending, and its ssh port is closed
        old.state = NodeState.PENDING
        good = cluster.settings.ssh_options
        cluster.settings.ssh_options = {**good, "ProxyCommand": f"nc 127.0.0.1 {S.free_port()}"}
        cluster._ssh_specs[str(old.id)] = cluster._node_ssh_specs(0, old, old.public_ips)
        cluster.settings.ssh_options = good
        graph = Graph(lambda: pool)
        future = graph.submit(nap_pid, (1,), {})
        running_somewhere(pool, 1)
        start = time.monotonic()
        os.kill(worker.info["pid"], signal.SIGTERM)
        assert future._pd_result() == pool.workers[0].info["pid"]
        assert time.monotonic() - start < 30              # not ssh_timeout=60
        assert len(cluster.nodes) == 2 and cluster.slots == [cluster.nodes[1]]
        assert host_of(pool.workers[0]) == cluster.nodes[1].public_ips[0] != old.public_ips[0]
        assert old not in driver.list_nodes()             # terminated when it was replaced
    finally:
        pool.shutdown()
    assert not [node for node in driver.list_nodes() if node in cluster.nodes]


REPLACING = """
import sys, time
from pydron.config import load_config
from pydron.remote.pool import Pool
specs = load_config(sys.argv[1])
cluster = specs[0].cluster
pool = Pool(specs)
[worker] = pool.workers
print(cluster.nodes[0].id, worker.info["pid"], flush=True)
deadline = time.monotonic() + 60
while (pool.workers[0] is worker or not pool.workers[0].alive) and time.monotonic() < deadline:
    time.sleep(0.05)
print(" ".join(node.id for node in cluster.nodes), flush=True)
sys.stdin.read()
"""


@pytest.mark.timeout(150)
def test_guardian_terminates_the_new_node_of_a_killed_master(server, runnable, ec2, tmp_path):
    """A master SIGKILLed after replacing a gone node: its guardian ends the new node too."""
    conf = write_conf(tmp_path, ec2_entry(ec2, server, count=1, poll_interval=0.2))
    script = tmp_path / "replacing.py"
    script.write_text(REPLACING)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, TESTS])}
    master = subprocess.Popen([sys.executable, str(script), str(conf)], cwd=str(tmp_path), env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = master.stdout.readline().split()
        assert len(line) == 2, master.stderr.read() if master.poll() is not None else line
        old, pid = line[0], int(line[1])
        ec2.client().terminate_instances(InstanceIds=[old])
        os.kill(pid, signal.SIGTERM)
        ids = master.stdout.readline().split()
        assert len(ids) == 2 and ids[0] == old, ids
        assert [i["InstanceId"] for i in ec2.instances()] == [ids[1]]
        master.kill()
        master.wait(timeout=10)
        wait_until(lambda: not ec2.instances(), 30, "the guardian terminated the new node")
        assert set(ids) <= {i["InstanceId"] for i in ec2.instances(states=("terminated",))}
    finally:
        if master.poll() is None:
            master.kill()
        master.communicate(timeout=10)
