"""Signed envelopes: an HMAC-SHA256 tag over the channel and the encoded envelope.

Theory of operation. Pub/sub trusts whoever can PUBLISH: any client with
channel rights can claim any source agent, sender swarm, sequence number or
reply. With ``signing_key=`` every envelope a bus sends travels in a frame

    b"!" + key_id + b":" + tag (32 bytes) + encoded envelope

where ``tag = HMAC-SHA256(key, b"cfn-sig-v1\\0" + key_id + b"\\0" + channel + b"\\0" +
envelope)``. ``!`` is never the first byte of a JSON or MessagePack envelope, so
a signed payload cannot be mistaken for an unsigned one. The tag covers the
channel, so a genuine envelope replayed onto another channel (another swarm,
another type, another recipient) fails too. A receiver with a key ring rejects
(counts as ``forged`` and sets aside) anything unsigned, signed with a key id it
does not hold, or with a tag that does not match — before it is decoded or
reaches sequence tracking, so a forged seq cannot disturb the tracker.

Rotation: a :class:`SigningKeys` ring holds several keys by id and signs with
``current``. Give every bus the ring with the old and the new key (``current``
the old one), then switch ``current`` to the new one, then drop the old one.

Per-swarm keys: ``owners={key_id: swarm}`` binds a key to the one swarm allowed
to sign with it. A frame signed with a bound key is accepted only when the
envelope's sender swarm is that swarm, so a swarm that holds only its own key
cannot pass messages off as another swarm's (an insider's spoofed sender swarm).

Entries of the critical stream and the Messenger's stored history are the same
signed frames; they are checked against the channel they were published on,
rebuilt from the decoded envelope (:func:`signed_decoder`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping

from pytest_cfn._core.envelope import Envelope
from pytest_cfn._core.ids import MAX_ID_LENGTH, validate_id
from pytest_cfn._errors import ForgedMessageError, InvalidOptionError, MalformedMessageError

MARK = b"!"
TAG_BYTES = 32
MIN_KEY_BYTES = 16
DEFAULT_KEY_ID = "k1"
_DOMAIN = b"cfn-sig-v1\0"


class SigningKeys:
    """A key ring: key id -> secret; envelopes are signed with the ``current`` key."""

    __slots__ = ("current", "keys", "owners")

    def __init__(
        self,
        keys: Mapping[str, bytes | str],
        current: str | None = None,
        *,
        owners: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(keys, Mapping) or not keys:
            raise InvalidOptionError(
                "a signing key ring needs at least one key: {key_id: secret_bytes}"
            )
        ring: dict[str, bytes] = {}
        for key_id, secret in keys.items():
            validate_id(key_id, "signing key id")
            ring[key_id] = _secret_bytes(secret, key_id)
        if current is None:
            if len(ring) != 1:
                raise InvalidOptionError(
                    f"signing key ring has {len(ring)} keys; say which one signs with current="
                )
            current = next(iter(ring))
        if current not in ring:
            raise InvalidOptionError(
                f"current signing key id {current!r} is not in the ring ({sorted(ring)})"
            )
        bound: dict[str, str] = {}
        for key_id, swarm in (owners or {}).items():
            if key_id not in ring:
                raise InvalidOptionError(
                    f"owners names key id {key_id!r}, which is not in the ring ({sorted(ring)})"
                )
            bound[key_id] = validate_id(swarm, "swarm id")
        self.keys = ring
        self.current = current
        self.owners = bound

    def check_signer(self, swarm: str) -> None:
        """Refuse a ring whose current key is bound to another swarm than ``swarm``."""
        owner = self.owners.get(self.current)
        if owner is not None and owner != swarm:
            raise InvalidOptionError(
                f"current signing key {self.current!r} belongs to swarm {owner!r}; a bus of "
                f"swarm {swarm!r} must sign with a key of its own"
            )

    def __repr__(self) -> str:
        owners = f", owners={self.owners!r}" if self.owners else ""
        return f"SigningKeys(key_ids={sorted(self.keys)}, current={self.current!r}{owners})"


SigningKeyOption = bytes | str | SigningKeys | Mapping[str, bytes | str] | None


def _secret_bytes(secret: object, key_id: str) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes):
        raise InvalidOptionError(
            f"signing key {key_id!r} must be bytes or str, got {type(secret).__name__}"
        )
    if len(secret) < MIN_KEY_BYTES:
        raise InvalidOptionError(
            f"signing key {key_id!r} is {len(secret)} bytes; use at least {MIN_KEY_BYTES} "
            "random bytes (32 recommended, e.g. os.urandom(32))"
        )
    return secret


def signing_keys(option: object) -> SigningKeys | None:
    """The ``signing_key=`` option as a ring: one secret (key id ``k1``), a mapping of
    key ids to secrets, a :class:`SigningKeys`, or None for unsigned envelopes."""
    if option is None or isinstance(option, SigningKeys):
        return option
    if isinstance(option, (bytes, str)):
        return SigningKeys({DEFAULT_KEY_ID: option})
    if isinstance(option, Mapping):
        return SigningKeys(option)
    raise InvalidOptionError(
        f"signing_key must be bytes, str, a {{key_id: secret}} mapping or SigningKeys, "
        f"got {type(option).__name__}"
    )


class EnvelopeSigner:
    """Seals outgoing payloads and opens incoming ones with one key ring.

    Each key's HMAC state after the fixed prefix (domain and key id) is computed
    once and copied per message, which saves the key setup on every envelope."""

    __slots__ = ("_current", "_head", "_macs", "_owners")

    def __init__(self, ring: SigningKeys) -> None:
        self._macs = {
            kid.encode(): hmac.new(secret, _DOMAIN + kid.encode() + b"\0", hashlib.sha256)
            for kid, secret in ring.keys.items()
        }
        self._current = self._macs[ring.current.encode()]
        self._owners = {kid.encode(): swarm for kid, swarm in ring.owners.items()}
        self._head = MARK + ring.current.encode() + b":"

    def seal(self, channel: bytes, body: bytes) -> bytes:
        """The signed frame of ``body`` for ``channel``."""
        mac = self._current.copy()
        mac.update(channel)
        mac.update(b"\0")
        mac.update(body)
        return self._head + mac.digest() + body

    def split(self, payload: bytes) -> tuple[bytes, bytes, bytes]:
        """``(key_id, tag, body)`` of a frame; ForgedMessageError if it is not one."""
        if payload[:1] != MARK:
            raise ForgedMessageError(
                "unsigned envelope; this bus accepts only envelopes signed with its signing_key"
            )
        sep = payload.find(b":", 1, MAX_ID_LENGTH + 2)
        if sep < 0 or len(payload) < sep + 1 + TAG_BYTES:
            raise ForgedMessageError("signature frame is truncated or has no key id")
        end = sep + 1 + TAG_BYTES
        return payload[1:sep], payload[sep + 1 : end], payload[end:]

    def verify(self, kid: bytes, tag: bytes, channel: bytes, body: bytes) -> None:
        base = self._macs.get(kid)
        if base is None:
            raise ForgedMessageError(
                f"signed with key id {kid.decode('utf-8', 'replace')!r}, which this bus does "
                f"not hold (it holds {sorted(k.decode() for k in self._macs)})"
            )
        mac = base.copy()
        mac.update(channel)
        mac.update(b"\0")
        mac.update(body)
        if not hmac.compare_digest(mac.digest(), tag):
            raise ForgedMessageError(
                "bad signature: the tag does not match the channel and envelope "
                "(tampered, replayed onto another channel, or signed with another secret)"
            )

    def open(self, channel: bytes, payload: bytes) -> bytes:
        """The envelope bytes of a frame received on ``channel``; ForgedMessageError if forged."""
        return self.open_frame(channel, payload)[1]

    def open_frame(self, channel: bytes, payload: bytes) -> tuple[bytes, bytes]:
        """``(key_id, envelope bytes)``; pass the key id to :meth:`check_sender` after decoding."""
        kid, tag, body = self.split(payload)
        self.verify(kid, tag, channel, body)
        return kid, body

    @property
    def binds_keys(self) -> bool:
        """Some keys belong to one swarm: :meth:`check_sender` must see every envelope."""
        return bool(self._owners)

    def check_sender(self, kid: bytes, swarm: str) -> None:
        """ForgedMessageError when ``kid`` belongs to another swarm than the envelope's sender."""
        owner = self._owners.get(kid)
        if owner is not None and owner != swarm:
            raise ForgedMessageError(
                f"envelope says sender swarm {swarm!r} but is signed with key "
                f"{kid.decode()!r}, which belongs to swarm {owner!r}"
            )


def signed_decoder(
    signer: EnvelopeSigner,
    decode: Callable[[bytes], Envelope],
    channel_of: Callable[[Envelope], str],
) -> Callable[[bytes], Envelope]:
    """A decoder of stored frames (stream entries, history lists), whose channel is not
    stored beside them: it is rebuilt from the decoded envelope and then checked."""

    def decode_signed(payload: bytes) -> Envelope:
        kid, tag, body = signer.split(payload)
        env = decode(body)
        signer.verify(kid, tag, channel_of(env).encode(), body)
        signer.check_sender(kid, env.swarm)
        return env

    return decode_signed


def describe_undecodable(payload: bytes, error: MalformedMessageError) -> str:
    """A malformed reason that says so when a signed frame reached a bus with no key."""
    if payload[:1] == MARK:
        return f"a signed envelope, and this bus has no signing_key to open it ({error})"
    return str(error)
