"""ONVIF cameras (onvif://user:pass@host[:port][/profile]): ask the device for its RTSP URI, then stream RTSP.

ONVIF is discovery, not transport: the device answers SOAP requests (signed with a
WS-Security digest of the password) saying where each of its media profiles streams,
and the stream itself is plain RTSP. So this source resolves the URI with the ONVIF
client library and hands it to the RTSP source's machinery. It resolves again at every
open(), so a camera whose URI changes (reboot, firmware update, new address) is followed
on the next reconnect. The profile in the path is matched against the profiles' tokens,
then their names; without one, the device's first profile (its main stream, by
convention) is used.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aiohttp
import zeep.exceptions

from zstream.errors import SourceError, SourceRejected, mask_url
from zstream.sources.rtsp import RtspSource

# onvif.client calls logging.basicConfig(level=INFO) when imported: configuring logging is
# the application's business, so whatever the import adds to the root logger is undone.
_root = logging.getLogger()
_root_handlers, _root_level = list(_root.handlers), _root.level
from onvif import ONVIFCamera, ONVIFError  # noqa: E402
from onvif.definition import SERVICES  # noqa: E402
from onvif.util import is_auth_error  # noqa: E402

_root.handlers[:] = _root_handlers
_root.setLevel(_root_level)

log = logging.getLogger(__name__)

DEFAULT_PORT = 80  # ONVIF's device service is plain HTTP on port 80 unless the URL says otherwise
AUTH_HINT = " (authentication refused: check the user and password in the URL)"
STREAM_SETUP = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
MEDIA_NAMESPACE = SERVICES["media"]["ns"]


@dataclass(frozen=True, slots=True)
class OnvifTarget:
    """What an onvif:// URL says: where the device is, who we are, which profile we want."""

    host: str
    port: int
    user: str | None  # percent-decoded
    password: str | None  # percent-decoded
    profile: str | None  # token or name; None for the first profile


def parse_onvif_url(url: str) -> OnvifTarget:
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:  # not mask_url(url): it fails on this URL too
        raise SourceRejected(f"an onvif:// URL is invalid ({exc}); fix the camera's url") from exc
    if parts.scheme != "onvif" or not parts.hostname:
        raise SourceRejected(f"{mask_url(url)} is not an onvif://[user:password@]host[:port][/profile] URL")
    profile = unquote(parts.path.strip("/")) or None
    user = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    return OnvifTarget(parts.hostname, port, user, password, profile)


def with_credentials(uri: str, user: str | None, password: str | None) -> str:
    """The RTSP URI with the ONVIF user and password, percent-encoded, unless it has its own."""
    parts = urlsplit(uri)
    if user is None or parts.username is not None:
        return uri
    userinfo = quote(user, safe="") + ("" if password is None else ":" + quote(password, safe=""))
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


def choose_profile(profiles: list[Any], wanted: str | None, where: str) -> str:
    """The token of the profile `wanted` names (token first, then name), else of the first."""
    tokens = [str(profile.token) for profile in profiles]
    if not tokens:
        raise SourceRejected(f"cannot open {where}: the device has no media profiles")
    if wanted is None:
        return tokens[0]
    for profile in profiles:
        if wanted == str(profile.token):
            return wanted
    for profile in profiles:
        if wanted == str(getattr(profile, "Name", None)):
            return str(profile.token)
    raise SourceRejected(
        f"cannot open {where}: the device has no profile {wanted!r}; its profiles are {', '.join(tokens)}"
    )


def _camera(target: OnvifTarget) -> ONVIFCamera:
    """An ONVIFCamera (to build inside the running loop: it opens aiohttp sessions).

    Its constructor deletes http_proxy/https_proxy from the process environment, which
    other sources may rely on: they are put back.
    """
    saved = {key: os.environ[key] for key in ("http_proxy", "https_proxy") if key in os.environ}
    try:
        # adjust_time: sign requests with the device's clock (asked without authentication),
        # as cameras reject tokens created too far from their own time. no_cache: the WSDLs
        # are bundled files, and the library's shared cache is bound to one event loop.
        # No user in the URL: an empty token, which a device without authentication ignores
        # (the library cannot send none) and any other refuses as wrong credentials.
        return ONVIFCamera(
            target.host,
            target.port,
            target.user or "",
            target.password or "",
            no_cache=True,
            adjust_time=True,
        )
    finally:
        os.environ.update(saved)


