package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// sendSteps is the open-loop send clock. This shard's message k of a step is due at the step's start + k / (its
// share of the rate) and is handed to the next sending device (round robin) when due, whatever the answers do;
// a device with inFlightPerSender unanswered sends holds it back, and its latency still counts from its due time.
// At each step boundary the clock samples CPU and load, and a ramp stops once a step's p99 passed
// stopAboveP99Ms. It returns when the plan ends, the ramp stops or stop is closed.
func (r *runner) sendSteps(stop <-chan struct{}) {
	sleeper := newSleeper()
	t := r.startAt.Load()
	var k int64
	prev := -1 // the step that ran last
	for i, st := range r.steps {
		if !sleeper.until(t, stop) {
			break
		}
		sample := r.sampleCPU()
		if prev >= 0 {
			r.steps[prev].cpuEnd = sample
			r.curStep.Store(-1)
			if r.plan.Scenario == "ramp" && r.plan.StopAboveP99Ms > 0 && r.rampPassed(prev) {
				r.rampStoppedAfter = r.steps[prev].step.Tag
				r.logf("ramp: step %s passed p99 %g ms; sending stops", r.steps[prev].step.Tag, r.plan.StopAboveP99Ms)
				prev = -1
				break
			}
		}
		st.began = true
		st.cpuStart = sample
		r.curStep.Store(int32(i))
		if r.sampler {
			la := loadAvg1()
			st.loadAvg = &la
		}
		prev = i
		end := t + int64(st.step.Seconds*1e6)
		rate := st.step.Rate * r.share
		if rate > 0 && len(r.senders) > 0 {
			interval := 1e6 / rate
			for j := int64(0); ; j++ {
				due := t + int64(float64(j)*interval)
				if due >= end {
					break
				}
				if !sleeper.until(due, stop) {
					st.cpuEnd = r.sampleCPU()
					r.curStep.Store(-1)
					return
				}
				d := r.senders[k%int64(len(r.senders))]
				d.enqueue(outgoing{k: k, due: due, step: int32(i)})
				k++
				st.sendsDue++
			}
		}
		t = end
	}
	// The last step's end (or, without steps, startAtMs: the hold of drain, connections and connect begins when every
	// shard has connected).
	sleeper.until(t, stop)
	if prev >= 0 {
		r.steps[prev].cpuEnd = r.sampleCPU()
	}
	r.curStep.Store(-1)
}

// rampPassed decides at the end of step i whether its p99 passed the limit (see stepStats.p99Above).
func (r *runner) rampPassed(i int) bool {
	st := r.steps[i]
	var unanswered int64
	for _, d := range r.senders {
		d.mu.Lock()
		for _, q := range [][]outgoing{d.inflight, d.queue} {
			for _, o := range q {
				if int(o.step) == i && o.due < st.cutoff {
					unanswered++
				}
			}
		}
		d.mu.Unlock()
	}
	limit := int64(r.plan.StopAboveP99Ms * 1000)
	return st.p99Above(limit, int64(r.plan.RecipientsPerSend), r.shards == 1, unanswered)
}

// sampleCPU reads the CPU seconds so far: the watched processes' on shard 0 only (merge takes them from there, so
// they are not counted twice), this process's on every shard (merge sums them).
func (r *runner) sampleCPU() *cpuSample {
	s := &cpuSample{}
	s.loadgen, _ = selfUsage()
	if r.sampler {
		procs := readProcs()
		s.server = procs.cpuSecondsOf(r.plan.Watch.Server)
		s.postgres = procs.cpuSecondsOf(r.plan.Watch.Postgres)
		s.redis = procs.cpuSecondsOf(r.plan.Watch.Redis)
		s.haproxy = procs.cpuSecondsOf(r.plan.Watch.Haproxy)
	}
	return s
}

// churn drops a share of this shard's connections every period while the send plan runs; their devices reconnect
// at once (and resend what was unanswered, with the same client_message_id).
func (r *runner) churn(stop <-chan struct{}, sendingDone <-chan struct{}) {
	c := r.plan.Churn
	rng := rand.New(rand.NewPCG(uint64(r.plan.StartAtMs), uint64(r.shard)))
	period := time.Duration(c.EverySeconds * float64(time.Second))
	sleeper := newSleeper()
	next := r.startAt.Load()
	for {
		next += period.Microseconds()
		if !sleeper.until(next, stop) {
			return
		}
		select {
		case <-sendingDone:
			return
		default:
		}
		n := int(c.Fraction*float64(len(r.links)) + 0.5)
		if n == 0 && len(r.links) > 0 {
			n = 1
		}
		for _, i := range rng.Perm(len(r.links))[:n] {
			r.links[i].drop()
		}
	}
}

// clientMessageID is unique per message of the run (per sending device is what the server needs); a resend after a
// reconnect reuses it, so the server stores the message once.
func (r *runner) clientMessageID(k int64) string {
	return r.cmidPrefix + strconv.FormatInt(k, 10)
}

// sleeper waits until a unix µs time with one reusable timer.
type sleeper struct{ t *time.Timer }

func newSleeper() *sleeper {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &sleeper{t: t}
}

// until returns false if stop was closed first.
func (s *sleeper) until(unixMicros int64, stop <-chan struct{}) bool {
	d := time.Until(time.UnixMicro(unixMicros))
	if d <= 0 {
		select {
		case <-stop:
			return false
		default:
			return true
		}
	}
	s.t.Reset(d)
	select {
	case <-s.t.C:
		return true
	case <-stop:
		s.t.Stop()
		return false
	}
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(logOut, "loadgen %d/%d %s: %s\n", r.shard, r.shards, time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}
