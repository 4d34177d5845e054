"""A real etcd + kube-apiserver on 127.0.0.1, built from the Go module proxy and run by the project.

No Docker and no release tarballs: ``go`` builds both binaries from the module proxy
(``notes/kubernetes-local.md``). There is no kubelet, scheduler or controller manager, so
pods never run, but objects are validated, stored, listed and watched as in a cluster.

Contract
--------
* :func:`ensure_binaries` (from :mod:`deploy.runtime.kubebuild`, re-exported) builds ``etcd`` and
  ``kube-apiserver`` once into ``~/.cache/kubeward/kube/<versions>/bin`` and returns that dir.
* :class:`LocalKube` is a context manager: it starts etcd and kube-apiserver on free ports in a
  temporary dir (service-account key pair from ``cryptography``, a static token file,
  ``AlwaysAllow`` unless ``authorization_mode="RBAC"`` is asked for), waits for ``/readyz``, writes a kubeconfig (:attr:`LocalKube.kubeconfig`: admin
  token, trusting the CA the server made for itself) and stops both process groups on exit,
  whatever happened (an ``atexit`` hook covers a missed exit). :meth:`LocalKube.ensure_namespace`
  creates a namespace and its ``default`` ServiceAccount (nothing else would: no controllers).
  :meth:`LocalKube.stop_apiserver`, :meth:`LocalKube.start_apiserver` and
  :meth:`LocalKube.restart_apiserver` cycle the API server on the same port and etcd.
* With ``authorization_mode="RBAC"`` the server enforces RBAC (its bootstrap ClusterRoles included);
  the admin token's user is in ``system:masters`` and keeps every right, and may impersonate:
  :meth:`LocalKube.request` with ``impersonate="system:serviceaccount:<ns>:<name>"`` makes the call
  as that ServiceAccount, :meth:`LocalKube.can` asks a SubjectAccessReview.

Errors: :class:`KubeError` (cannot build or run), :class:`KubeApiError` (an API call's HTTP error).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from deploy.runtime.kubebuild import ETCD_VERSION, KUBE_VERSION, KubeError, cache_dir, ensure_binaries

__all__ = ["ETCD_VERSION", "KUBE_VERSION", "KubeApiError", "KubeError", "LocalKube", "cache_dir", "ensure_binaries"]

HOST = "127.0.0.1"
TOKEN = "kubeward-dev-token"


class KubeApiError(KubeError):
    """An API call answered an HTTP error; :attr:`status` is its code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# -------------------------------------------------------------------------- running


def _free_ports(count: int) -> list[int]:
    """Distinct ports the kernel hands out for bind(0), all sockets held open together."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _write_sa_keys(private: Path, public: Path) -> None:
    """An RSA key pair in PEM for signing and checking service-account tokens."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers, and reap the leader."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.poll()


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


