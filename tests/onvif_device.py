"""A stand-in ONVIF device for tests: the SOAP a camera speaks, on 127.0.0.1.

It answers the requests the real client (onvif-zeep-async) sends to find a stream:
GetSystemDateAndTime, GetServices, GetCapabilities, GetProfiles and GetStreamUri, in
SOAP 1.2 envelopes of the ONVIF namespaces, and checks the WS-Security UsernameToken
digest on the ones a camera protects, the way a camera does. What it was asked is
recorded in `OnvifDevice.calls`, so a test can tell that a stream URI really came
from GetStreamUri.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from xml.sax.saxutils import escape

SOAP = "http://www.w3.org/2003/05/soap-envelope"
TDS = "http://www.onvif.org/ver10/device/wsdl"
TRT = "http://www.onvif.org/ver10/media/wsdl"
TT = "http://www.onvif.org/ver10/schema"
TER = "http://www.onvif.org/ver10/error"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"

# What ONVIF Core lets anyone ask (access class PRE_AUTH): a client needs the device's
# clock to build a valid token, and the service list to know where to send the rest.
PRE_AUTH = frozenset({"GetSystemDateAndTime", "GetServices", "GetCapabilities"})

DEVICE_PATH = "/onvif/device_service"
MEDIA_PATH = "/onvif/media_service"


@dataclass
class OnvifDevice:
    """The device's state: its profiles (token -> RTSP URI, in order) and what it was asked."""

    stream_uris: dict[str, str]
    user: str
    password: str
    names: dict[str, str] = field(default_factory=dict)  # token -> profile name (default: the token)
    media: bool = True  # False: a device without a media service (no video to offer)
    auth_failure: str = "fault"  # "fault": SOAP ter:NotAuthorized (HTTP 400); "http401": bare 401
    address: str = ""  # host:port, once listening
    calls: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __str__(self) -> str:  # so f"onvif://user:pass@{device}/main" reads naturally
        return self.address

    def record(self, operation: str) -> None:
        with self.lock:
            self.calls.append(operation)


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """WS-Security UsernameToken PasswordDigest: Base64(SHA1(nonce + created + password))."""
    raw = hashlib.sha1(nonce + created.encode() + password.encode()).digest()
    return base64.b64encode(raw).decode()


