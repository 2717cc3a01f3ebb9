"""Classification of redis-py's exceptions, and the commands' labels and kinds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import exceptions as rx

from instrumented_clients.redis import StaleConnectionError, classify, command_kind, command_label
from instrumented_clients.redis.client import counts_against_redis
from instrumented_clients.redis.commands import LABELLED_COMMANDS, CommandKind, normalise
from instrumented_clients.redis.errors import is_refused_by_server, mark_unsent, was_unsent
from instrumented_clients.resilience import ErrorCategory

C = ErrorCategory


@pytest.mark.parametrize(
    ("error", "category"),
    [
        (rx.ConnectionError("Connection closed by server."), C.CONNECTION),
        (rx.TimeoutError("Timeout reading from socket"), C.TIMEOUT),
        (rx.BusyLoadingError("Redis is loading the dataset in memory"), C.SERVER_BUSY),
        (rx.TryAgainError("TRYAGAIN"), C.SERVER_BUSY),
        (rx.MasterDownError("MASTERDOWN"), C.SERVER_BUSY),
        (rx.ClusterDownError("CLUSTERDOWN"), C.SERVER_BUSY),
        (rx.ClusterError("TTL exhausted."), C.SERVER_BUSY),
        (rx.MaxConnectionsError("Too many connections"), C.SERVER_BUSY),
        (rx.AuthenticationError("invalid username-password pair"), C.AUTH),
        (rx.AuthorizationError("not authorized"), C.AUTH),
        (rx.NoPermissionError("NOPERM this user has no permissions"), C.AUTH),
        (rx.ExternalAuthProviderError("token"), C.AUTH),
        (rx.ResponseError("WRONGTYPE Operation against a key"), C.PROGRAMMING),
        (rx.DataError("Invalid input of type: 'dict'"), C.PROGRAMMING),
        (rx.ExecAbortError("EXECABORT"), C.PROGRAMMING),
        (rx.ReadOnlyError("READONLY You can't write against a read only replica."),
         C.CONFIGURATION),
        (rx.OutOfMemoryError("OOM command not allowed"), C.CONFIGURATION),
        (rx.InvalidResponse("Protocol Error"), C.CONNECTION),
        (rx.WatchError("Watched variable changed."), C.UNKNOWN),
        (StaleConnectionError("closed while idle"), C.CONNECTION),
        (ConnectionRefusedError(111, "refused"), C.CONNECTION),
        (ConnectionResetError(104, "reset"), C.CONNECTION),
        (BrokenPipeError(32, "broken pipe"), C.CONNECTION),
        (TimeoutError("timed out"), C.TIMEOUT),
        (ValueError("bad config"), C.PROGRAMMING),
        (KeyError("missing"), C.PROGRAMMING),
    ],
)
def test_classify_maps_each_redis_error(error: BaseException, category: ErrorCategory) -> None:
    assert classify(error) is category


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (rx.ConnectionError("x"), True),
        (rx.TimeoutError("x"), True),
        (rx.BusyLoadingError("x"), True),
        (rx.AuthenticationError("x"), False),  # a ConnectionError subclass, yet permanent
        (rx.AuthorizationError("x"), False),
        (rx.NoPermissionError("x"), False),
        (rx.ResponseError("x"), False),
        (rx.WatchError("x"), False),
    ],
)
def test_only_the_listed_transient_errors_are_transient(error: Exception, transient: bool) -> None:
    assert classify(error).is_transient is transient


def test_unsent_mark_is_set_only_where_asked() -> None:
    sent = rx.ConnectionError("Error while reading from socket")
    unsent = mark_unsent(rx.ConnectionError("Error 111 connecting"))
    assert was_unsent(unsent)
    assert not was_unsent(sent)


def test_server_refusals_are_known_not_applied() -> None:
    assert is_refused_by_server(rx.BusyLoadingError("LOADING"))
    assert is_refused_by_server(rx.TryAgainError("TRYAGAIN"))
    assert not is_refused_by_server(rx.ConnectionError("reset"))
    assert not is_refused_by_server(rx.TimeoutError("timeout"))


@pytest.mark.parametrize(
    ("args", "label", "kind"),
    [
        (("GET", "k"), "get", CommandKind.READ),
        (("HGETALL", "k"), "hgetall", CommandKind.READ),
        (("SET", "k", "v"), "set", CommandKind.WRITE),
        (("INCR", "k"), "incr", CommandKind.WRITE),
        (("BLPOP", "k", 0), "blpop", CommandKind.BLOCKING),
        (("BRPOP", "k", 0), "brpop", CommandKind.BLOCKING),
        (("BLMOVE", "a", "b", "LEFT", "RIGHT", 0), "blmove", CommandKind.BLOCKING),
        (("BZPOPMIN", "k", 0), "bzpopmin", CommandKind.BLOCKING),
        (("XREAD", "STREAMS", "s", "0"), "xread", CommandKind.READ),
        (("XREAD", b"BLOCK", 100, b"STREAMS", "s", "$"), "xread", CommandKind.BLOCKING),
        (("XREAD", "STREAMS", "BLOCK", "0"), "xread", CommandKind.READ),  # a stream named BLOCK
        (("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"), "xreadgroup", CommandKind.WRITE),
        (("XREADGROUP", "GROUP", "g", "c", "BLOCK", 5, "STREAMS", "s", ">"), "xreadgroup",
         CommandKind.BLOCKING),
        (("CLIENT KILL", "ID", 7), "other", CommandKind.WRITE),  # unknown: treated as a write
        (("MY.MODULECMD", "x"), "other", CommandKind.WRITE),
        ((b"get", "k"), "get", CommandKind.READ),
        (("ping",), "ping", CommandKind.READ),
    ],
)
def test_label_and_kind_of_commands(args: tuple[object, ...], label: str,
                                    kind: CommandKind) -> None:
    name = normalise(args[0])
    assert command_label(name) == label
    assert command_kind(name, args) is kind


@given(st.one_of(st.text(max_size=30), st.binary(max_size=30)))
def test_labels_are_bounded_whatever_the_command_name(name: str | bytes) -> None:
    label = command_label(normalise(name))
    assert label == "other" or label.upper() in LABELLED_COMMANDS
    assert label == label.lower()


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (mark_unsent(rx.ConnectionError("Error 111 connecting: Connection refused")), True),
        (mark_unsent(rx.TimeoutError("Timeout connecting to server")), True),
        (rx.TimeoutError("Timeout reading from socket"), True),
        (rx.BusyLoadingError("LOADING"), True),
        # A drop under an in-flight command fails every concurrent command at once: not counted
        # by itself, the reconnection that follows is.
        (rx.ConnectionError("Connection closed by server."), False),
        (mark_unsent(StaleConnectionError("closed while idle")), False),
        (mark_unsent(rx.AuthenticationError("WRONGPASS")), False),
        (rx.ResponseError("WRONGTYPE"), False),
    ],
)
def test_what_counts_against_the_breaker(error: Exception, counted: bool) -> None:
    assert counts_against_redis(error) is counted