async def ask_stream_uri(target: OnvifTarget, where: str) -> tuple[str, str]:
    """(profile token, RTSP URI) from the device: GetServices, GetProfiles, GetStreamUri."""
    camera = _camera(target)
    try:
        await camera.update_xaddrs()
        if MEDIA_NAMESPACE not in camera.xaddrs:
            raise SourceRejected(f"cannot open {where}: the device offers no media service")
        media = await camera.create_media_service()
        token = choose_profile(list(await media.GetProfiles() or []), target.profile, where)
        reply = await media.GetStreamUri({"StreamSetup": STREAM_SETUP, "ProfileToken": token})
    finally:
        await camera.close()
    return token, checked_stream_uri(str(getattr(reply, "Uri", None) or "").strip(), token, where)


def checked_stream_uri(uri: str, token: str, where: str) -> str:
    """`uri` if it is an RTSP URL that the rest of zstream can parse (and mask)."""
    try:
        parts = urlsplit(uri)
        valid = parts.scheme.lower() in ("rtsp", "rtsps") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port out of range (.port raises)
        valid = False
    if not valid:
        raise SourceRejected(f"cannot open {where}: profile {token!r} gave no usable RTSP URI")
    return uri


def resolve_stream_uri(url: str, timeout_s: float) -> str:
    """The RTSP URI (with the URL's credentials) that `url`'s profile streams at.

    Runs the ONVIF client in an event loop of the calling thread, bounded by `timeout_s`.
    Raises SourceRejected when the device answers but refuses, SourceError otherwise.
    """
    target = parse_onvif_url(url)
    where = mask_url(url)
    try:
        token, uri = asyncio.run(asyncio.wait_for(ask_stream_uri(target, where), timeout_s))
    except SourceError:
        raise
    except Exception as exc:  # the library raises zeep, aiohttp, lxml and its own errors
        raise _converted(exc, where, target.password, timeout_s) from exc
    rtsp_url = with_credentials(uri, target.user, target.password)
    log.info("%s: profile %r streams at %s", where, token, mask_url(rtsp_url))
    return rtsp_url


def _converted(exc: Exception, where: str, password: str | None, timeout_s: float) -> SourceError:
    """The SourceError for what the ONVIF client raised; the password never appears."""
    if isinstance(exc, TimeoutError):  # also aiohttp's timeouts
        return SourceError(f"cannot open {where}: the ONVIF device did not answer within {timeout_s:g} s")
    if isinstance(exc, zeep.exceptions.Fault):
        if is_auth_error(exc):
            return SourceRejected(f"cannot open {where}: the device refused the request{AUTH_HINT}")
        return SourceRejected(
            f"cannot open {where}: the device answered {_scrub(exc.message or 'a fault', password)!r}"
        )
    if isinstance(exc, zeep.exceptions.TransportError):
        status = exc.status_code
        if status in (401, 403):
            return SourceRejected(f"cannot open {where}: HTTP {status}{AUTH_HINT}")
        if 400 <= status < 500:
            return SourceRejected(f"cannot open {where}: HTTP {status}: is this an ONVIF device?")
        return SourceError(f"cannot open {where}: HTTP {status}" if status else f"cannot open {where}")
    if isinstance(exc, zeep.exceptions.Error):  # not SOAP, or not the SOAP ONVIF defines
        return SourceRejected(f"cannot open {where}: the device's answer is not ONVIF ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientError | OSError):
        detail = getattr(exc, "strerror", None) or type(exc).__name__
        return SourceError(f"cannot open {where}: {_scrub(str(detail), password)}")
    if isinstance(exc, ONVIFError):
        return SourceError(f"cannot open {where}: {_scrub(exc.reason, password)}")
    return SourceError(f"cannot open {where}: {type(exc).__name__}")


def _scrub(text: str, password: str | None) -> str:
    """`text` with the password, should a device echo it, replaced by ****."""
    return text.replace(password, "****") if password else text


class OnvifSource(RtspSource):
    """An ONVIF camera: the stream URI is asked for at every open, then streamed as RTSP."""

    def __init__(self, url: str, **options: Any) -> None:
        """`options` are RtspSource's: timeouts, decoding, transport."""
        super().__init__(url, **options)
        self.onvif_url = url  # self.url becomes the RTSP URI once resolved

    def open(self) -> None:
        """Resolve the RTSP URI (bounded by open_timeout_s), then open it (bounded again)."""
        self.close()
        self.url = self.onvif_url  # until resolved, errors name the URL that was configured
        self.url = resolve_stream_uri(self.onvif_url, self.open_timeout_s)
        super().open()
