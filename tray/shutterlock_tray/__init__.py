"""The Shutterlock tray: a thin client of the daemon's control socket (``shutterlock tray``).

Only ``icon`` and ``window`` touch pystray and the display; the other modules are plain logic, testable
headless. The daemon is never part of this package's process: ``launch`` starts it as a process of its own.
"""
