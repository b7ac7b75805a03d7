#!/usr/bin/env python3
"""A hostile HTTPS upstream for caddymodule/e2etest/hostile_test.go.

Python 3 standard library only. It listens on loopback (127.0.0.1, one
or more ports, all sharing one store), prints "PORTS <p1> <p2> ..." on
stdout once every port accepts connections, and serves:

  GET  /form/<name>       echoes the bearer token of the request's
                          Authorization header encoded the way <name>
                          says (FORMS below), framed as
                          "BEGIN <name>:" + encoded + ":END\n", with its
                          SHA-256 in X-Token-Sha256; 404 for an unknown
                          name
  GET  /forms             the form names, one a line
  POST /write/store?slot= stores the request's Authorization header
  GET  /read?slot=        sends a stored value back in a header
                          (X-Stored) and in the body

Every form is one an ordinary framework produces when it echoes or
logs a value: the upstream has received the injected secret and tries
to hand it back to the agent without the broker noticing.
"""

import argparse
import base64
import binascii
import hashlib
import html
import json
import socketserver
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer


def js_encode_uri_component(s):
    # ECMAScript encodeURIComponent: UTF-8 bytes, upper-case hex, and
    # these left alone: A-Z a-z 0-9 - _ . ! ~ * ' ( )
    unreserved = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()")
    return "".join(chr(b) if b in unreserved else "%%%02X" % b for b in s.encode("utf-8"))


def dotnet_url_encode(s):
    # .NET HttpUtility.UrlEncode: lower-case hex, space as '+', and
    # A-Z a-z 0-9 - _ . ! * ( ) left alone.
    safe = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!*()")
    out = []
    for b in s.encode("utf-8"):
        if b == 0x20:
            out.append("+")
        elif b in safe:
            out.append(chr(b))
        else:
            out.append("%%%02x" % b)
    return "".join(out)


def dotnet_json(s):
    # System.Text.Json's default encoder: '+', '<', '>', '&', "'" and
    # '"' (among others) as upper-case \\uXXXX.
    out = []
    for c in s:
        if c in "+<>&'\"`" or ord(c) < 0x20 or ord(c) > 0x7E:
            out.append("\\u%04X" % ord(c))
        elif c == "\\":
            out.append("\\\\")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def pct_lower(s):
    # quote() with nothing safe, then the hex digits in lower case (as
    # some encoders write them).
    q = urllib.parse.quote(s, safe="")
    out, i = [], 0
    while i < len(q):
        if q[i] == "%":
            out.append(q[i:i + 3].lower())
            i += 3
        else:
            out.append(q[i])
            i += 1
    return "".join(out)


def json_all_u(s):
    # A JSON string with every character \\u-escaped; json.loads reads
    # it back as s (checked at start-up).
    return '"' + "".join("\\u%04x" % ord(c) for c in s) + '"'


def b64blob(k, urlsafe):
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return lambda b: enc(b"x" * k + b + b"tail")


