"""Encryption at rest of stored bodies (Fernet: AES-128-CBC plus HMAC-SHA256).

Keys come from the environment variable the rules name (`encryption_key_env`), never
from the rules file: one or more Fernet keys separated by commas. The first encrypts;
all decrypt, so a key is rotated by putting the new one first. A plain body is JSON
and starts with `{`; a Fernet token never does, so both can be read side by side
(turning encryption on does not strand what was stored before).
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

GENERATE_HINT = ('generate one with: python -c "from cryptography.fernet import Fernet; '
                 'print(Fernet.generate_key().decode())"')


class CipherError(ValueError):
    """A missing or malformed key, or a body that cannot be decrypted."""


class BodyCipher:
    def __init__(self, keys: tuple[bytes, ...] = ()) -> None:
        self.keys = keys
        self._fernet = MultiFernet([Fernet(k) for k in keys]) if keys else None

    @classmethod
    def from_env(cls, env_name: str | None, environ: Mapping[str, str]) -> BodyCipher:
        if not env_name:
            return cls()
        value = environ.get(env_name, "").strip()
        if not value:
            raise CipherError(f"responses_state.encryption_key_env: ${env_name} is not set; "
                              + GENERATE_HINT)
        keys = tuple(k.strip().encode() for k in value.split(",") if k.strip())
        try:
            return cls(keys)
        except ValueError as e:
            raise CipherError(f"${env_name} is not a Fernet key (32 url-safe base64-encoded "
                              f"bytes): {e}; " + GENERATE_HINT) from e

    @property
    def encrypts(self) -> bool:
        return self._fernet is not None

    def seal(self, plain: bytes) -> bytes:
        return self._fernet.encrypt(plain) if self._fernet is not None else plain

    def open(self, stored: bytes) -> bytes:
        if stored[:1] == b"{":
            return stored
        if self._fernet is None:
            raise CipherError("stored body is encrypted and no encryption key is configured")
        try:
            return self._fernet.decrypt(stored)
        except InvalidToken as e:
            raise CipherError("stored body cannot be decrypted with the configured keys") from e
