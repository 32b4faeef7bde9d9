#!/usr/bin/env python3
"""Tiny CQL readiness probe: speaks the native protocol (v4) directly.

Usage: cql_ready.py HOST PORT
Sends STARTUP, then QUERY "SELECT release_version FROM system.local" and
prints the release version. Exits 0 only when the node answered the query.
No driver needed, so it runs before anything else is installed.
"""
import socket
import struct
import sys

OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE, OP_QUERY, OP_RESULT = 0x00, 0x01, 0x02, 0x03, 0x07, 0x08


def frame(stream, opcode, body):
    return struct.pack(">BBhBi", 0x04, 0, stream, opcode, len(body)) + body


def string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def long_string(s):
    b = s.encode()
    return struct.pack(">i", len(b)) + b


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by server")
        buf += chunk
    return buf


def read_frame(sock):
    header = recv_exact(sock, 9)
    _version, _flags, _stream, opcode, length = struct.unpack(">BBhBi", header)
    return opcode, recv_exact(sock, length)


def error_text(body):
    code = struct.unpack(">i", body[:4])[0]
    (n,) = struct.unpack(">H", body[4:6])
    return "error 0x%04x: %s" % (code, body[6 : 6 + n].decode(errors="replace"))


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    with socket.create_connection((host, port), timeout=5) as sock:
        # STARTUP with a string map {CQL_VERSION: 3.0.0}
        sock.sendall(frame(1, OP_STARTUP, struct.pack(">H", 1) + string("CQL_VERSION") + string("3.0.0")))
        opcode, body = read_frame(sock)
        if opcode == OP_ERROR:
            sys.exit("STARTUP failed: " + error_text(body))
        if opcode == OP_AUTHENTICATE:
            sys.exit("server wants authentication; the test node runs without it")
        if opcode != OP_READY:
            sys.exit("unexpected reply to STARTUP: opcode %d" % opcode)
        # QUERY <long string> <consistency ONE=0x0001> <flags=0>
        query = long_string("SELECT release_version FROM system.local")
        sock.sendall(frame(2, OP_QUERY, query + struct.pack(">HB", 0x0001, 0)))
        opcode, body = read_frame(sock)
        if opcode == OP_ERROR:
            sys.exit("query failed: " + error_text(body))
        if opcode != OP_RESULT:
            sys.exit("unexpected reply to QUERY: opcode %d" % opcode)
        kind = struct.unpack(">i", body[:4])[0]
        if kind != 2:  # Rows
            sys.exit("unexpected result kind %d" % kind)
        # Rows metadata: flags, column count, [paging state], [global table spec], col specs
        flags, ncols = struct.unpack(">ii", body[4:12])
        pos = 12
        if flags & 0x0002:  # has_more_pages
            (n,) = struct.unpack(">i", body[pos : pos + 4])
            pos += 4 + max(n, 0)
        global_spec = flags & 0x0001
        if global_spec:
            for _ in range(2):
                (n,) = struct.unpack(">H", body[pos : pos + 2])
                pos += 2 + n
        for _ in range(ncols):
            if not global_spec:
                for _ in range(2):
                    (n,) = struct.unpack(">H", body[pos : pos + 2])
                    pos += 2 + n
            (n,) = struct.unpack(">H", body[pos : pos + 2])  # column name
            pos += 2 + n
            pos += 2  # option id (varchar, no value)
        (rows,) = struct.unpack(">i", body[pos : pos + 4])
        pos += 4
        if rows < 1:
            sys.exit("system.local returned no row")
        (n,) = struct.unpack(">i", body[pos : pos + 4])
        print(body[pos + 4 : pos + 4 + n].decode())


if __name__ == "__main__":
    try:
        main()
    except (OSError, ConnectionError, struct.error) as e:
        sys.exit("%s: %s" % (type(e).__name__, e))