# name -> bytes of the secret -> bytes sent back
FORMS = {
    "raw": lambda b: b,
    "b64-std": lambda b: base64.b64encode(b),
    "b64-std-nopad": lambda b: base64.b64encode(b).rstrip(b"="),
    "b64-url": lambda b: base64.urlsafe_b64encode(b),
    "b64-url-nopad": lambda b: base64.urlsafe_b64encode(b).rstrip(b"="),
    "b64-blob-std-0": b64blob(0, False),
    "b64-blob-std-1": b64blob(1, False),
    "b64-blob-std-2": b64blob(2, False),
    "b64-blob-url-0": b64blob(0, True),
    "b64-blob-url-1": b64blob(1, True),
    "b64-blob-url-2": b64blob(2, True),
    "hex-lower": lambda b: binascii.hexlify(b),
    "hex-upper": lambda b: binascii.hexlify(b).upper(),
    "quote": lambda b: urllib.parse.quote(b.decode()).encode(),
    "quote-safe-empty": lambda b: urllib.parse.quote(b.decode(), safe="").encode(),
    "quote-plus": lambda b: urllib.parse.quote_plus(b.decode()).encode(),
    "pct-lower": lambda b: pct_lower(b.decode()).encode(),
    "pct-every-byte-lower": lambda b: "".join("%%%02x" % c for c in b).encode(),
    "pct-every-byte-upper": lambda b: "".join("%%%02X" % c for c in b).encode(),
    "js-encodeURIComponent": lambda b: js_encode_uri_component(b.decode()).encode(),
    "dotnet-UrlEncode": lambda b: dotnet_url_encode(b.decode()).encode(),
    "json-dumps": lambda b: json.dumps(b.decode(), ensure_ascii=True).encode(),
    "json-every-char-u": lambda b: json_all_u(b.decode()).encode(),
    "json-php-slash": lambda b: json.dumps(b.decode()).replace("/", "\\/").encode(),
    "json-dotnet": lambda b: dotnet_json(b.decode()).encode(),
    "html-escape": lambda b: html.escape(b.decode()).encode(),
    "html-entities-dec": lambda b: "".join("&#%d;" % ord(c) for c in b.decode()).encode(),
    "html-entities-hex": lambda b: "".join("&#x%x;" % ord(c) for c in b.decode()).encode(),
    "utf16-le": lambda b: b.decode().encode("utf-16-le"),
    "utf16-be": lambda b: b.decode().encode("utf-16-be"),
}


def self_check():
    probe = "AKIA/+!probe<&>\"'"
    assert json.loads(json_all_u(probe)) == probe
    assert json.loads(json.dumps(probe).replace("/", "\\/")) == probe
    assert json.loads(dotnet_json(probe)) == probe
    assert urllib.parse.unquote(pct_lower(probe)) == probe
    assert urllib.parse.unquote(js_encode_uri_component(probe)) == probe
    assert urllib.parse.unquote_plus(dotnet_url_encode(probe)) == probe
    assert html.unescape("".join("&#x%x;" % ord(c) for c in probe)) == probe


STORE = {}
STORE_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass  # the test reads stdout for the port line only

    def send(self, status, body, ctype="text/plain; charset=utf-8", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def token(self):
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else ""

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        if u.path == "/forms":
            self.send(200, ("\n".join(FORMS) + "\n").encode())
        elif u.path.startswith("/form/"):
            name = u.path[len("/form/"):]
            enc = FORMS.get(name)
            tok = self.token()
            if enc is None or not tok:
                self.send(404, b"unknown form or no bearer token\n")
                return
            ctype = "application/octet-stream" if name.startswith("utf16") else "text/plain; charset=utf-8"
            # A one-way digest of what arrived, so the test knows the
            # secret was injected without the digest being a form of it.
            digest = hashlib.sha256(tok.encode()).hexdigest()
            self.send(200, b"BEGIN " + name.encode() + b":" + enc(tok.encode()) + b":END\n", ctype,
                      extra=[("X-Token-Sha256", digest)])
        elif u.path == "/read":
            slot = q.get("slot", [""])[0]
            with STORE_LOCK:
                v = STORE.get(slot)
            if v is None:
                self.send(404, b"nothing stored\n")
                return
            self.send(200, ("stored: " + v + "\n").encode(), extra=[("X-Stored", v)])
        else:
            self.send(404, b"not found\n")

    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if u.path == "/write/store":
            slot = urllib.parse.parse_qs(u.query).get("slot", [""])[0]
            with STORE_LOCK:
                STORE[slot] = self.headers.get("Authorization", "")
            self.send(200, b"stored\n")
        else:
            self.send(404, b"not found\n")


class TLSServer(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, addr, ctx):
        self.ctx = ctx
        super().__init__(addr, Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        # The handshake happens in the handler's thread, on first read.
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ports", type=int, default=1)
    a = ap.parse_args()
    self_check()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(["http/1.1"])
    servers = [TLSServer(("127.0.0.1", 0), ctx) for _ in range(a.ports)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("PORTS " + " ".join(str(s.server_address[1]) for s in servers), flush=True)
    # Run until the test closes our stdin (or kills us).
    sys.stdin.read()


if __name__ == "__main__":
    main()
