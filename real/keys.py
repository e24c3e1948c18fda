"""Key files and node identities: who may speak for the manager and for each host.

One secret, the **cluster key** (``neverstop real keygen PATH``), stands behind every
identity. From it each identity's Ed25519 signing key is derived (HMAC-SHA256 of the
secret and the identity's name), so the manager needs nothing but the cluster key:

- ``manager``: the management node's processes; signs its frames with the manager key.
- ``host:NAME``: a compute host. Its public key comes with a *certificate*, the
  manager key's signature over the name and the public key, so any node that knows the
  manager's public key can check that a frame signed as ``host:host-2`` really comes
  from the holder of host-2's key.

A compute host should hold a **host key** (``neverstop real keygen --host NAME --from
CLUSTER_KEY PATH``): its own signing seed, its certificate and the manager's public key,
nothing more. A host that is broken into can then speak only as itself: it cannot sign
as the manager, nor as another host. (An agent given the cluster key itself works too,
with the cluster key's exposure.) The CLI authenticates control requests with a third
key derived from the cluster secret, so a host key is no use there either.

A key file is TOML, and it is refused unless it is a regular file that neither group nor
others can read (``chmod 600``): a daemon with a key anyone can copy is not secured.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import tomllib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DEFAULT_KEY = "/etc/neverstop/cluster.key"
FORMAT = "neverstop-key/1"
MANAGER = "manager"
HOST_PREFIX = "host:"
SECRET_BYTES = 32
_CERT_CONTEXT = b"neverstop/1 host certificate\0"


class KeyFileError(Exception):
    """A key file that cannot be used: one line naming the file and what is wrong."""


def host_identity(name: str) -> str:
    return HOST_PREFIX + name


def host_of(identity: str) -> str | None:
    """The host name an identity speaks for; None for the manager."""
    return identity[len(HOST_PREFIX):] if identity.startswith(HOST_PREFIX) else None


def _derive(secret: bytes, label: str) -> bytes:
    return hmac.new(secret, b"neverstop/1 " + label.encode(), hashlib.sha256).digest()


def _signer(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _cert_payload(name: str, public: bytes) -> bytes:
    return _CERT_CONTEXT + name.encode() + b"\0" + public


def verify_certificate(manager_public: bytes, name: str, public: bytes, certificate: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(manager_public).verify(certificate, _cert_payload(name, public))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Identity:
    """What a process signs with, and what it checks others against."""

    name: str  # "manager" or "host:NAME"
    signer: Ed25519PrivateKey
    public: bytes
    certificate: bytes  # the manager's signature over a host's name and key; b"" for the manager
    manager_public: bytes

    def sign(self, data: bytes) -> bytes:
        return self.signer.sign(data)

    def local_key(self, label: str) -> bytes:
        """A MAC key for files this node's own processes share (the watchdog's state file)."""
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        seed = self.signer.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return _derive(seed, label)


@dataclass(frozen=True)
class KeyFile:
    path: str
    kind: str  # "cluster" or "host"
    secret: bytes  # cluster: the cluster secret; host: the host's signing seed
    name: str = ""  # host keys: the host
    manager_public: bytes = b""
    certificate: bytes = b""

    def manager(self) -> Identity:
        if self.kind != "cluster":
            raise KeyFileError(f"{self.path}: a host key cannot act as the manager (give the cluster key)")
        signer = _signer(_derive(self.secret, MANAGER))
        public = public_bytes(signer)
        return Identity(MANAGER, signer, public, b"", public)

    def host(self, name: str) -> Identity:
        if self.kind == "host":
            if name != self.name:
                raise KeyFileError(f"{self.path}: this is the key of host {self.name!r}, not {name!r}")
            signer = _signer(self.secret)
            return Identity(host_identity(name), signer, public_bytes(signer), self.certificate,
                            self.manager_public)
        manager = self.manager()
        signer = _signer(_derive(self.secret, HOST_PREFIX + name))
        public = public_bytes(signer)
        return Identity(host_identity(name), signer, public, manager.sign(_cert_payload(name, public)),
                        manager.public)

    def control_key(self) -> bytes:
        """The HMAC key of control requests (CLI -> manager): cluster key holders only."""
        if self.kind != "cluster":
            raise KeyFileError(f"{self.path}: a host key cannot steer the manager (give the cluster key)")
        return _derive(self.secret, "control")

    def host_key_text(self, name: str) -> str:
        ident = self.host(name)
        seed = _derive(self.secret, HOST_PREFIX + name)
        return (f"# neverstop host key of {name}: it lets this host speak as {name} only. Keep it 0600.\n"
                f'format = "{FORMAT}"\nkind = "host"\nname = "{name}"\nsecret = "{seed.hex()}"\n'
                f'manager = "{ident.manager_public.hex()}"\ncertificate = "{ident.certificate.hex()}"\n')


def cluster_key_text(secret: bytes) -> str:
    return ("# neverstop cluster key: whoever holds it controls HA on every host. Keep it 0600, root only.\n"
            f'format = "{FORMAT}"\nkind = "cluster"\nsecret = "{secret.hex()}"\n')


def write_key(path: str, text: str) -> None:
    """Create ``path`` (mode 0600, never over an existing file or through a symlink)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path}: exists; not overwritten (remove it first to rotate the key)") from None
    except OSError as err:
        raise KeyFileError(f"{path}: cannot create: {err.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    except OSError as err:
        os.close(fd)
        os.unlink(path)
        raise KeyFileError(f"{path}: cannot write: {err.strerror}") from None
    os.close(fd)


def keygen(path: str, host: str | None = None, cluster_key: str | None = None) -> str:
    """Write a new cluster key, or (``host``) the host key of ``host`` from ``cluster_key``."""
    if host is None:
        text = cluster_key_text(os.urandom(SECRET_BYTES))
    else:
        if cluster_key is None:
            raise KeyFileError("a host key is made from the cluster key: give --from CLUSTER_KEY")
        text = load_key(cluster_key).host_key_text(host)
    write_key(path, text)
    return path


def _hex(path: str, data: dict[str, object], field: str, size: int) -> bytes:
    value = data.get(field)
    try:
        raw = bytes.fromhex(str(value))
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise KeyFileError(f"{path}: '{field}' must be {size * 2} hex digits")
    return raw


def load_key(path: str) -> KeyFile:
    """Read and check a key file; KeyFileError (one line) when it is missing, unsafe or bad."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file (make one: neverstop real keygen {path})") from None
    except OSError as err:
        raise KeyFileError(f"{path}: cannot read the key file: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError(f"{path}: readable or writable by group or others "
                               f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}")
        if st.st_uid not in (0, os.geteuid()):
            raise KeyFileError(f"{path}: owned by uid {st.st_uid}, not by root")
        raw = os.read(fd, 4096)
    except OSError as err:
        raise KeyFileError(f"{path}: cannot read the key file: {err.strerror}") from None
    finally:
        os.close(fd)
    try:
        data = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise KeyFileError(f"{path}: not a neverstop key file ({err})") from None
    if data.get("format") != FORMAT:
        raise KeyFileError(f"{path}: not a neverstop key file (format must be {FORMAT!r})")
    kind = data.get("kind")
    if kind == "cluster":
        return KeyFile(path, "cluster", _hex(path, data, "secret", SECRET_BYTES))
    if kind == "host":
        name = str(data.get("name", ""))
        key = KeyFile(path, "host", _hex(path, data, "secret", SECRET_BYTES), name,
                      _hex(path, data, "manager", 32), _hex(path, data, "certificate", 64))
        ident = key.host(name)
        if not verify_certificate(key.manager_public, name, ident.public, key.certificate):
            raise KeyFileError(f"{path}: the certificate does not match this host key")
        return key
    raise KeyFileError(f"{path}: 'kind' must be \"cluster\" or \"host\"")
