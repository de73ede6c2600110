package main

import (
	"sync"
	"sync/atomic"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// stepStats gathers one step's figures. Readers of every device record into it under its mutex: at these rates
// (tens of thousands of deliveries a second) a shared lock held for one histogram update is not contended.
type stepStats struct {
	step Step
	// cutoff (unix µs): a message of this step due before it has been waiting longer than stopAboveP99Ms when the
	// step ends, so the ramp can count a missing one as late.
	cutoff int64

	mu                   sync.Mutex
	delivery, send       *hdrhistogram.Histogram
	received, duplicates int64
	sendsOk              int64
	sendErrors           map[string]int64
	receivedBeforeCutoff int64
	sendsOkBeforeCutoff  int64
	markReadErrors       map[string]int64

	// Counted against the step running when they happen (no tag says which message they belong to): receipt updates
	// received, mark_read frames written and answered without an error.
	receiptUpdates, markReadsSent, markReadsOk atomic.Int64

	// Written by the send clock only, read once it has ended.
	sendsDue         int64
	began            bool
	loadAvg          *float64
	cpuStart, cpuEnd *cpuSample
}

// cpuSample is CPU seconds so far: the watched processes' (shard 0 only) and this process's.
type cpuSample struct {
	server, postgres, redis, haproxy, loadgen float64
}

func newStepStats(s Step) *stepStats {
	return &stepStats{step: s, delivery: newHist(), send: newHist(), sendErrors: map[string]int64{}, markReadErrors: map[string]int64{}}
}

func (st *stepStats) addDelivery(latencyMicros, due int64) {
	st.mu.Lock()
	record(st.delivery, latencyMicros)
	st.received++
	if due < st.cutoff {
		st.receivedBeforeCutoff++
	}
	st.mu.Unlock()
}

func (st *stepStats) addDuplicate() {
	st.mu.Lock()
	st.duplicates++
	st.mu.Unlock()
}

func (st *stepStats) addSendOk(latencyMicros, due int64) {
	st.mu.Lock()
	record(st.send, latencyMicros)
	st.sendsOk++
	if due < st.cutoff {
		st.sendsOkBeforeCutoff++
	}
	st.mu.Unlock()
}

func (st *stepStats) addSendError(code string) {
	st.mu.Lock()
	st.sendErrors[code]++
	st.mu.Unlock()
}

func (st *stepStats) addMarkReadError(code string) {
	st.mu.Lock()
	st.markReadErrors[code]++
	st.mu.Unlock()
}

// p99Above says, when the step has just ended, whether its p99 delivery or send latency is past limitMicros: more
// than 1 % of its samples are above it, counting as above it the messages due before the cutoff that have not
// arrived (or been answered) yet. Deliveries still missing are only known exactly with one shard (a shard does not
// know what the others sent to its devices); with several, the received ones and the sends decide.
func (st *stepStats) p99Above(limitMicros int64, recipientsPerSend int64, oneShard bool, unansweredBeforeCutoff int64) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	above := func(late, total int64) bool { return total > 0 && late*100 > total }
	var overdue int64
	if oneShard {
		overdue = max(0, st.sendsOkBeforeCutoff*recipientsPerSend-st.receivedBeforeCutoff)
	}
	deliveries := st.delivery.TotalCount()
	if above(countAbove(st.delivery, limitMicros)+overdue, deliveries+overdue) {
		return true
	}
	sends := st.send.TotalCount()
	return above(countAbove(st.send, limitMicros)+unansweredBeforeCutoff, sends+unansweredBeforeCutoff)
}

// point is the step's figures for the result.
func (st *stepStats) point(recipientsPerSend int) Point {
	st.mu.Lock()
	defer st.mu.Unlock()
	p := Point{
		Tag: st.step.Tag, Rate: st.step.Rate, Seconds: st.step.Seconds,
		Skipped:            !st.began,
		LoadAvg1:           st.loadAvg,
		SendsDue:           st.sendsDue,
		SendsOk:            st.sendsOk,
		SendErrors:         map[string]int64{},
		DeliveriesExpected: st.sendsOk * int64(recipientsPerSend),
		DeliveriesReceived: st.received,
		Duplicates:         st.duplicates,
		DeliveryLatency:    summarize(st.delivery),
		SendLatency:        summarize(st.send),
	}
	var failed int64
	for code, n := range st.sendErrors {
		p.SendErrors[code] = n
		failed += n
	}
	p.SendsUnanswered = max(0, st.sendsDue-st.sendsOk-failed)
	p.ReceiptUpdates = st.receiptUpdates.Load()
	p.MarkReadsSent = st.markReadsSent.Load()
	p.MarkReadsOk = st.markReadsOk.Load()
	p.MarkReadErrors = map[string]int64{}
	for code, n := range st.markReadErrors {
		p.MarkReadErrors[code] = n
	}
	p.perSecond()
	if st.cpuStart != nil && st.cpuEnd != nil {
		p.CPUSeconds = CPUFigures{
			Server:   round2(st.cpuEnd.server - st.cpuStart.server),
			Postgres: round2(st.cpuEnd.postgres - st.cpuStart.postgres),
			Redis:    round2(st.cpuEnd.redis - st.cpuStart.redis),
			Haproxy:  round2(st.cpuEnd.haproxy - st.cpuStart.haproxy),
			Loadgen:  round2(st.cpuEnd.loadgen - st.cpuStart.loadgen),
		}
	}
	p.perDelivery()
	return p
}