class LocalKube:
    """etcd + kube-apiserver on free 127.0.0.1 ports for the life of a ``with`` block.

    Parameters
    ----------
    namespaces:
        Namespaces to create, each with its ``default`` ServiceAccount, once the server is ready.
    bin_dir:
        Where ``etcd`` and ``kube-apiserver`` are; default :func:`ensure_binaries` (builds if needed).
    workdir:
        Where data, certificates, logs and the kubeconfig go; default a fresh temporary dir, removed on exit.
    ready_timeout:
        Seconds to wait for etcd and then for the API server's ``/readyz``.
    authorization_mode:
        kube-apiserver's ``--authorization-mode``: ``AlwaysAllow`` (default) or ``RBAC``.
    """

    def __init__(self, namespaces: tuple[str, ...] = (), bin_dir: Path | None = None, workdir: Path | None = None,
                 ready_timeout: float = 120.0, authorization_mode: str = "AlwaysAllow") -> None:
        if authorization_mode not in ("AlwaysAllow", "RBAC"):
            raise ValueError(f"authorization_mode must be AlwaysAllow or RBAC, not {authorization_mode!r}")
        self.namespaces = namespaces
        self.authorization_mode = authorization_mode
        self.ready_timeout = ready_timeout
        self._bin_dir = bin_dir
        self._given_workdir = workdir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir = Path()
        self.etcd_port = self.etcd_peer_port = self.port = 0
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._probe_tls = ssl.create_default_context()  # /readyz polls: the CA exists only once the server runs
        self._probe_tls.check_hostname = False
        self._probe_tls.verify_mode = ssl.CERT_NONE
        self._tls = self._probe_tls

    # ---------------------------------------------------------------- addresses

    @property
    def server(self) -> str:
        """The API server's URL (``https://127.0.0.1:<port>``)."""
        return f"https://{HOST}:{self.port}"

    @property
    def etcd_url(self) -> str:
        """etcd's client URL (plain HTTP)."""
        return f"http://{HOST}:{self.etcd_port}"

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig (static admin token, the server's own CA) for the ``kubernetes`` client, kubectl and helm."""
        return self.workdir / "kubeconfig"

    @property
    def token(self) -> str:
        """The bearer token of the ``system:masters`` user."""
        return TOKEN

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> LocalKube:
        bin_dir = self._bin_dir or ensure_binaries()
        self._etcd_bin, self._apiserver_bin = bin_dir / "etcd", bin_dir / "kube-apiserver"
        if self._given_workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kubeward-kube-")
        self.workdir = Path(self._tmp.name if self._tmp else self._given_workdir or ".")
        self.workdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.__exit__, None, None, None)  # no processes left behind, even without __exit__
        try:
            self._prepare()
            self._start_etcd()
            self.start_apiserver()
            for namespace in self.namespaces:
                self.ensure_namespace(namespace)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        atexit.unregister(self.__exit__)
        self.stop_apiserver()
        _stop(self._etcd)
        self._etcd = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _prepare(self) -> None:
        self.etcd_port, self.etcd_peer_port, self.port = _free_ports(3)
        _write_sa_keys(self.workdir / "sa.key", self.workdir / "sa.pub")
        (self.workdir / "tokens.csv").write_text(f"{TOKEN},admin,admin,system:masters\n")

    def _trust_server_ca(self) -> None:
        """Take the self-signed CA kube-apiserver wrote into its cert dir; write the kubeconfig that trusts it."""
        bundle = (self.workdir / "certs" / "apiserver.crt").read_text()
        ca = self.workdir / "ca.crt"
        ca.write_text("-----BEGIN CERTIFICATE-----" + bundle.split("-----BEGIN CERTIFICATE-----")[-1])
        self._tls = ssl.create_default_context(cafile=str(ca))
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "kubeward-local", "preferences": {},
            "clusters": [{"name": "kubeward-local", "cluster": {"server": self.server, "certificate-authority": str(ca)}}],
            "users": [{"name": "admin", "user": {"token": TOKEN}}],
            "contexts": [{"name": "kubeward-local", "context": {"cluster": "kubeward-local", "user": "admin"}}],
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML: every client reads it

    def _start_etcd(self) -> None:
        peer = f"http://{HOST}:{self.etcd_peer_port}"
        cmd = [str(self._etcd_bin), "--name", "default", "--data-dir", str(self.workdir / "etcd-data"),
               "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
               "--initial-cluster", f"default={peer}", "--log-level", "warn", "--unsafe-no-fsync"]
        log = self.workdir / "etcd.log"
        self._etcd = _spawn(cmd, log)
        self._wait(lambda: self._http_ok(self.etcd_url + "/health", tls=False), "etcd /health", self._etcd, log)

    def start_apiserver(self) -> None:
        """Start kube-apiserver (again) on :attr:`port` against the running etcd and wait for ``/readyz``."""
        # the loopback advertise address is only accepted without the `kubernetes` endpoint reconciler
        cmd = [str(self._apiserver_bin), f"--etcd-servers={self.etcd_url}", f"--bind-address={HOST}",
               f"--advertise-address={HOST}", "--endpoint-reconciler-type=none", f"--secure-port={self.port}",
               f"--cert-dir={self.workdir / 'certs'}",
               f"--token-auth-file={self.workdir / 'tokens.csv'}", f"--authorization-mode={self.authorization_mode}",
               "--service-account-issuer=https://kubernetes.default.svc",
               f"--service-account-key-file={self.workdir / 'sa.pub'}",
               f"--service-account-signing-key-file={self.workdir / 'sa.key'}",
               "--service-cluster-ip-range=10.96.0.0/16", "--profiling=false", "--v=1"]
        log = self.workdir / "kube-apiserver.log"
        self._apiserver = _spawn(cmd, log)
        self._wait(lambda: self._http_ok(self.server + "/readyz", tls=True), "kube-apiserver /readyz", self._apiserver, log)
        self._trust_server_ca()

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver (etcd keeps running); watchers see their connections drop."""
        _stop(self._apiserver)
        self._apiserver = None

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver on the same port and etcd."""
        self.stop_apiserver()
        self.start_apiserver()

    def _wait(self, ready: Any, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise KubeError(f"{what}: process exited with {proc.returncode}; log {log}:\n{_tail(log)}")
            if ready():
                return
            time.sleep(0.25)
        raise KubeError(f"{what} not ready within {self.ready_timeout} s; log {log}:\n{_tail(log)}")

    def _http_ok(self, url: str, tls: bool) -> bool:
        headers = {"Authorization": f"Bearer {TOKEN}"} if tls else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2,
                                        context=self._probe_tls if tls else None) as resp:
                return int(resp.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    # ---------------------------------------------------------------- API calls

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json", impersonate: str | None = None) -> dict[str, Any]:
        """One API call with the admin token; returns the decoded JSON, raises :class:`KubeApiError` on an HTTP error.

        ``impersonate`` (a user name such as ``system:serviceaccount:<ns>:<name>``) makes the call as that user.
        """
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type, "Accept": "application/json"}
        if impersonate is not None:
            headers["Impersonate-User"] = impersonate
        req = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self._tls) as resp:
                result: dict[str, Any] = json.loads(resp.read() or b"{}")
                return result
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise KubeApiError(f"{method} {path} answered {exc.code}: {detail}", exc.code) from exc

    def can(self, user: str, verb: str, resource: str, namespace: str = "", group: str = "",
            groups: tuple[str, ...] = ()) -> bool:
        """Whether ``user`` (in ``groups``) may ``verb`` ``resource`` in ``namespace`` ("" = every namespace), per a SubjectAccessReview.

        A ServiceAccount user also gets its groups (``system:serviceaccounts``, ``...:<ns>``, ``system:authenticated``)
        as the token authenticator would give them.
        """
        if user.startswith("system:serviceaccount:") and not groups:
            sa_namespace = user.split(":")[2]
            groups = ("system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}", "system:authenticated")
        attributes = {"verb": verb, "resource": resource, "group": group, "namespace": namespace}
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": {"user": user, "groups": list(groups), "resourceAttributes": attributes}}
        answer = self.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        return bool(answer.get("status", {}).get("allowed"))

    def _create(self, path: str, body: dict[str, Any]) -> None:
        try:
            self.request("POST", path, body)
        except KubeApiError as exc:
            if exc.status != 409:  # 409: exists already
                raise

    def ensure_namespace(self, name: str) -> None:
        """Create namespace ``name`` and its ``default`` ServiceAccount unless they exist."""
        self._create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        self.ensure_service_account(name, "default")

    def ensure_service_account(self, namespace: str, name: str) -> None:
        """Create ServiceAccount ``namespace/name`` unless it exists (pods naming it are rejected otherwise)."""
        self._create(f"/api/v1/namespaces/{namespace}/serviceaccounts",
                     {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}})

    def wait_established(self, crd: str, timeout: float = 60.0) -> None:
        """Wait until CustomResourceDefinition ``crd`` is Established (its resources can be created); KubeError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}").get("status", {})
            if any(c["type"] == "Established" and c["status"] == "True" for c in status.get("conditions") or []):
                return
            time.sleep(0.2)
        raise KubeError(f"CRD {crd} not established within {timeout} s")
