"""Gathered sends of buffers a blocking socket writes whole (NFS READ replies, WebDAV GET bodies).

Why: the core hands out its verified chunks as memoryviews; `socket.sendmsg` sends them in one
call without joining them into a new buffer.  A partial send resumes inside the view it stopped
in.  (FTP's data channel is non-blocking and keeps its own position: protocols/ftp/handler.py.)"""
from __future__ import annotations

import socket

#: views per sendmsg call (Linux IOV_MAX is 1024)
IOV = 512


def send_views(sock: socket.socket, views: list[memoryview]) -> int:
    """sendmsg all of `views` (a list it consumes), resuming after partial sends; bytes sent."""
    total = sum(len(v) for v in views)
    i = 0
    while i < len(views):
        sent = sock.sendmsg(views[i:i + IOV])
        while i < len(views) and sent >= len(views[i]):
            sent -= len(views[i])
            i += 1
        if sent:
            views[i] = views[i][sent:]
    return total
