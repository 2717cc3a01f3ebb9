"""Which Redis commands are labelled by name, which only read, and which block.

The ``operation`` label must stay bounded, so only the commands below are labelled by their
(lower-case) name; every other command is ``other``. Independently of the label, each command is
one of three kinds, which decides when a failed attempt may run again:

- ``read``: changes nothing; always safe to run again.
- ``write``: may change data; run again only when the failure provably happened before it was
  sent (or when the caller opted in).
- ``blocking``: waits on the server (``BLPOP``, ``XREAD ... BLOCK``, ...) and consumes what it
  returns; never run again once sent, opt-in or not.

Commands not listed are treated as writes: unknown means "maybe not safe".
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Final

__all__ = [
    "BLOCKING_COMMANDS",
    "LABELLED_COMMANDS",
    "READ_COMMANDS",
    "CommandKind",
    "command_kind",
    "command_label",
    "normalise",
]


class CommandKind(str, enum.Enum):
    READ = "read"
    WRITE = "write"
    BLOCKING = "blocking"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


READ_COMMANDS: Final = _words(
    """
    GET MGET STRLEN GETRANGE SUBSTR GETBIT BITCOUNT BITPOS LCS EXISTS TTL PTTL EXPIRETIME
    PEXPIRETIME TYPE KEYS SCAN RANDOMKEY DBSIZE DUMP TOUCH OBJECT MEMORY
    HGET HMGET HGETALL HEXISTS HKEYS HVALS HLEN HSTRLEN HSCAN HRANDFIELD HTTL HPTTL
    LRANGE LLEN LINDEX LPOS
    SMEMBERS SISMEMBER SMISMEMBER SCARD SRANDMEMBER SSCAN SINTER SINTERCARD SUNION SDIFF
    ZRANGE ZRANGEBYSCORE ZRANGEBYLEX ZREVRANGE ZREVRANGEBYSCORE ZREVRANGEBYLEX ZSCORE ZMSCORE
    ZCARD ZCOUNT ZLEXCOUNT ZRANK ZREVRANK ZSCAN ZRANDMEMBER ZINTER ZUNION ZDIFF ZINTERCARD
    XLEN XRANGE XREVRANGE XINFO XPENDING XREAD
    PFCOUNT GEOPOS GEODIST GEOHASH GEOSEARCH GEORADIUS_RO GEORADIUSBYMEMBER_RO
    PING ECHO TIME INFO LASTSAVE ROLE COMMAND
    EVAL_RO EVALSHA_RO FCALL_RO SORT_RO
    """
)
"""Commands that change nothing (``XREAD`` only without ``BLOCK``: see :func:`command_kind`)."""

BLOCKING_COMMANDS: Final = _words(
    "BLPOP BRPOP BLMOVE BRPOPLPUSH BLMPOP BZPOPMIN BZPOPMAX BZMPOP WAIT WAITAOF"
)
"""Always blocking; ``XREAD`` and ``XREADGROUP`` are blocking when given ``BLOCK``."""

_WRITE_LABELLED: Final = _words(
    """
    SET SETEX PSETEX SETNX GETSET GETDEL GETEX MSET MSETNX APPEND SETRANGE SETBIT
    INCR INCRBY INCRBYFLOAT DECR DECRBY DEL UNLINK EXPIRE PEXPIRE EXPIREAT PEXPIREAT PERSIST
    RENAME RENAMENX COPY
    HSET HSETNX HMSET HDEL HINCRBY HINCRBYFLOAT HEXPIRE
    LPUSH RPUSH LPUSHX RPUSHX LPOP RPOP LREM LTRIM LSET LINSERT LMOVE RPOPLPUSH LMPOP
    SADD SREM SPOP SMOVE SINTERSTORE SUNIONSTORE SDIFFSTORE
    ZADD ZREM ZINCRBY ZPOPMIN ZPOPMAX ZREMRANGEBYSCORE ZREMRANGEBYRANK ZRANGESTORE
    XADD XACK XDEL XTRIM XCLAIM XAUTOCLAIM XREADGROUP
    PFADD PFMERGE GEOADD PUBLISH EVAL EVALSHA FCALL SORT
    """
)

LABELLED_COMMANDS: Final = frozenset(
    (READ_COMMANDS - {"COMMAND", "OBJECT", "MEMORY", "XINFO"}) | BLOCKING_COMMANDS | _WRITE_LABELLED
)
"""Commands that get their own ``operation`` label; everything else is ``other``."""

OTHER: Final = "other"


def normalise(name: Any) -> str:
    """The upper-case command word of ``args[0]`` (``"CLIENT KILL"`` -> ``"CLIENT"``)."""
    if isinstance(name, (bytes, bytearray, memoryview)):
        name = bytes(name).decode("latin-1")
    text = str(name).strip()
    return text.split(" ", 1)[0].upper()


def command_label(name: str) -> str:
    """The ``operation`` label for the normalised command ``name``."""
    return name.lower() if name in LABELLED_COMMANDS else OTHER


def _has_block_option(args: Sequence[Any]) -> bool:
    # Options come before STREAMS; what follows are stream names and ids, which may be anything.
    for argument in args[1:]:
        if isinstance(argument, (str, bytes)) and len(argument) in (5, 7):
            text = argument.decode("latin-1") if isinstance(argument, bytes) else argument
            word = text.upper()
            if word == "BLOCK":
                return True
            if word == "STREAMS":
                return False
    return False


def command_kind(name: str, args: Sequence[Any] = ()) -> CommandKind:
    """Whether the normalised command ``name`` (called with ``args``) reads, writes or blocks."""
    if name in ("XREAD", "XREADGROUP") and _has_block_option(args):
        return CommandKind.BLOCKING
    if name in READ_COMMANDS:
        return CommandKind.READ
    if name in BLOCKING_COMMANDS:
        return CommandKind.BLOCKING
    return CommandKind.WRITE
