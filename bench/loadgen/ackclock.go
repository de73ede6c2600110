package main

import (
	"sync"
	"time"
)

// ackClock writes acks when they are due, for every device of the process, from one goroutine: a device's first
// unacked event queues it with due = handled + ackDelayMs; all devices share the delay, so the queue is in due order
// (a FIFO). The clock wakes at the head's due time and acks every device due within slack of it, so at most one
// wake-up per slack, whatever the number of devices, and no ack is later than its due time.
type ackClock struct {
	slack time.Duration

	mu   sync.Mutex
	q    []ackEntry
	head int
	wake chan struct{}
	stop chan struct{}
}

type ackEntry struct {
	d   *device
	due time.Time
}

func newAckClock(delay time.Duration) *ackClock {
	return &ackClock{slack: min(delay/10, 5*time.Millisecond), wake: make(chan struct{}, 1), stop: make(chan struct{})}
}

// add queues d, whose acks are due at due (d.mu is held: the order is d.mu, then the clock's).
func (a *ackClock) add(d *device, due time.Time) {
	a.mu.Lock()
	wasEmpty := a.head == len(a.q)
	a.q = append(a.q, ackEntry{d, due})
	a.mu.Unlock()
	if wasEmpty {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
}

func (a *ackClock) run() {
	t := time.NewTimer(time.Hour)
	t.Stop()
	var (
		batch []ackEntry
		conns []*h2conn
	)
	for {
		a.mu.Lock()
		now := time.Now()
		limit := now.Add(a.slack)
		batch = batch[:0]
		for a.head < len(a.q) && !a.q[a.head].due.After(limit) {
			batch = append(batch, a.q[a.head])
			a.q[a.head] = ackEntry{}
			a.head++
		}
		if a.head == len(a.q) {
			a.q, a.head = a.q[:0], 0
		} else if a.head >= 4096 && a.head*2 >= len(a.q) {
			a.q, a.head = a.q[:copy(a.q, a.q[a.head:])], 0
		}
		wait := time.Duration(-1)
		if a.head < len(a.q) {
			wait = a.q[a.head].due.Sub(now)
		}
		a.mu.Unlock()

		// Write every due device's acks, then flush each connection once.
		conns = conns[:0]
		for _, e := range batch {
			if c := e.d.ackDue(); c != nil && (len(conns) == 0 || conns[len(conns)-1] != c) {
				conns = append(conns, c)
			}
		}
		for i, c := range conns {
			c.flush()
			conns[i] = nil
		}
		if len(batch) > 0 {
			continue // time has passed: look again
		}
		if wait < 0 {
			select {
			case <-a.wake:
			case <-a.stop:
				return
			}
			continue
		}
		t.Reset(wait)
		select {
		case <-t.C:
		case <-a.wake:
			t.Stop()
		case <-a.stop:
			t.Stop()
			return
		}
	}
}
