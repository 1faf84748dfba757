"""The MetaServer module: binds the configured address (`metaServer.server`, default 127.0.0.1:10550,
plain HTTP like upstream without the RequireAuthorization gate) and serves until edgecore stops.

It reads the edge database through its own connection and follows MetaManager's change feed, so it
keeps serving whatever the cloud connection does; it depends on MetaManager for the feed, for knowing
whether the cloud is reachable, for storing the objects of kinds the node does not sync (which it reads
from the cloud itself), and for the news of each connection: then it refetches the cloud's discovery and
renews its watch subscriptions (one task, owned here). Its own small tables (state.py) have their own
connection. Nobody sends it bus messages: it only sends (Applications to the cloud through EdgeHub) and
drains anything that arrives by mistake.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Final

from aiohttp import web

from common.config.edgecore import MetaServer as MetaServerConfig
from common.log import get_logger
from common.modules import ModuleContext
from edgecore.metamanager.module import MetaManagerModule
from edgecore.metaserver.cloud import TIMEOUT, CloudLink
from edgecore.metaserver.cloud_discovery import CloudDiscovery
from edgecore.metaserver.http import MetaServerAPI
from edgecore.metaserver.kinds import Kinds
from edgecore.metaserver.reader import StoreReader
from edgecore.metaserver.remote import RemoteReads
from edgecore.metaserver.state import CacheState
from edgecore.metaserver.writes import CloudWriter

log = get_logger("metaserver")

MODULE_NAME: Final = "metaserver"
SHUTDOWN_TIMEOUT: Final = 2.0  # open watches are ended first, so requests in flight finish quickly


class AddressError(ValueError):
    pass


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AddressError(f"metaServer.server {address!r}: expected <host>:<port>, e.g. 127.0.0.1:10550")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class MetaServerModule:
    name = MODULE_NAME
    group = ""  # no group: the module takes no routed messages

    def __init__(self, config: MetaServerConfig, meta: MetaManagerModule, database: Path, node: str,
                 write_timeout: float = TIMEOUT) -> None:
        self.config = config
        self.meta = meta
        self.database = database
        self.node = node
        self.write_timeout = write_timeout  # the wait for any answer of the cloud (writes, and reads of remote kinds)
        self.port: int | None = None  # the bound port once serving (the configured one, or the pick for 0)
        self.serving = asyncio.Event()
        self.api: MetaServerAPI | None = None
        self._connected = asyncio.Event()  # set on every connection to the cloud; the resync task clears it
        meta.on_cloud_connected(self._connected.set)

    async def run(self, ctx: ModuleContext) -> None:
        host, port = parse_address(self.config.server)
        if not _is_loopback(host):
            log.warning("metaserver serves plain HTTP without authentication on a non-loopback address",
                        address=self.config.server)
        reader = await StoreReader.open(self.database)
        state: CacheState | None = None
        try:
            state = await CacheState.open(self.database)
            link = CloudLink(ctx.bus, self.node, lambda: self.meta.cloud_connected, self.write_timeout)
            kinds = Kinds()
            discovery = CloudDiscovery(link, state, kinds)
            remote = RemoteReads(link, state, self.meta, kinds)
            self.api = api = MetaServerAPI(kinds, reader, self.meta.events, CloudWriter(link), remote, discovery,
                                           self.config.server)
            runner = web.AppRunner(api.application(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT,
                                   handle_signals=False)
            await runner.setup()
            try:
                try:
                    await web.TCPSite(runner, host, port).start()
                except OSError as exc:
                    log.error("metaserver cannot listen", address=self.config.server, err=exc)
                    raise
                addresses = runner.addresses
                self.port = int(addresses[0][1]) if addresses else port
                log.info("metaserver listening", address=host, port=self.port, floor_rv=reader.floor)
                self.serving.set()
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._resync(discovery, remote), name="metaserver:resync")
                    await self._drain(ctx)
            finally:
                self.serving.clear()
                api.close_watches()
                try:
                    async with asyncio.timeout(SHUTDOWN_TIMEOUT + 1.0):
                        await runner.cleanup()
                except TimeoutError:
                    log.warning("metaserver did not stop in time", timeout_s=SHUTDOWN_TIMEOUT)
        finally:
            if state is not None:
                await state.close()
            await reader.close()

    async def _resync(self, discovery: CloudDiscovery, remote: RemoteReads) -> None:
        """On every connection to the cloud: its discovery, then the watch subscriptions (upstream's
        SyncWatchAppOnConnected). Each request is bounded by the cloud wait; a failure waits for the next
        connection rather than stopping the server."""
        if self.meta.cloud_connected:
            self._connected.set()  # connected before this module ran
        while True:
            await self._connected.wait()
            self._connected.clear()
            try:
                await discovery.refresh(0.0)
                await remote.resync()
            except Exception:
                log.exception("resync with the cloud failed; retried on the next connection")

    async def _drain(self, ctx: ModuleContext) -> None:
        while True:
            message = await ctx.mailbox.get()
            log.v(2).info("message for metaserver ignored", msg_id=message.msg_id, source=message.source,
                          operation=message.operation, resource=message.resource)
