"""A derive work function for runner tests: renders normally, but hangs on one file name.

The runner runs whatever work function it is given in its child process (the daemon gives it
``render``); handing it this one is how the tests make a decoder hang, without a hook in the product.
It lives in its own module so the spawned child can import it by name.
"""

from __future__ import annotations

import time
from typing import BinaryIO

from shutterlock.derive.render import DeriveJob, Rendered, render

STALL_NAME = "stall.jpg"


def stall_on_name(job: DeriveJob, original: BinaryIO, sidecar: BinaryIO | None) -> Rendered:
    if job.source.name == STALL_NAME:
        time.sleep(10**6)
    return render(job, original, sidecar)
