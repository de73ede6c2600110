package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	chatv1 "github.com/palaver-chat/palaver/gen/go/palaver/chat/v1"
)

// runner is one loadgen process's share of a run: its devices, its share of the send rate, and the figures.
type runner struct {
	plan          *Plan
	shard, shards int
	perConn       int
	devices       []*device // this shard's online devices
	links         []*link
	senders       []*device
	steps         []*stepStats
	tagIndex      map[string]int
	share         float64 // this shard's share of the rate: its sending devices / all sending devices
	window        int
	ackDelay      time.Duration
	markRead      bool         // receivers mark their chat read (plan.markRead)
	curStep       atomic.Int32 // the step the send clock is in, -1 outside the steps (stepNow)
	acks          *ackClock    // writes due acks (ackDelayMs > 0)
	unary         unaryClients
	sampler       bool         // shard 0 samples the watched processes
	startAt       atomic.Int64 // unix µs: the send clock's t0 (read by readers to tell this run's messages)
	cmidPrefix    string

	errs          counters
	reconnects    atomic.Int64
	redelivered   atomic.Int64
	dupOnStream   atomic.Int64
	resent        atomic.Int64
	deliveries    atomic.Int64
	backlogEvents atomic.Int64
	serverBacklog atomic.Int64

	receiptUpdates atomic.Int64
	typingUpdates  atomic.Int64
	markReadsSent  atomic.Int64
	markReadsOk    atomic.Int64
	markReadErrs   counters

	connMu       sync.Mutex
	connectHist  *hdrhistogram.Histogram
	connectStart time.Time
	lastLive     time.Time
	liveCount    int
	allLive      chan struct{}

	rampStoppedAfter string
}

// counters is a map of counts by name (errors by kind and code: rare, so one lock).
type counters struct {
	mu sync.Mutex
	m  map[string]int64
}

func (c *counters) add(name string, n int64) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]int64{}
	}
	c.m[name] += n
	c.mu.Unlock()
}

func (c *counters) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

func newRunner(p *Plan, shard, shards, perConn int) *runner {
	r := &runner{
		plan: p, shard: shard, shards: shards, perConn: perConn,
		tagIndex: map[string]int{}, window: p.InFlightPerSender, markRead: p.MarkRead,
		ackDelay:    time.Duration(p.AckDelayMs * float64(time.Millisecond)),
		sampler:     shard == 0,
		connectHist: newHist(),
		allLive:     make(chan struct{}),
		cmidPrefix:  fmt.Sprintf("lg%d-%d-", p.StartAtMs, shard),
	}
	r.curStep.Store(-1)
	if r.ackDelay > 0 {
		r.acks = newAckClock(r.ackDelay)
	}
	// Devices by index: this shard's are those with index % shards == shard. Device i uses urls[i % len(urls)]; a
	// link holds up to perConn devices of one url.
	open := map[string]*link{}
	for i, pd := range p.Devices {
		if i%shards != shard || !pd.online() {
			continue
		}
		url := p.URLs[i%len(p.URLs)]
		l := open[url]
		if l == nil || len(l.devices) >= perConn {
			l = newLink(url)
			open[url] = l
			r.links = append(r.links, l)
		}
		d := &device{r: r, index: i, token: pd.Token, chatID: pd.ChatID, sends: pd.Sends, link: l, done: make(chan struct{}), closed: make(chan struct{})}
		l.devices = append(l.devices, d)
		r.devices = append(r.devices, d)
		if pd.Sends {
			r.senders = append(r.senders, d)
		}
	}
	for i, s := range p.Steps {
		r.steps = append(r.steps, newStepStats(s))
		r.tagIndex[s.Tag] = i
	}
	if all := p.sendingDevices(); all > 0 {
		r.share = float64(len(r.senders)) / float64(all)
	}
	return r
}

