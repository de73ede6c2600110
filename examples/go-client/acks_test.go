package main

import (
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func TestAckBatchEmptyIsNeverDue(t *testing.T) {
	b := ackBatch{max: 3, delay: time.Second}
	if !b.empty() || b.due(t0.Add(time.Hour)) {
		t.Fatal("an empty batch is due")
	}
	if _, ok := b.wait(t0); ok {
		t.Fatal("an empty batch has a deadline")
	}
}

func TestAckBatchIsDueOnceTheOldestIdHasWaitedTheDelay(t *testing.T) {
	b := ackBatch{max: 3, delay: time.Second}
	b.add(1, t0)
	b.add(2, t0.Add(900*time.Millisecond)) // a later id does not push the deadline back
	if b.due(t0.Add(999 * time.Millisecond)) {
		t.Fatal("due before the oldest id waited the delay")
	}
	if wait, ok := b.wait(t0.Add(400 * time.Millisecond)); !ok || wait != 600*time.Millisecond {
		t.Fatalf("wait = %v, %v; want 600ms, true", wait, ok)
	}
	if !b.due(t0.Add(time.Second)) {
		t.Fatal("not due once the oldest id waited the delay")
	}
	if wait, ok := b.wait(t0.Add(2 * time.Second)); !ok || wait != 0 {
		t.Fatalf("wait past the deadline = %v, %v; want 0, true", wait, ok)
	}
}

func TestAckBatchIsDueAtOnceWhenFull(t *testing.T) {
	b := ackBatch{max: 3, delay: time.Second}
	b.add(1, t0)
	b.add(2, t0)
	if b.due(t0) {
		t.Fatal("due with fewer than max ids, before the delay")
	}
	b.add(3, t0)
	if !b.due(t0) {
		t.Fatal("not due with max ids waiting")
	}
}

func TestAckBatchTakeEmptiesItAndRestartsTheClock(t *testing.T) {
	b := ackBatch{max: 3, delay: time.Second}
	b.add(5, t0)
	b.add(7, t0)
	if ids := b.take(); !slices.Equal(ids, []uint64{5, 7}) {
		t.Fatalf("take = %v; want [5 7]", ids)
	}
	if !b.empty() || b.due(t0.Add(time.Hour)) {
		t.Fatal("a taken batch still waits")
	}
	later := t0.Add(10 * time.Second)
	b.add(9, later)
	if b.due(later.Add(999*time.Millisecond)) || !b.due(later.Add(time.Second)) {
		t.Fatal("the delay does not count from the first id added after take")
	}
}

func TestAckBatchTakesAtMostMaxIdsOldestFirst(t *testing.T) {
	b := ackBatch{max: 2, delay: time.Second}
	for id := uint64(1); id <= 5; id++ {
		b.add(id, t0)
	}
	var frames [][]uint64
	for !b.empty() {
		frames = append(frames, b.take())
	}
	want := [][]uint64{{1, 2}, {3, 4}, {5}}
	if !slices.EqualFunc(frames, want, slices.Equal) {
		t.Fatalf("frames = %v; want %v", frames, want)
	}
}

// An id printed is remembered (its ack's success is not answered) until a later stream's backlog comes without it.
func TestSeenEventsForgetsWhatALaterBacklogLacks(t *testing.T) {
	s := newSeenEvents()
	s.newStream()
	for _, id := range []uint64{1, 2, 3} {
		if s.came(id) {
			t.Fatalf("%d came before, on the first stream", id)
		}
	}
	s.drained() // the stream's own ids stay: their acks may not land
	s.newStream()
	if !s.came(2) { // its ack did not land: it is in the next backlog
		t.Fatal("2 was not remembered from the first stream")
	}
	s.drained() // 1 and 3 were not in the backlog: acked, they cannot come again
	if s.came(4) {
		t.Fatal("4 came before")
	}
	s.newStream()
	for id, want := range map[uint64]bool{1: false, 2: true, 3: false, 4: true} {
		if got := s.came(id); got != want {
			t.Errorf("came(%d) on the third stream = %v; want %v", id, got, want)
		}
	}
}

// A stream that ends before its InboxDrained has not shown the whole inbox: nothing is forgotten.
func TestSeenEventsForgetsNothingWithoutInboxDrained(t *testing.T) {
	s := newSeenEvents()
	s.newStream()
	s.came(1)
	s.came(2)
	s.newStream()
	s.came(2) // the backlog's first event, then the stream ends
	s.newStream()
	if !s.came(1) {
		t.Fatal("1 was forgotten by a stream that ended before its InboxDrained")
	}
}
