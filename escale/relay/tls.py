"""TLS settings shared by the FTPS and HTTPS backends.

:func:`client_context` turns the TLS keys of a :class:`RelaySpec` into an
:class:`ssl.SSLContext`:

* the server certificate and host name are verified by default, against the
  system's trust store or ``ca_file``; ``verify_ssl=False`` turns verification
  off (the caller logs a warning once per relay);
* ``ssl_version`` sets the *minimum* protocol version: ``SSLv23`` and ``TLS``
  keep the library default (TLS 1.2 or newer), ``TLSv1``, ``TLSv1.1``,
  ``TLSv1.2`` and ``TLSv1.3`` set that minimum (the newest version both sides
  speak is still used). ``SSLv2`` and ``SSLv3`` are broken protocols and are
  refused with a ConfigError;
* ``certificate``/``keyfile`` give a client certificate.
"""

from __future__ import annotations

import ssl

from escale.errors import ConfigError
from escale.relay.spec import RelaySpec

_MINIMUM = {
    "sslv23": None,
    "tls": None,
    "tlsv1": ssl.TLSVersion.TLSv1,
    "tlsv1.0": ssl.TLSVersion.TLSv1,
    "tlsv1.1": ssl.TLSVersion.TLSv1_1,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}
_REFUSED = ("sslv2", "sslv3")


def minimum_version(value: str | None) -> ssl.TLSVersion | None:
    """The minimum TLS version for the ``ssl version`` setting ``value``.

    None means the library default. Raises ConfigError for SSLv2/SSLv3 and for
    unknown values.
    """
    if value is None or not value.strip():
        return None
    key = value.strip().lower().replace("_", ".")
    if key in _REFUSED:
        raise ConfigError(
            f"{value} is insecure and not supported; use TLS, TLSv1.2 or TLSv1.3", key="ssl version"
        )
    if key not in _MINIMUM:
        raise ConfigError(
            f"unknown value {value!r}; expected SSLv23, TLS, TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3",
            key="ssl version",
        )
    return _MINIMUM[key]


def client_context(spec: RelaySpec) -> ssl.SSLContext:
    """An SSLContext for connecting to the relay of ``spec``.

    Raises ConfigError for a bad ``ssl_version`` or unreadable client
    certificate/key files (the message names the setting, never a secret).
    """
    try:
        context = ssl.create_default_context(cafile=spec.ca_file if spec.verify_ssl else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA file {spec.ca_file}: {exc}", key="ca file") from exc
    minimum = minimum_version(spec.ssl_version)
    if minimum is not None:
        try:
            context.minimum_version = minimum
        except (ValueError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot use {spec.ssl_version}: {exc}", key="ssl version") from exc
    if not spec.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if spec.certificate:
        try:
            context.load_cert_chain(spec.certificate, spec.keyfile or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load client certificate {spec.certificate}"
                f"{' with key ' + spec.keyfile if spec.keyfile else ''}: {exc}",
                key="certificate",
            ) from exc
    elif spec.keyfile:
        raise ConfigError("a client key file needs a client certificate", key="keyfile")
    return context
