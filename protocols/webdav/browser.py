"""The HTML listing a browser gets for a folder: wsgidav's dir_browser, told the truth.

wsgidav's listing says "access: read-write" whenever the *provider* is writable, which ours
always is (it serves every share); the truth is per folder: the share list, read-only grants,
anonymous access and ``.snapshots`` are read-only.  It also links every file's history
(``name?versions=html``) and, at a share's root, the ``.snapshots`` folder of past states.
"""
from __future__ import annotations

import html
from typing import Any

from wsgidav.dir_browser import WsgiDavDirBrowser

from .names import SNAPSHOTS


class EdgeDirBrowser(WsgiDavDirBrowser):
    def _get_context(self, environ: dict, dav_res: Any) -> dict:
        context = super()._get_context(environ, dav_res)
        readonly = bool(getattr(dav_res, "readonly", True))     # "/" (the share list) has none
        context["is_readonly"] = readonly
        context["access"] = "read-only" if readonly else "read-write"
        for row in context["rows"]:
            if not row.get("is_collection"):
                href = html.escape(f"{row['href']}?versions=html", quote=True)
                row["add_link_html"] = (row.get("add_link_html") or "") + \
                    f" <a class='versions' title='Every version of this file' href='{href}'>versions</a>"
        if getattr(dav_res, "rel", None) == "/":
            context["rows"].insert(0, {
                "href": f"./{SNAPSHOTS}/", "ofe_prefix": None, "a_class": "", "add_link_html": "",
                "tr_class": "directory", "display_name": SNAPSHOTS, "is_collection": True,
                "display_type": "History (the share at every change)", "str_size": "-", "str_modified": "",
            })
        return context
