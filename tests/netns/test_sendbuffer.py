"""netns.sendbuffer against a plain bytearray model, and the zero-copy promise it makes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from netns.sendbuffer import RecvArena, SendBuffer

_operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.binary(max_size=40)),
        st.tuples(st.just("drop"), st.integers(0, 60)),
        st.tuples(st.just("peek"), st.tuples(st.integers(0, 120), st.integers(0, 80))),
        st.tuples(st.just("clear"), st.none()),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_operations)
def test_behaves_like_a_bytearray(operations: list[tuple[str, object]]) -> None:
    buffer, model = SendBuffer(), bytearray()
    views: list[tuple[bytes | memoryview, bytes]] = []
    for name, argument in operations:
        if name == "append":
            assert isinstance(argument, bytes)
            buffer.append(argument)
            model += argument
        elif name == "drop":
            assert isinstance(argument, int)
            buffer.drop(argument)
            del model[:argument]
        elif name == "peek":
            assert isinstance(argument, tuple)
            offset, size = argument
            got = buffer.peek(offset, size)
            assert bytes(got) == bytes(model[offset : offset + size])
            views.append((got, bytes(got)))
        else:
            buffer.clear()
            model.clear()
        assert len(buffer) == len(model)
    for view, seen in views:  # what was handed out never changes afterwards
        assert bytes(view) == seen


def test_peek_within_a_chunk_is_a_view_not_a_copy() -> None:
    buffer = SendBuffer()
    first, second = b"a" * 1000, b"b" * 1000
    buffer.append(first)
    buffer.append(second)
    buffer.drop(10)
    view = buffer.peek(100, 500)
    assert isinstance(view, memoryview) and view.obj is first
    assert buffer.peek(990, 1000) is second  # a whole chunk: the object itself
    straddling = buffer.peek(900, 200)  # across the chunks: joined once
    assert bytes(straddling) == b"a" * 90 + b"b" * 110


def test_mutable_input_is_copied() -> None:
    buffer = SendBuffer()
    data = bytearray(b"abc")
    buffer.append(data)
    data[0] = ord("x")
    assert bytes(buffer.peek(0, 3)) == b"abc"


def receive(arena: RecvArena, data: bytes) -> memoryview:
    """What the driver does with a socket: receive into `space()`, then `take`."""
    space = arena.space()
    assert space is not None and len(space) >= len(data)
    space[: len(data)] = data
    del space
    return arena.take(len(data))


def test_arena_views_stay_intact_and_memory_is_reused_only_when_free() -> None:
    arena = RecvArena(size=64, max_buffers=2, min_space=16)
    first = receive(arena, b"a" * 40)
    second = receive(arena, b"b" * 20)  # 24 bytes left: same buffer
    assert first.obj is second.obj and first.readonly and second.readonly
    third = receive(arena, b"c" * 30)  # under min_space left: the second buffer
    assert third.obj is not first.obj
    fourth = receive(arena, b"d" * 34)  # fills the second buffer
    assert arena.space() is None  # both hold live views, and no more may be made
    assert bytes(first) == b"a" * 40 and bytes(second) == b"b" * 20
    assert bytes(third) == b"c" * 30 and bytes(fourth) == b"d" * 34
    kept = id(first.obj)
    del first, second  # the first buffer is free again
    fifth = receive(arena, b"e" * 10)
    assert id(fifth.obj) == kept
    assert bytes(third) == b"c" * 30 and bytes(fourth) == b"d" * 34


def test_arena_views_in_a_send_buffer_are_not_copied() -> None:
    arena, buffer = RecvArena(size=1024), SendBuffer()
    view = receive(arena, bytes(range(200)))
    buffer.append(view)
    peeked = buffer.peek(10, 50)
    assert isinstance(peeked, memoryview) and peeked.obj is view.obj
    assert bytes(peeked) == bytes(range(10, 60))
    writable = memoryview(bytearray(b"xyz"))
    buffer.append(writable)  # a writable view may change: copied
    writable[0] = ord("!")
    assert bytes(buffer.peek(200, 3)) == b"xyz"


def test_arena_trim_frees_only_unused_buffers() -> None:
    arena = RecvArena(size=64, max_buffers=2, min_space=16)
    held = receive(arena, b"a" * 60)
    dropped = receive(arena, b"b" * 60)
    del dropped
    arena.trim()
    assert len(arena._buffers) == 1 and arena._buffers[0] is held.obj
    assert bytes(held) == b"a" * 60
    assert receive(arena, b"c" * 8).obj is not held.obj  # a new buffer, not the held one
