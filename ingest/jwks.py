"""JWT signature checks against a JSON Web Key Set (RS256, ES256), with the ``cryptography`` package.

Imported only when a JWKS is configured. Keys are built once per JWKS document
and kept by ``kid``; a token whose ``kid`` is unknown, or whose signature does
not verify, fails.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = ["verify_with_jwks"]

_keys: dict[int, dict[str, Any]] = {}


def _int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def _public_key(jwk: Mapping[str, Any]) -> Any:
    if jwk.get("kty") == "RSA":
        return rsa.RSAPublicNumbers(_int(jwk["e"]), _int(jwk["n"])).public_key()
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        return ec.EllipticCurvePublicNumbers(_int(jwk["x"]), _int(jwk["y"]), ec.SECP256R1()).public_key()
    return None


def _by_kid(jwks: Mapping[str, Any]) -> dict[str, Any]:
    cached = _keys.get(id(jwks))
    if cached is None:
        cached = {str(k.get("kid", "")): _public_key(k) for k in jwks.get("keys", []) if isinstance(k, Mapping)}
        _keys[id(jwks)] = cached
    return cached


def verify_with_jwks(jwks: Mapping[str, Any], header: Mapping[str, Any], signing_input: bytes, signature: bytes) -> bool:
    """True when the signature verifies with the JWKS key named by the header's ``kid`` (or the only key)."""
    keys = _by_kid(jwks)
    key = keys.get(str(header.get("kid", ""))) or (next(iter(keys.values())) if len(keys) == 1 else None)
    try:
        if header.get("alg") == "RS256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            return True
        if header.get("alg") == "ES256" and isinstance(key, ec.EllipticCurvePublicKey) and len(signature) == 64:
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
            return True
    except InvalidSignature:
        return False
    return False
