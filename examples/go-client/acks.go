package main

import "time"

// maxAckBatch is the most event ids one AckEvents command may carry.
const maxAckBatch = 1000

// ackDelay is the longest a printed event's id waits for company before it is acked. One second gathers a busy chat's
// burst into one ack frame, and bounds what a reconnect sends again to about a second of events. Waiting longer risks
// nothing worse: an event not yet acked is only ever sent again (and dropped as a repeat), never lost.
const ackDelay = time.Second

// ackBatch holds the ids of printed events that are not acked yet, and decides when they are worth an ack frame: once
// max ids wait, or once the oldest has waited delay. (listen also acks them at InboxDrained, at its stop condition and
// before a clean exit.) It only decides: it sends nothing and reads no clock, so it is tested on its own.
type ackBatch struct {
	max    int
	delay  time.Duration
	ids    []uint64
	oldest time.Time // when ids[0] was added
}

func (b *ackBatch) add(id uint64, now time.Time) {
	if len(b.ids) == 0 {
		b.oldest = now
	}
	b.ids = append(b.ids, id)
}

func (b *ackBatch) empty() bool { return len(b.ids) == 0 }

// due reports whether the waiting ids should be acked now: the batch is full, or its oldest id has waited delay.
func (b *ackBatch) due(now time.Time) bool {
	return len(b.ids) >= b.max || len(b.ids) > 0 && !now.Before(b.oldest.Add(b.delay))
}

// wait returns how long after now the batch becomes due by age; ok is false when no id waits.
func (b *ackBatch) wait(now time.Time) (wait time.Duration, ok bool) {
	if len(b.ids) == 0 {
		return 0, false
	}
	return max(b.oldest.Add(b.delay).Sub(now), 0), true
}

// take removes and returns the oldest ids, at most max of them: one ack frame's worth.
func (b *ackBatch) take() []uint64 {
	n := min(len(b.ids), b.max)
	ids := b.ids[:n:n]
	if b.ids = b.ids[n:]; len(b.ids) == 0 {
		b.ids = nil
	}
	return ids
}

// seenEvents remembers the stored events listen printed, so that it prints none twice. An event comes again on a
// later stream for as long as it is in the inbox, and the acks do not tell when it leaves: they go with
// answer_errors_only, so their success is not answered. A stream's backlog holds every event still in the inbox,
// though (and no event comes twice on one stream): at its InboxDrained, an id that did not come in it was acked, can
// never come again, and is forgotten. Like ackBatch it reads no stream, so it is tested on its own.
type seenEvents struct {
	stream int            // the current stream's number
	last   map[uint64]int // event id -> the last stream it came on
}

func newSeenEvents() *seenEvents { return &seenEvents{last: map[uint64]int{}} }

// newStream counts the next stream.
func (s *seenEvents) newStream() { s.stream++ }

// came records that the event came on this stream, and reports whether it came before (and was printed then).
func (s *seenEvents) came(id uint64) (before bool) {
	_, before = s.last[id]
	s.last[id] = s.stream
	return before
}

// drained forgets the ids that did not come in this stream's backlog: they are out of the inbox.
func (s *seenEvents) drained() {
	for id, stream := range s.last {
		if stream < s.stream {
			delete(s.last, id)
		}
	}
}