// setClock fixes the send clock's t0 and each step's cutoff for the ramp rule (before the clock starts).
func (r *runner) setClock(startAtMicros int64) {
	r.startAt.Store(startAtMicros)
	t := startAtMicros
	for _, st := range r.steps {
		t += int64(st.step.Seconds * 1e6)
		st.mu.Lock()
		st.cutoff = t - int64(r.plan.StopAboveP99Ms*1000)
		st.mu.Unlock()
	}
}

// stepNow is the step the send clock is in: nil before the first step began and after the last ended.
func (r *runner) stepNow() *stepStats {
	if i := r.curStep.Load(); i >= 0 {
		return r.steps[i]
	}
	return nil
}

// onLive is called once per device, at its first InboxDrained.
func (r *runner) onLive(d *device, now time.Time) {
	r.connMu.Lock()
	defer r.connMu.Unlock()
	record(r.connectHist, now.Sub(d.firstOpenedAt).Microseconds())
	r.liveCount++
	r.lastLive = now
	if r.liveCount == len(r.devices) {
		close(r.allLive)
	}
}

// errBroken is a run that measured nothing (no device could connect): loadgen exits non-zero.
var errBroken = errors.New("broken run")

// execute runs the scenario: connect every device at once, wait for startAtMs, follow the send plan, hold, (churn:
// check nothing was lost), end every stream, and return the figures. Closing stop ends it early with what it has;
// ctx's end cancels the streams outright.
func (r *runner) execute(ctx context.Context, stop <-chan struct{}) (*Result, error) {
	p := r.plan
	start := time.Now()
	startAt := p.StartAtMs * 1000
	if startAt == 0 {
		startAt = -1 // set once connected
	}
	r.setClock(max(startAt, 0))
	res := &Result{
		Scenario: p.Scenario, Shards: r.shards, Shard: &r.shard, WatchSampled: r.sampler,
		Devices: len(r.devices), DevicesPerConn: r.perConn, RecipientsPerSend: p.RecipientsPerSend,
		StartAtMs: p.StartAtMs,
	}
	if r.sampler {
		res.Memory.ServerRSSBeforeBytes = rssBytesOf(p.Watch.Server)
	}
	devCtx, cancelDevices := context.WithCancel(ctx)
	defer cancelDevices()
	if r.acks != nil {
		go r.acks.run()
		defer close(r.acks.stop)
	}

	// Connect: every device at once; each is live at its first InboxDrained.
	r.logf("connecting %d devices over %d connections", len(r.devices), len(r.links))
	r.connectStart = time.Now()
	for _, d := range r.devices {
		go d.run(devCtx)
	}
	timeout := time.NewTimer(time.Duration(p.ConnectTimeoutSeconds * float64(time.Second)))
	select {
	case <-r.allLive:
	case <-timeout.C:
	case <-stop:
	}
	timeout.Stop()
	r.connMu.Lock()
	live := r.liveCount
	res.Connect = ConnectFigures{Devices: len(r.devices), Failed: len(r.devices) - live}
	if live > 0 {
		res.Connect.SecondsUntilAllLive = round3(r.lastLive.Sub(r.connectStart).Seconds())
	}
	res.Connect.Latency = summarize(r.connectHist)
	r.connMu.Unlock()
	r.logf("%d of %d devices live in %.2f s", live, len(r.devices), res.Connect.SecondsUntilAllLive)
	if r.sampler {
		res.Memory.ServerRSSConnectedBytes = rssBytesOf(p.Watch.Server)
	}
	broken := live == 0 && len(r.devices) > 0

	var baseline map[string]uint64
	if !broken && !stopped(stop) && p.Scenario == "churn" {
		baseline = r.lastSeqs(devCtx)
	}

	// The send plan, from startAtMs.
	if !broken && !stopped(stop) {
		if startAt < 0 {
			r.setClock(time.Now().Add(500 * time.Millisecond).UnixMicro())
			res.StartAtMs = r.startAt.Load() / 1000
		}
		if late := time.Since(time.UnixMicro(r.startAt.Load())); late > 0 {
			res.Connect.StartedLateMs = round3(float64(late.Microseconds()) / 1000)
			r.logf("ready %.0f ms after startAtMs: the first messages go out late (their latency counts from due)", res.Connect.StartedLateMs)
		}
		sendingDone := make(chan struct{})
		if p.Scenario == "churn" {
			go r.churn(stop, sendingDone)
		}
		r.sendSteps(stop)
		close(sendingDone)
		if !stopped(stop) {
			r.logf("sending done; holding %.1f s", p.HoldSeconds)
		}

		// Hold: late deliveries arrive, idle streams stay open. Connections: the highest server RSS while all are
		// connected.
		holdEnd := time.Now().Add(time.Duration(p.HoldSeconds * float64(time.Second))).UnixMicro()
		sl := newSleeper()
		for {
			next := min(holdEnd, time.Now().Add(500*time.Millisecond).UnixMicro())
			if !sl.until(next, stop) {
				break
			}
			if r.sampler && p.Scenario == "connections" {
				res.Memory.ServerRSSConnectedBytes = max(res.Memory.ServerRSSConnectedBytes, rssBytesOf(p.Watch.Server))
			}
			if next >= holdEnd {
				break
			}
		}
	}

	var churn *ChurnFigures
	var final map[string]uint64
	if p.Scenario == "churn" {
		churn = &ChurnFigures{Reconnects: r.reconnects.Load()}
		if !broken && !stopped(stop) {
			final = r.lastSeqs(devCtx)
			churn.FinalDrainFailed = r.finalDrain(stop)
		}
	}

	// End every stream: ack what was handled, half-close, let the server answer; bounded.
	r.closeAll(cancelDevices)
	if churn != nil {
		r.checkLost(churn, baseline, final)
		res.Churn = churn
	}

	res.Points = make([]Point, len(r.steps))
	for i, st := range r.steps {
		res.Points[i] = st.point(p.RecipientsPerSend)
	}
	res.RampStoppedAfter = r.rampStoppedAfter
	res.Drain = DrainFigures{
		BacklogEvents: r.backlogEvents.Load(), ServerBacklogEvents: r.serverBacklog.Load(),
		SecondsUntilAllDrained: res.Connect.SecondsUntilAllLive,
	}
	res.Drain.perSecond()
	if r.sampler && p.Scenario == "connections" {
		if n := p.onlineDevices(); n > 0 && res.Memory.ServerRSSConnectedBytes > 0 {
			res.Memory.RSSPerIdleDeviceBytes = (res.Memory.ServerRSSConnectedBytes - res.Memory.ServerRSSBeforeBytes) / int64(n)
		}
	}
	res.Receipts = ReceiptFigures{
		MarkRead: r.markRead, MarkReadsSent: r.markReadsSent.Load(), MarkReadsOk: r.markReadsOk.Load(),
		MarkReadErrors: r.markReadErrs.snapshot(), ReceiptUpdates: r.receiptUpdates.Load(),
		TypingUpdates: r.typingUpdates.Load(),
	}
	res.Receipts.unanswered()
	res.Errors = r.errs.snapshot()
	cpu, rss := selfUsage()
	res.Loadgen = LoadgenFigures{CPUSeconds: round2(cpu), MaxRSSBytes: rss, Deliveries: r.deliveries.Load()}
	res.Loadgen.perDelivery()
	r.logf("done in %.1f s: %d deliveries, loadgen CPU %.2f s (%.1f µs/delivery)", time.Since(start).Seconds(),
		res.Loadgen.Deliveries, res.Loadgen.CPUSeconds, res.Loadgen.CPUMicrosPerDelivery)
	if broken {
		return res, fmt.Errorf("%w: none of %d devices could connect", errBroken, len(r.devices))
	}
	return res, nil
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

// closeAll ends every device's stream gracefully; what has not ended after 10 s is cancelled.
func (r *runner) closeAll(cancel context.CancelFunc) {
	for _, d := range r.devices {
		d.close()
	}
	if !r.streamsEnd(10 * time.Second) {
		r.logf("some streams did not end in 10 s: cancelling them")
		cancel()
		if !r.streamsEnd(5 * time.Second) {
			r.logf("some streams did not end after cancelling: leaving them")
		}
		return
	}
	cancel()
	for _, l := range r.links {
		l.close(errConnClosed)
	}
}

// streamsEnd waits up to within for every device's stream to end, and says whether all did.
func (r *runner) streamsEnd(within time.Duration) bool {
	deadline := time.After(within)
	for _, d := range r.devices {
		select {
		case <-d.done:
		case <-deadline:
			return false
		}
	}
	return true
}

// lastSeqs reads the last seq of each of this shard's chats (GetChat by one of its devices), concurrently, for at
// most a minute. A chat whose read fails is left out (and reported as unchecked).
func (r *runner) lastSeqs(ctx context.Context) map[string]uint64 {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	byChat := map[string]*device{}
	for _, d := range r.devices {
		if d.chatID != "" && byChat[d.chatID] == nil {
			byChat[d.chatID] = d
		}
	}
	var mu sync.Mutex
	out := map[string]uint64{}
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for chat, d := range byChat {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				req := connect.NewRequest(&chatv1.GetChatRequest{ChatId: chat})
				req.Header().Set("Authorization", "Bearer "+d.token)
				resp, err := r.unary.get(d.link.url).GetChat(cctx, req)
				cancel()
				if err == nil {
					mu.Lock()
					out[chat] = resp.Msg.GetChat().GetLastSeq()
					mu.Unlock()
					return
				}
				r.errs.add("getChat/"+codeName(connect.CodeOf(err)), 1)
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	return out
}

// finalDrain drops every connection once more and waits (up to connectTimeoutSeconds) until every device has
// drained a new stream: whatever was stored for it and not yet received is in that backlog. It returns how many
// devices did not drain.
func (r *runner) finalDrain(stop <-chan struct{}) int {
	target := make([]int64, len(r.devices))
	for i, d := range r.devices {
		target[i] = d.sessions.Load()
	}
	r.logf("final check: every device reconnects and drains")
	for _, l := range r.links {
		l.drop()
	}
	deadline := time.Now().Add(time.Duration(r.plan.ConnectTimeoutSeconds * float64(time.Second)))
	for {
		pending := 0
		for i, d := range r.devices {
			if d.drainedIn.Load() <= target[i] {
				pending++
			}
		}
		if pending == 0 || time.Now().After(deadline) || stopped(stop) {
			return pending
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkLost compares what each device received with its chat's seqs: every seq in (the chat's last seq before
// sending, its last seq after) that the device did not send itself must have arrived. A device's sends that were
// never answered may have been stored under a seq it does not know: that many missing seqs are forgiven (and
// reported as unknownOwnSends). Runs after every device has ended.
func (r *runner) checkLost(c *ChurnFigures, baseline, final map[string]uint64) {
	c.DuplicatesOnAStream = r.dupOnStream.Load()
	c.RedeliveredAfterReconnect = r.redelivered.Load()
	c.ResentSends = r.resent.Load()
	unchecked := map[string]bool{}
	for _, d := range r.devices {
		from, ok1 := baseline[d.chatID]
		to, ok2 := final[d.chatID]
		if !ok1 || !ok2 {
			unchecked[d.chatID] = true
			continue
		}
		var unknown int64
		for _, o := range d.inflight {
			if o.sent {
				unknown++
			}
		}
		for _, o := range d.queue {
			if o.sent {
				unknown++
			}
		}
		var missing int64
		for seq := from + 1; seq <= to; seq++ {
			if d.own.has(seq) {
				continue
			}
			c.ExpectedMessages++
			if !d.seen.has(seq) {
				missing++
			}
		}
		c.UnknownOwnSends += unknown
		c.Lost += max(0, missing-unknown)
	}
	c.ChatsUnchecked = len(unchecked)
}
