"""A small read-only text window (the recent problems), drawn with GTK in the tray's own process.

Why a window rather than a file handed to ``xdg-open``: a desktop without a text viewer (or without
``xdg-open`` at all) left the user with nothing, silently. pystray's GTK backends already run GLib's main
loop, so this adds no toolkit; ``icon`` falls back to a notification on the other backends.
"""

from __future__ import annotations

from typing import Any


class TextWindow:
    """One window per instance: shown again (raised, text replaced) rather than opened twice."""

    def __init__(self, title: str, width: int = 640, height: int = 360):
        self.title, self.size = title, (width, height)
        self._window: Any = None
        self._buffer: Any = None

    def show(self, text: str) -> None:
        """Safe from any thread: the window is built on the GLib main loop."""
        from gi.repository import GLib

        GLib.idle_add(self._show, text)

    def _show(self, text: str) -> bool:
        import gi

        gi.require_version("Gtk", "3.0")
        from gi.repository import Gtk

        if self._window is None:
            window = Gtk.Window(title=self.title)
            window.set_default_size(*self.size)
            view = Gtk.TextView(editable=False, cursor_visible=False, monospace=True,
                                wrap_mode=Gtk.WrapMode.WORD_CHAR, left_margin=8, right_margin=8, top_margin=8)
            scroller = Gtk.ScrolledWindow()
            scroller.add(view)
            close = Gtk.Button(label="Close")
            close.connect("clicked", lambda _button: window.destroy())
            buttons = Gtk.ButtonBox(layout_style=Gtk.ButtonBoxStyle.END)
            buttons.add(close)
            box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6, margin=6)
            box.pack_start(scroller, True, True, 0)
            box.pack_start(buttons, False, False, 0)
            window.add(box)
            window.connect("destroy", self._closed)
            self._window, self._buffer = window, view.get_buffer()
        self._buffer.set_text(text)
        self._window.show_all()
        self._window.present()
        return False  # run once

    def _closed(self, _window: Any) -> None:
        self._window = self._buffer = None
