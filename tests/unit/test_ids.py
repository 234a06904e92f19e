"""Decision ids: random version-4 UUIDs in canonical form, never repeated, not even across a fork."""

import os
import re
import uuid

from tenantgate.ids import decision_id

CANONICAL_V4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_ids_are_canonical_random_uuids_and_do_not_repeat():
    ids = [decision_id() for _ in range(5000)]  # crosses many 4 KiB refills of the random buffer
    assert all(CANONICAL_V4.fullmatch(i) for i in ids)
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids[:50])
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_reuse_the_ids_its_parent_has_buffered():
    decision_id()  # the parent now holds a buffer of random bytes for its next ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next ids and leave without running any test machinery
        os.close(read)
        os.write(write, " ".join(decision_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {decision_id() for _ in range(10)}
    assert len(child) == 10 and not child & parent


def test_threads_taking_ids_at_once_never_get_the_same_one():
    import threading

    taken: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(len(taken))

    def take(mine: list[str]) -> None:
        start.wait()
        mine.extend(decision_id() for _ in range(3000))  # each thread crosses many refills of 256 ids

    threads = [threading.Thread(target=take, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for mine in taken for i in mine]
    assert len(every) == 24000 and len(set(every)) == len(every)
    assert all(CANONICAL_V4.fullmatch(i) for i in every)


def test_a_refill_returns_an_id_even_when_other_threads_empty_the_new_ids_at_once():
    """Other threads take ids without the lock: they may take every id of a refill the moment it is
    published, before the refilling thread takes its own (found in review: decision_id() then raised)."""
    import sys
    import threading

    from tenantgate import ids

    taken: list[str] = []
    fired = False

    def drain() -> None:  # another request thread, through the public API
        taken.extend(decision_id() for _ in range(len(ids._IDS._ready)))

    def local(frame, event, arg):
        nonlocal fired
        if event == "line" and not fired and ids._IDS._ready:  # the new ids are published: empty them now
            fired = True
            thread = threading.Thread(target=drain)
            thread.start()
            thread.join()
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code is ids._RandomIds._refill.__code__ else None

    ids._IDS._ready.clear()
    sys.settrace(tracer)
    try:
        mine = decision_id()
    finally:
        sys.settrace(None)
    assert fired and len(taken) == 255
    assert CANONICAL_V4.fullmatch(mine) and mine not in taken and len(set(taken)) == 255
