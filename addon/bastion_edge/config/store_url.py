"""Where a store lives (`responses_state.store`, `batches.store`, --bastion-responses-store).

  sqlite             a file in mitmproxy's confdir
  sqlite:///abs/path a SQLite file elsewhere (sqlite:// + an absolute path)
  redis://...        Redis (rediss:// for TLS), shared by replicas

The one parser of these forms: rules validation and opening a store both use it.
"""

from __future__ import annotations

from pathlib import Path

from bastion_edge.config.reader import Path_, Reader

STORE_FORMS = "sqlite, sqlite:///<absolute path> or a redis:// (rediss://) URL"
_URL_PREFIXES = ("sqlite:///", "redis://", "rediss://")


def check_store(setting: str) -> str:
    """The setting itself if it is one of the forms; ValueError otherwise."""
    if setting == "sqlite" or setting.startswith(_URL_PREFIXES):
        return setting
    raise ValueError(f"expected {STORE_FORMS}, got {setting!r}")


def store_location(setting: str, confdir: Path, sqlite_file: str) -> str:
    """The store's URL (`sqlite` or empty means `sqlite_file` in `confdir`)."""
    if setting in ("", "sqlite"):
        return f"sqlite://{(confdir / sqlite_file).resolve()}"
    return check_store(setting)


def read_store(reader: Reader, value: object, path: Path_) -> str:
    """A store setting (`responses_state.store`, `batches.store`): config.store_url's forms."""
    store = reader.string(value, path, STORE_FORMS)
    try:
        return check_store(store)
    except ValueError:
        raise reader.fail(path, f"expected {STORE_FORMS}") from None
