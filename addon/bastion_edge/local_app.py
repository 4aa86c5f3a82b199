"""An in-process aiohttp app on a loopback port the kernel picks.

The proxy forwards a flow to such an app when it must stream a reply it makes itself
(mitmproxy sends an addon-made response whole): the TTS adapter and the Files/Batch
server both run this way.
"""

from __future__ import annotations

from aiohttp import web


async def start_local_app(app: web.Application, host: str) -> tuple[web.AppRunner, int]:
    """Serve `app` on `host`, port 0; returns its runner (to clean up) and its port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, 0).start()
    return runner, int(runner.addresses[0][1])
