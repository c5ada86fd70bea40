"""The pooled random identifiers: right shapes, no repeats, and a forked
child never hands out its parent's bytes."""

from __future__ import annotations

import os
import uuid

from click2dial import ids


def test_identifiers_have_their_shapes_and_do_not_repeat() -> None:
    tokens = {ids.token_hex(8) for _ in range(5000)}  # spans a few refills
    assert len(tokens) == 5000 and all(len(t) == 16 for t in tokens)
    refs = [ids.uuid4() for _ in range(1000)]
    assert len(set(refs)) == 1000
    assert all(uuid.UUID(ref).version == 4 and str(uuid.UUID(ref)) == ref for ref in refs)
    values = [ids.randbits(31) for _ in range(2000)]
    assert all(0 <= v < 2**31 for v in values)
    assert max(values) >= 2**30  # the top bit is used, not shifted away
    assert {ids.randbits(1) for _ in range(200)} == {0, 1}


def test_a_forked_child_does_not_reuse_the_parents_block() -> None:
    ids.token_hex(1)  # the parent holds a block with bytes left in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next token, to the parent
        os.write(write, ids.token_hex(16).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != ids.token_hex(16)  # the parent's next bytes are its own
