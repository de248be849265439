"""Lease balancing across many in-process workers, on a fake clock: does `plan` converge?

The simulation models:
- a lease table (a dict of `Lease`) whose writes are conditional on the counter the writer last
  saw and bump it, like the DynamoDB lease table: a take sets owner and counter+1, a renewal and
  a release need the counter the holder wrote last;
- workers, each with its own `ExpiryClock` and its own view of what it holds. Every taker cycle
  (5 s of fake time, failover 10 s) every live worker first renews what it holds; a renewal that
  fails means the lease was taken over, and the worker forgets it (as `HeldLease.renew` does).
  Then the workers, in a random order, each scan the table, call `expired` and `plan`, and try
  the takes and the steal the plan asks for;
- membership changes: a join, a crash (the worker stops renewing and taking; its leases must
  expire and be taken by the others), a graceful leave (the worker releases its leases: owner
  None, counter+1).

It simplifies: the renewer and the taker run in lock step (the real renewer runs every
failover/3 or so, the taker every failover/2 or on a wake-up); scans see every earlier write (one
scenario also runs the scans of a cycle all before any take, to show collisions); no reads,
checkpoints or shard ends happen, so readiness never changes during a run; API calls never fail.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cached_property

import pytest

from streamsync.leases.model import SHARD_END, TRIM_HORIZON, Lease, lease_key
from streamsync.leases.planner import ExpiryClock, plan
from streamsync.source.shards import ready_to_read

ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2024-01-01T00:00:00.000"
FAILOVER = 10.0
CYCLE = 5.0
# Cycles a crashed worker's leases need to be seen as expired: its last renewal is seen at the
# cycle it crashed in, and the counter must then stay still for *more* than the failover time.
EXPIRY_CYCLES = math.floor(FAILOVER / CYCLE) + 1


class SimLease(Lease):
    """A Lease whose key is computed once per row version: the planner reads it a lot, and the
    simulation makes millions of those calls. Same value as `Lease.key`; `replace` keeps the
    class."""

    @cached_property
    def key(self) -> str:
        return lease_key(self.stream_arn, self.shard_id)


def _stream(ready: int = 1_200, finished_parents: int = 200, blocked: int = 100) -> list[Lease]:
    """`ready` readable shards (some children of finished parents), plus finished parents and
    children of open shards that nobody may read yet."""
    leases: list[Lease] = [
        SimLease(ARN, f"parent-{i}", "t", checkpoint=SHARD_END) for i in range(finished_parents)
    ]
    for i in range(ready):
        parents = (f"parent-{i % finished_parents}",) if i % 3 == 0 and finished_parents else ()
        leases.append(SimLease(ARN, f"shard-{i}", "t", parents, checkpoint=TRIM_HORIZON))
    leases += [SimLease(ARN, f"blocked-{i}", "t", (f"shard-{i}",)) for i in range(blocked)]
    return leases


class LeaseTable:
    """The lease table: every write is conditional on the counter the writer saw."""

    def __init__(self, leases: list[Lease]) -> None:
        self.rows = {lease.key: lease for lease in leases}

    def scan(self) -> list[Lease]:
        return list(self.rows.values())

    def _write(self, seen: Lease, new: Lease) -> Lease | None:
        if self.rows[seen.key].counter != seen.counter:
            return None
        self.rows[seen.key] = new
        return new

    def take(self, seen: Lease, owner: str) -> Lease | None:
        switches = seen.owner_switches + (seen.owner != owner)
        return self._write(
            seen, replace(seen, owner=owner, counter=seen.counter + 1, owner_switches=switches)
        )

    def renew(self, held: Lease) -> Lease | None:
        if self.rows[held.key].counter != held.counter:
            return None
        # `replace(held, counter=held.counter + 1)`, minus the cost: renewals are most writes.
        renewed = object.__new__(type(held))
        renewed.__dict__.update(held.__dict__, counter=held.counter + 1)
        self.rows[held.key] = renewed
        return renewed

    def release(self, held: Lease) -> Lease | None:
        return self._write(held, replace(held, owner=None, counter=held.counter + 1))


@dataclass
class Worker:
    name: str
    expiry: ExpiryClock
    rng: random.Random
    held: dict[str, Lease] = field(default_factory=dict)  # as this worker last wrote them


@dataclass
class Simulation:
    table: LeaseTable
    seed: int
    concurrent_scans: bool = False
    now: float = 0.0
    cycles: int = 0
    live: dict[str, Worker] = field(default_factory=dict)
    crashed: dict[str, frozenset[str]] = field(default_factory=dict)  # name -> keys at crash
    left: set[str] = field(default_factory=set)
    moves: int = 0  # successful takes of a lease another worker held or had held
    steals: int = 0
    take_conflicts: int = 0  # takes refused because the lease changed since the scan
    lost_on_renewal: int = 0  # renewals refused: the lease was taken over

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # Every shard is listed (none has expired from the stream). Takes, renewals and
        # releases never change a checkpoint, so readiness is computed once.
        self.listed = {lease.shard_id for lease in self.table.scan()}
        self.ready = self._ready(self.table.scan())

    def join(self, name: str) -> None:
        self.live[name] = Worker(name, ExpiryClock(FAILOVER), random.Random(f"{self.seed}{name}"))

    def crash(self, name: str) -> None:
        worker = self.live.pop(name)
        self.crashed[name] = frozenset(worker.held)

    def leave(self, name: str) -> None:
        worker = self.live.pop(name)
        for lease in worker.held.values():
            assert self.table.release(lease) is not None, "a graceful release must not conflict"
        self.left.add(name)

    def _ready(self, leases: list[Lease]) -> dict[str, bool]:
        by_shard = {lease.shard_id: lease for lease in leases}
        return {lease.key: ready_to_read(lease, by_shard, self.listed) for lease in leases}

    def cycle(self) -> None:
        self.cycles += 1
        self.now += CYCLE
        for worker in self.live.values():
            for key, lease in list(worker.held.items()):
                renewed = self.table.renew(lease)
                if renewed is None:
                    self.lost_on_renewal += 1
                    del worker.held[key]  # taken over: the reader would be stopped here
                else:
                    worker.held[key] = renewed
        self.check_invariants(after_renewal=True)
        order = list(self.live.values())
        self.rng.shuffle(order)
        scans = {w.name: self.table.scan() for w in order} if self.concurrent_scans else {}
        for worker in order:
            leases = scans.get(worker.name) or self.table.scan()
            expired = worker.expiry.expired(leases, self.now)
            decided = plan(leases, worker.name, expired, lambda x: self.ready[x.key], worker.rng)
            wanted = [*decided.take, *([decided.steal] if decided.steal else [])]
            for seen in wanted:
                taken = self.table.take(seen, worker.name)
                if taken is None:
                    self.take_conflicts += 1
                    continue
                worker.held[taken.key] = taken
                if seen.owner is not None and seen.owner != worker.name:
                    self.moves += 1
                if seen is decided.steal:
                    self.steals += 1
        self.check_invariants(after_renewal=False)

    def loads(self) -> dict[str, int]:
        counts = Counter(lease.owner for lease in self.table.scan())
        return {name: counts[name] for name in self.live}

    def readable(self) -> list[Lease]:
        return [lease for lease in self.table.scan() if self.ready[lease.key]]

    def balanced(self) -> bool:
        """Every readable lease held by a live worker, and loads within one of each other."""
        if any(lease.owner not in self.live for lease in self.readable()):
            return False
        loads = self.loads().values()
        return max(loads) - min(loads) <= 1

    def check_invariants(self, after_renewal: bool) -> None:
        for lease in self.table.scan():
            # Nobody takes what cannot be read; a worker that left never holds a lease; a
            # crashed one only keeps (some of) what it held when it crashed.
            if not self.ready[lease.key]:
                assert lease.owner is None, f"unreadable {lease.shard_id} owned by {lease.owner}"
            assert lease.owner not in self.left, f"{lease.shard_id} owned by departed worker"
            if lease.owner in self.crashed:
                assert lease.key in self.crashed[lease.owner]
        if after_renewal:
            # Once renewals ran, every worker's belief matches the table: one holder per lease.
            believed: Counter[str] = Counter()
            for worker in self.live.values():
                for key, lease in worker.held.items():
                    assert self.table.rows[key] is lease
                    believed[key] += 1
            assert all(n == 1 for n in believed.values())
            owned_live = {k for k, lease in self.table.rows.items() if lease.owner in self.live}
            assert owned_live == set(believed)

    def run_until_balanced(self, limit: int) -> int:
        """Cycles until balanced (at most `limit`), then three more cycles that must move
        nothing. Returns the cycles it took."""
        taken = 0
        while not self.balanced():
            if taken == limit:
                pytest.fail(f"not balanced after {limit} cycles: {sorted(self.loads().values())}")
            self.cycle()
            taken += 1
        moves, conflicts, owners = self.moves, self.take_conflicts, self._owners()
        for _ in range(3):
            self.cycle()
        assert (self.moves, self.take_conflicts) == (moves, conflicts), "moved after balance"
        assert self._owners() == owners, "leases changed hands after balance"
        return taken

    def _owners(self) -> dict[str, str | None]:
        return {key: lease.owner for key, lease in self.table.rows.items()}


def _target(n: int, workers: int) -> int:
    return math.ceil(n / workers)


def _shortfall(n: int, workers: int) -> int:
    """How far short of target the last worker to fill up can be: workers*target - n."""
    return workers * _target(n, workers) - n


def _check_end_state(sim: Simulation, n: int) -> None:
    """Every readable lease has exactly one owner, a live one, which knows it holds it."""
    assert sim.ready == sim._ready(sim.table.scan()), "readiness changed: the model is off"
    sim.cycle()  # renewals make every worker's view current
    readable = sim.readable()
    assert len(readable) == n
    for lease in readable:
        holders = [w.name for w in sim.live.values() if lease.key in w.held]
        assert holders == [lease.owner]
    loads = sim.loads()
    assert sum(loads.values()) == n
    assert max(loads.values()) == _target(n, len(sim.live))
    assert not any(lease.owner in sim.crashed or lease.owner in sim.left for lease in readable)


def _recover(sim: Simulation, crashed_leases: int, limit: int) -> int:
    """Cycles until no readable lease is held by a crashed worker; none may go before expiry."""
    cycles = 0
    while any(lease.owner in sim.crashed for lease in sim.readable()):
        if cycles == limit:
            pytest.fail(f"crashed workers' leases still held after {limit} cycles")
        sim.cycle()
        cycles += 1
        if cycles < EXPIRY_CYCLES:
            held = sum(lease.owner in sim.crashed for lease in sim.readable())
            assert held == crashed_leases, f"a live lease was taken as expired at cycle {cycles}"
    return cycles


def _counters(sim: Simulation) -> dict[str, int]:
    return {
        "lease moves": sim.moves,
        "steals": sim.steals,
        "take conflicts": sim.take_conflicts,
        "lost on renewal": sim.lost_on_renewal,
        "cycles": sim.cycles,
    }


def test_thousand_shards_ten_workers_join_crash_and_leave() -> None:
    """The must-show: 1,200 readable shards, 1 worker, joins up to 10, 3 crash, 2 leave.

    Bounds, in taker cycles after each change:
    - a join: nothing is free, so a newcomer only steals, one lease per cycle: it needs about
      `target` cycles (target = ceil(n / workers) after the join). Bound: target + 2.
    - a crash: the leases expire after exactly EXPIRY_CYCLES (the counter must stay still for
      more than the failover) and are then all taken in that cycle, each survivor up to its
      target; the last to take can be short by workers*target - n and makes it up stealing one
      per cycle. Bound: EXPIRY_CYCLES + 1 + shortfall.
    - a graceful leave: the released leases are free at once and taken in bulk. Bound:
      1 + shortfall + 1.
    """
    started = time.perf_counter()
    sim = Simulation(LeaseTable(_stream()), seed=7)
    n = len(sim.readable())
    assert n == 1_200
    measured: dict[str, int] = {}

    sim.join("w0")
    measured["first worker"] = sim.run_until_balanced(limit=1)
    assert sim.loads() == {"w0": n}

    for phase, names in (
        ("join 1->4", ["w1", "w2", "w3"]),
        ("join 4->10", ["w4", "w5", "w6", "w7", "w8", "w9"]),
    ):
        for name in names:
            sim.join(name)
        target = _target(n, len(sim.live))
        measured[phase] = sim.run_until_balanced(limit=target + 2)
        # Stealing one lease per newcomer per cycle, it cannot be much faster than that either.
        assert measured[phase] >= target - 1

    for name in ("w1", "w5", "w8"):
        sim.crash(name)
    workers = len(sim.live)
    # The survivors have room for every expired lease, so they take them all in one cycle, the
    # first one they see them expired.
    recovered = _recover(sim, 3 * _target(n, 10), limit=EXPIRY_CYCLES)
    assert recovered == EXPIRY_CYCLES
    measured["crash 3 of 10: taken"] = recovered
    measured["crash 3 of 10"] = recovered + sim.run_until_balanced(limit=1 + _shortfall(n, workers))

    for name in ("w0", "w6"):
        sim.leave(name)
    measured["leave 2 of 7"] = sim.run_until_balanced(limit=2 + _shortfall(n, len(sim.live)))

    _check_end_state(sim, n)
    measured |= _counters(sim)
    print(f"\nsequential scans: {measured} in {time.perf_counter() - started:.1f}s")
    # Steals only ever moved leases that had to move: the minimum for these joins is
    # (1200 - 300) + 4 * (300 - 120), plus the steals that even out the crash's remainder.
    assert measured["steals"] <= (n - 300) + 4 * (300 - 120) + _shortfall(n, 7)


def test_cold_start_with_overlapping_scans() -> None:
    """Ten workers start at once and all scan before any of them takes; then 3 crash, 2 leave.

    Overlapping scans make the takes of a cycle race for the same rows: the planner sorts the
    available leases the same way for everybody, so the first writer wins its whole batch and
    the others lose theirs to the table's condition. Bounds, in taker cycles:
    - cold start: a worker that sees no other owner aims for all n, so one worker takes
      everything and the others then steal one per cycle: target + workers (a stealer whose
      scan is stale can pick a lease somebody else just stole, or a victim already evened out).
    - a crash: EXPIRY_CYCLES, then one survivor per cycle fills up (+ workers - 1 to take them
      all), then the shortfall is stolen: + 1 + shortfall.
    - a graceful leave: one survivor per cycle fills up: workers + shortfall + 1.
    """
    started = time.perf_counter()
    sim = Simulation(LeaseTable(_stream()), seed=11, concurrent_scans=True)
    n = len(sim.readable())
    measured: dict[str, int] = {}

    workers = 10
    for i in range(workers):
        sim.join(f"w{i}")
    sim.cycle()
    assert sorted(sim.loads().values()) == [0] * 9 + [n], "expected the first taker to get all"
    measured["cold start 10"] = 1 + sim.run_until_balanced(limit=_target(n, workers) + workers)

    for name in ("w1", "w5", "w8"):
        sim.crash(name)
    workers = len(sim.live)
    recovered = _recover(sim, 3 * _target(n, 10), limit=EXPIRY_CYCLES + workers - 1)
    measured["crash 3 of 10: taken"] = recovered
    measured["crash 3 of 10"] = recovered + sim.run_until_balanced(limit=1 + _shortfall(n, workers))

    for name in ("w0", "w6"):
        sim.leave(name)
    workers = len(sim.live)
    measured["leave 2 of 7"] = sim.run_until_balanced(limit=workers + _shortfall(n, workers) + 1)

    _check_end_state(sim, n)
    measured |= _counters(sim)
    print(f"\noverlapping scans: {measured} in {time.perf_counter() - started:.1f}s")
    assert measured["take conflicts"] > 0  # the races happened, and the table refused the losers
