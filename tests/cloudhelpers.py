"""Stand-ins for cloud tests: an EC2 driver that reads moto's replies, a moto server.

``MotoEC2NodeDriver`` is libcloud's own EC2 driver with the replies of a
moto server (5.x) normalised before libcloud parses them; pass it as a
``"cloudhelpers:MotoEC2NodeDriver"`` provider.  What differs (apache-libcloud
3.9, moto 5.2):

* moto writes the namespace ``http://ec2.amazonaws.com/doc/2016-11-15``
  without the trailing slash libcloud looks for;
* error documents carry that namespace, and libcloud looks for ``Errors/Error``
  without one;
* an error has ``<Type>`` besides ``<Code>`` and ``<Message>``, which libcloud
  unpacks as a pair;
* CreateTags/DeleteTags replies have no ``<return>``;
* moto checks SigV4 signatures with botocore, which leaves ``User-Agent`` out
  of the signed headers (libcloud signs it), and over a GET query it has
  already decoded (values with ``:``, ``/``, ``+`` fail): requests go as form POSTs;
* libcloud numbers tag lists (``Tag.0.Key``) from 0, moto reads from 1.

The production path (``"provider": "ec2"``) is libcloud's driver as it is.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

from libcloud.compute.drivers.ec2 import (
    NAMESPACE, EC2Connection, EC2NodeDriver, EC2Response,
)

_NS_RE = re.compile(r'xmlns="http://ec2\.amazonaws\.com/doc/([0-9-]+)"')


def _normalise(body: str) -> str:
    return _NS_RE.sub(lambda m: f'xmlns="{NAMESPACE}"', body)


class MotoEC2Response(EC2Response):
    def parse_body(self):
        if isinstance(self.body, str):
            self.body = _normalise(self.body)
            # CreateTags / DeleteTags: no <return> in moto's reply
            for action in ("CreateTagsResponse", "DeleteTagsResponse"):
                if f"<{action}" in self.body and "<return>" not in self.body:
                    self.body = self.body.replace(f"</{action}>", f"<return>true</return></{action}>")
        return super().parse_body()

    def parse_error(self):
        if isinstance(self.body, str):
            self.body = _NS_RE.sub("", self.body)  # libcloud reads Errors/Error without one
            # and expects exactly <Code> and <Message> in each error (moto adds <Type>)
            self.body = re.sub(r"<Type>[^<]*</Type>", "", self.body)
        return super().parse_error()


class MotoEC2Connection(EC2Connection):
    responseCls = MotoEC2Response

    def request(self, action, params=None, data=None, headers=None, method="GET", raw=False,
                **kwargs):
        # moto checks a GET's signature over a query it has decoded, so values with
        # ':', '/', '+' (key names, key material) fail; as a form POST they do not.
        if method == "GET" and params and data is None:
            from urllib.parse import urlencode

            data = urlencode(sorted(params.items()))
            headers = {**(headers or {}), "Content-Type": "application/x-www-form-urlencoded"}
            params, method = {}, "POST"
        return super().request(action, params=params, data=data, headers=headers,
                               method=method, raw=raw, **kwargs)

    def pre_connect_hook(self, params, headers):
        # moto checks signatures with botocore, which never signs User-Agent
        agent = headers.pop("User-Agent", None)
        params, headers = super().pre_connect_hook(params, headers)
        if agent is not None:
            headers["User-Agent"] = agent
        return params, headers


class MotoEC2NodeDriver(EC2NodeDriver):
    """libcloud's EC2 driver, reading a moto server's replies."""

    connectionCls = MotoEC2Connection

    def __init__(self, key, secret=None, **kwargs):
        kwargs.setdefault("signature_version", "4")  # moto routes by the SigV4 scope
        super().__init__(key, secret, **kwargs)

    def ex_create_tags(self, resource, tags):
        if not tags:
            return
        params = {"Action": "CreateTags", "ResourceId.1": resource.id}
        for i, key in enumerate(tags, 1):
            params[f"Tag.{i}.Key"] = key
            params[f"Tag.{i}.Value"] = tags[key]
        res = self.connection.request(self.path, params=params).object
        return self._get_boolean(res)

    def ex_delete_tags(self, resource, tags):
        if not tags:
            return
        params = {"Action": "DeleteTags", "ResourceId.1": resource.id}
        for i, key in enumerate(tags, 1):
            params[f"Tag.{i}.Key"] = key
            if tags[key] is not None:
                params[f"Tag.{i}.Value"] = tags[key]
        res = self.connection.request(self.path, params=params).object
        return self._get_boolean(res)


# ------------------------------------------------------------------ the moto server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """``python -m moto.server`` on a free 127.0.0.1 port, as a child process."""

    region = "us-east-1"

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.key_id, self.secret = "testing", "testing"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, attempts: int = 5, auth: bool = True) -> "MotoServer":
        """Start the server; with ``auth``, it checks credentials (``key_id``, ``secret``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        if auth:  # the first 3 requests make the IAM user, then every request is checked
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
        for _ in range(attempts):
            self.port = free_port()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=env, start_new_session=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).read()
                except OSError:
                    time.sleep(0.1)
                    continue
                if auth:
                    self._make_user()
                return self
            self.stop()
        raise RuntimeError("the moto server did not start")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _make_user(self) -> None:
        """An IAM user allowed everything; its key is what the tests use (3 requests)."""
        import json

        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name=self.region,
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="pydron-test")
        iam.put_user_policy(UserName="pydron-test", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="pydron-test")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]

    def client(self):
        import boto3

        return boto3.client("ec2", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret)

    def instances(self, states=("pending", "running", "stopping", "stopped", "shutting-down")
                  ) -> list[dict]:
        """moto's instances in ``states`` (default: all not terminated), as boto3 describes them."""
        found = []
        pages = self.client().get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": list(states)}])
        for page in pages:
            for reservation in page["Reservations"]:
                found.extend(reservation["Instances"])
        return found

    def driver_options(self) -> dict:
        return {"host": "127.0.0.1", "port": self.port, "secure": False}


# ------------------------------------------------------------------ a driver that fails to terminate


from libcloud.compute.drivers.dummy import DummyNodeDriver  # noqa: E402


class FlakyDummyDriver(DummyNodeDriver):
    """libcloud's dummy driver whose ``destroy_node`` fails ``fail_destroy`` times per node
    (``-1``: always), as a provider's API might under load."""

    def __init__(self, creds, fail_destroy: int = 0):
        super().__init__(creds)
        self.fail_destroy = fail_destroy
        self.destroy_calls: dict[str, int] = {}

    def destroy_node(self, node):
        calls = self.destroy_calls[str(node.id)] = self.destroy_calls.get(str(node.id), 0) + 1
        if self.fail_destroy < 0 or calls <= self.fail_destroy:
            raise ConnectionError(f"injected failure {calls} terminating {node.id}")
        return super().destroy_node(node)
