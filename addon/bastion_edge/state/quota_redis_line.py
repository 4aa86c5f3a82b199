"""One Lua script run over a connection of its own, for the quota admissions.

The request path calls the script once per request, so its round trip is what a quota
costs the proxy (bench/quota_cost.py). Through redis-py's client, a call checks a
connection out of the pool (a condition, a lock, a timeout), packs its arguments in
Python and arms two timers (send, read): about half of its CPU. Here one redis-py
`Connection`, made from the pool's own settings (the URL's TLS, auth and db), carries
only this script:
  - the command is packed in one C call (`hiredis.pack_command`) and replies are read by
    redis-py's hiredis parser, so errors are redis-py's own (`NoScriptError`, ...);
  - a lone call is sent by its caller at once; calls arriving while one is on the wire
    queue and go out together as one pipeline when it returns;
  - a round trip that fails drops the connection (redis-py does) and fails the calls it
    carried; the next call connects again;
  - a script the server lost (NOSCRIPT: a restart) is loaded again and the calls that
    did not run are sent again;
  - the pool's socket timeout bounds each round trip (send, replies, a reconnect) as a
    whole. Its timer is armed by a check every half timeout, and only for a round trip
    still on the wire then: a timer per call cost several µs, and a reply takes less.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | int
Waiting = tuple[bytes, "asyncio.Future[Any]"]


def _pack(*parts: Arg) -> bytes:
    """One command in RESP (hiredis's stub types its argument as a 1-tuple)."""
    return cast(bytes, hiredis.pack_command(cast(Any, parts)))


class ScriptLine:
    """`await line(keys, args)`: the script's reply; raises RedisError or OSError."""

    def __init__(self, pool: ConnectionPool, script: str) -> None:
        settings = pool.connection_kwargs
        self.timeout: float | None = settings.get("socket_timeout")
        self._connection: AbstractConnection = pool.connection_class(
            **{**settings, "socket_timeout": None})  # the round trip has one timeout
        sha = hashlib.sha1(script.encode()).hexdigest()  # the name Redis gives it
        self._head = ("EVALSHA", sha)
        self._load = _pack("SCRIPT", "LOAD", script)
        self._busy = False  # a round trip is on the wire (its caller's or the drain's)
        self._waiting: list[Waiting] = []
        self._drain: asyncio.Task[None] | None = None
        self._on_wire: tuple[float, asyncio.Timeout] | None = None  # its deadline
        self._check: asyncio.TimerHandle | None = None

    def pack(self, keys: Sequence[Arg], args: Sequence[Arg]) -> bytes:
        return _pack(*self._head, len(keys), *keys, *args)

    async def __call__(self, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        command = self.pack(keys, args)
        if self._busy:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiting.append((command, future))
            return await future
        self._busy = True
        try:
            (reply,) = await self._run([command])
        finally:
            self._hand_over()
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _hand_over(self) -> None:
        """The line is free: the calls that queued meanwhile go out from a task."""
        if self._waiting:
            self._drain = asyncio.create_task(self._send_waiting())
        else:
            self._busy = False

    async def _send_waiting(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    replies = await self._run([command for command, _ in batch])
                except BaseException as e:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    if not isinstance(e, Exception):
                        raise
                    continue
                for (_, future), reply in zip(batch, replies, strict=True):
                    if future.done():
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        finally:
            self._busy = False
            self._drain = None

    async def _run(self, commands: list[bytes]) -> list[Any]:
        """The replies in order (a ResponseError for a call that failed on the server).
        Calls answered NOSCRIPT did not run: they are sent again after a reload."""
        loop = asyncio.get_running_loop()
        if self._check is None and self.timeout is not None:
            self._check = loop.call_later(self.timeout / 2, self._give_deadline)
        try:
            async with asyncio.timeout(None) as timer:
                if self.timeout is not None:
                    self._on_wire = (loop.time() + self.timeout, timer)
                replies = await self._round_trip(commands)
                missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
                if missing:
                    await self._round_trip([self._load])
                    for i, reply in zip(missing, await self._round_trip(
                            [commands[i] for i in missing]), strict=True):
                        replies[i] = reply
        except TimeoutError:
            raise RedisTimeoutError(f"no reply within {self.timeout} s") from None
        finally:
            self._on_wire = None
        return replies

    def _give_deadline(self) -> None:
        """Every half timeout while the line is in use: the round trip on the wire gets
        its timer (it expires then at its deadline, or at once if that has passed)."""
        on_wire = self._on_wire
        if on_wire is None and not self._busy:
            self._check = None  # idle: the next call starts the checks again
            return
        if on_wire is not None and on_wire[1].when() is None:
            on_wire[1].reschedule(on_wire[0])
        assert self.timeout is not None
        self._check = asyncio.get_running_loop().call_later(
            self.timeout / 2, self._give_deadline)

    async def _round_trip(self, commands: list[bytes]) -> list[Any]:
        """Sends the commands in one write and reads their replies. On a connection
        error redis-py has dropped the connection; the next send connects again."""
        connection = self._connection
        await connection.send_packed_command(commands, check_health=False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as e:
                replies.append(e)
        return replies

    async def close(self) -> None:
        if self._check is not None:
            self._check.cancel()
            self._check = None
        if self._drain is not None:
            self._drain.cancel()
        await self._connection.disconnect()
