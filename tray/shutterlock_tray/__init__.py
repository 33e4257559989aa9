"""The Shutterlock tray: a thin client of the daemon's control socket (``shutterlock tray``).

Only ``app`` touches pystray and the display; the other modules are plain logic, testable headless.
"""