def authorized(header: ET.Element | None, user: str, password: str) -> bool:
    """True when the envelope's Security header has a UsernameToken with a digest of `password`."""
    token = None if header is None else header.find(f"{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
    if token is None:
        return False
    name = token.findtext(f"{{{WSSE}}}Username") or ""
    sent = token.find(f"{{{WSSE}}}Password")
    nonce = token.findtext(f"{{{WSSE}}}Nonce") or ""
    created = token.findtext(f"{{{WSU}}}Created") or ""
    if sent is None or sent.get("Type") != DIGEST or not nonce or not created:
        return False
    expected = password_digest(base64.b64decode(nonce), created, password)
    return name == user and hmac.compare_digest(expected, (sent.text or "").strip())


def envelope(body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<env:Envelope xmlns:env="{SOAP}" xmlns:tds="{TDS}" xmlns:trt="{TRT}" xmlns:tt="{TT}"'
        f' xmlns:ter="{TER}"><env:Body>{body}</env:Body></env:Envelope>'
    ).encode()


def fault(subcode: str, reason: str) -> bytes:
    """A SOAP 1.2 Sender fault with an ONVIF subcode (ter:NotAuthorized, ter:InvalidArgVal...)."""
    return envelope(
        "<env:Fault><env:Code><env:Value>env:Sender</env:Value>"
        f"<env:Subcode><env:Value>{subcode}</env:Value></env:Subcode></env:Code>"
        f'<env:Reason><env:Text xml:lang="en">{escape(reason)}</env:Text></env:Reason></env:Fault>'
    )


def system_date_and_time() -> str:
    now = datetime.now(UTC)
    return (
        "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
        "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
        "<tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone><tt:UTCDateTime>"
        f"<tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
        f"<tt:Second>{now.second}</tt:Second></tt:Time>"
        f"<tt:Date><tt:Year>{now.year}</tt:Year><tt:Month>{now.month}</tt:Month>"
        f"<tt:Day>{now.day}</tt:Day></tt:Date>"
        "</tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
    )


def services(device: OnvifDevice) -> str:
    entries = [(TDS, DEVICE_PATH)] + ([(TRT, MEDIA_PATH)] if device.media else [])
    listed = "".join(
        f"<tds:Service><tds:Namespace>{ns}</tds:Namespace>"
        f"<tds:XAddr>http://{device.address}{path}</tds:XAddr>"
        "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
        for ns, path in entries
    )
    return f"<tds:GetServicesResponse>{listed}</tds:GetServicesResponse>"


def capabilities(device: OnvifDevice) -> str:
    media = (
        f"<tt:Media><tt:XAddr>http://{device.address}{MEDIA_PATH}</tt:XAddr></tt:Media>"
        if device.media
        else ""
    )
    return (
        "<tds:GetCapabilitiesResponse><tds:Capabilities>"
        f"<tt:Device><tt:XAddr>http://{device.address}{DEVICE_PATH}</tt:XAddr></tt:Device>"
        f"{media}</tds:Capabilities></tds:GetCapabilitiesResponse>"
    )


def profiles(device: OnvifDevice) -> str:
    listed = "".join(
        f'<trt:Profiles token="{escape(token)}" fixed="true">'
        f"<tt:Name>{escape(device.names.get(token, token))}</tt:Name></trt:Profiles>"
        for token in device.stream_uris
    )
    return f"<trt:GetProfilesResponse>{listed}</trt:GetProfilesResponse>"


def stream_uri(device: OnvifDevice, request: ET.Element) -> str | None:
    """The MediaUri of the requested profile, None when there is no such profile."""
    token = (request.findtext(f"{{{TRT}}}ProfileToken") or "").strip()
    protocol = request.findtext(f"{{{TRT}}}StreamSetup/{{{TT}}}Transport/{{{TT}}}Protocol")
    if token not in device.stream_uris or protocol != "RTSP":
        return None
    return (
        "<trt:GetStreamUriResponse><trt:MediaUri>"
        f"<tt:Uri>{escape(device.stream_uris[token])}</tt:Uri>"
        "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
        "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout>"
        "</trt:MediaUri></trt:GetStreamUriResponse>"
    )


def answer(device: OnvifDevice, path: str, payload: bytes) -> tuple[int, bytes]:
    """(HTTP status, SOAP envelope) for one request."""
    try:
        root = ET.fromstring(payload)
    except ET.ParseError:
        return 400, fault("ter:WellFormed", "not XML")
    body = root.find(f"{{{SOAP}}}Body")
    request = None if body is None or not len(body) else body[0]
    if request is None:
        return 400, fault("ter:WellFormed", "no SOAP body")
    namespace, _, operation = request.tag[1:].partition("}")
    device.record(operation)
    if operation not in PRE_AUTH and not authorized(
        root.find(f"{{{SOAP}}}Header"), device.user, device.password
    ):
        if device.auth_failure == "http401":
            return 401, b""
        return 400, fault("ter:NotAuthorized", "Sender not Authorized")
    reply: str | None = None
    if path == DEVICE_PATH and namespace == TDS:
        if operation == "GetSystemDateAndTime":
            reply = system_date_and_time()
        elif operation == "GetServices":
            reply = services(device)
        elif operation == "GetCapabilities":
            reply = capabilities(device)
    elif path == MEDIA_PATH and namespace == TRT and device.media:
        if operation == "GetProfiles":
            reply = profiles(device)
        elif operation == "GetStreamUri":
            reply = stream_uri(device, request)
            if reply is None:
                return 400, fault("ter:InvalidArgVal", "no such profile or transport")
    if reply is None:
        return 400, fault("ter:ActionNotSupported", f"{operation} is not supported")
    return 200, envelope(reply)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _DeviceServer
    protocol_version = "HTTP/1.1"  # keep-alive, as cameras and aiohttp both do

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        status, reply = answer(self.server.device, self.path, self.rfile.read(length))
        self.send_response(status)
        self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:  # tests print nothing
        pass


class _DeviceServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, device: OnvifDevice) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.device = device


@contextmanager
def onvif_device(
    stream_uris: dict[str, str],
    user: str,
    password: str,
    *,
    names: dict[str, str] | None = None,
    media: bool = True,
    auth_failure: str = "fault",
) -> Iterator[OnvifDevice]:
    """Run a device on 127.0.0.1 whose profiles (in order) stream from `stream_uris`
    (token -> RTSP URI), named by `names` (token -> name, default the token).

    Yields the device: its `.address`, also its str(), is "host:port"; `.calls` lists the
    operations it was asked for."""
    device = OnvifDevice(
        dict(stream_uris), user, password, dict(names or {}), media=media, auth_failure=auth_failure
    )
    server = _DeviceServer(device)
    host, port = server.server_address[:2]
    device.address = f"{host}:{port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield device
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
