package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
)

// Result is what one loadgen process writes, and what merge writes for several (README.md, "The result").
type Result struct {
	Scenario          string `json:"scenario"`
	Shards            int    `json:"shards"`
	Shard             *int   `json:"shard,omitempty"` // this process's I of --shard I/N; absent in a merged result
	WatchSampled      bool   `json:"watchSampled"`    // this result holds the watched pids' CPU, RSS and load average
	Devices           int    `json:"devices"`
	DevicesPerConn    int    `json:"devicesPerConn"`
	RecipientsPerSend int    `json:"recipientsPerSend"`
	StartAtMs         int64  `json:"startAtMs"`
	// RampStoppedAfter is the tag of the step after which sending stopped (ramp, p99 past stopAboveP99Ms).
	RampStoppedAfter string           `json:"rampStoppedAfter,omitempty"`
	Points           []Point          `json:"points"`
	Connect          ConnectFigures   `json:"connect"`
	Drain            DrainFigures     `json:"drain"`
	Churn            *ChurnFigures    `json:"churn,omitempty"`
	Memory           MemoryFigures    `json:"memory"`
	Receipts         ReceiptFigures   `json:"receipts"`
	Errors           map[string]int64 `json:"errors"`
	Loadgen          LoadgenFigures   `json:"loadgen"`
}

// Point is one step of the send plan.
type Point struct {
	Tag     string  `json:"tag"`
	Rate    float64 `json:"rate"`
	Seconds float64 `json:"seconds"`
	// Skipped: sending stopped before this step (ramp) or the run was interrupted before it began.
	Skipped              bool             `json:"skipped,omitempty"`
	LoadAvg1             *float64         `json:"loadAvg1"`
	SendsDue             int64            `json:"sendsDue"`
	SendsOk              int64            `json:"sendsOk"`
	SendErrors           map[string]int64 `json:"sendErrors"`
	SendsUnanswered      int64            `json:"sendsUnanswered"`
	DeliveriesExpected   int64            `json:"deliveriesExpected"`
	DeliveriesReceived   int64            `json:"deliveriesReceived"`
	Duplicates           int64            `json:"duplicates"`
	DeliveryLatency      Latency          `json:"deliveryLatency"`
	SendLatency          Latency          `json:"sendLatency"`
	CPUSeconds           CPUFigures       `json:"cpuSeconds"`
	CPUMicrosPerDelivery CPUFigures       `json:"cpuMicrosPerDelivery"`
	// Counted against the step running when they happened (README.md): receipt updates received by this shard's
	// devices, and the mark_read commands they wrote and had answered.
	ReceiptUpdates          int64            `json:"receiptUpdates"`
	ReceiptUpdatesPerSecond float64          `json:"receiptUpdatesPerSecond"`
	MarkReadsSent           int64            `json:"markReadsSent"`
	MarkReadsOk             int64            `json:"markReadsOk"`
	MarkReadErrors          map[string]int64 `json:"markReadErrors"`
}

// ReceiptFigures are the receipts and typing figures of the whole run (connecting and holding included).
type ReceiptFigures struct {
	MarkRead       bool             `json:"markRead"` // the devices marked their chat read (plan.markRead)
	MarkReadsSent  int64            `json:"markReadsSent"`
	MarkReadsOk    int64            `json:"markReadsOk"`
	MarkReadErrors map[string]int64 `json:"markReadErrors"` // answered with an error, by code (also in errors)
	// MarkReadsUnanswered: written but neither answered nor failed when the streams closed (a dropped stream's are
	// written again, with the newest seq, on the next).
	MarkReadsUnanswered int64 `json:"markReadsUnanswered"`
	ReceiptUpdates      int64 `json:"receiptUpdates"` // ReceiptUpdate events received (never acked)
	TypingUpdates       int64 `json:"typingUpdates"`  // TypingUpdate events received (never acked)
}

type CPUFigures struct {
	Server   float64 `json:"server"`
	Postgres float64 `json:"postgres"`
	Redis    float64 `json:"redis"`
	Haproxy  float64 `json:"haproxy"`
	Loadgen  float64 `json:"loadgen"`
}

type ConnectFigures struct {
	Devices             int     `json:"devices"`
	SecondsUntilAllLive float64 `json:"secondsUntilAllLive"`
	Latency             Latency `json:"latency"`
	Failed              int     `json:"failed"`
	// StartedLateMs: how long after startAtMs this process was ready to send (0: on time).
	StartedLateMs float64 `json:"startedLateMs"`
}

type DrainFigures struct {
	BacklogEvents          int64   `json:"backlogEvents"`
	ServerBacklogEvents    int64   `json:"serverBacklogEvents"` // the sum of InboxDrained.backlog_events
	SecondsUntilAllDrained float64 `json:"secondsUntilAllDrained"`
	EventsPerSecond        float64 `json:"eventsPerSecond"`
}

type ChurnFigures struct {
	Reconnects                int64 `json:"reconnects"`
	Lost                      int64 `json:"lost"`
	DuplicatesOnAStream       int64 `json:"duplicatesOnAStream"`
	RedeliveredAfterReconnect int64 `json:"redeliveredAfterReconnect"`
	ResentSends               int64 `json:"resentSends"`      // unanswered sends written again after a reconnect
	ExpectedMessages          int64 `json:"expectedMessages"` // (device, seq) pairs the final check expected
	UnknownOwnSends           int64 `json:"unknownOwnSends"`  // sends never answered: their seqs may be the device's own
	FinalDrainFailed          int   `json:"finalDrainFailed"` // devices that did not drain after the final reconnect
	ChatsUnchecked            int   `json:"chatsUnchecked"`   // chats whose last seq could not be read
}

type MemoryFigures struct {
	ServerRSSBeforeBytes    int64 `json:"serverRssBeforeBytes"`
	ServerRSSConnectedBytes int64 `json:"serverRssConnectedBytes"`
	RSSPerIdleDeviceBytes   int64 `json:"rssPerIdleDeviceBytes"`
}

type LoadgenFigures struct {
	CPUSeconds           float64 `json:"cpuSeconds"`
	MaxRSSBytes          int64   `json:"maxRssBytes"`
	Deliveries           int64   `json:"deliveries"` // every first arrival of a message (live or backlog)
	CPUMicrosPerDelivery float64 `json:"cpuMicrosPerDelivery"`
}

// perDelivery fills the µs-per-delivery figures from the seconds and the deliveries.
func (p *Point) perDelivery() {
	per := func(s float64) float64 {
		if p.DeliveriesReceived == 0 {
			return 0
		}
		return round2(s * 1e6 / float64(p.DeliveriesReceived))
	}
	p.CPUMicrosPerDelivery = CPUFigures{
		Server: per(p.CPUSeconds.Server), Postgres: per(p.CPUSeconds.Postgres),
		Redis: per(p.CPUSeconds.Redis), Haproxy: per(p.CPUSeconds.Haproxy), Loadgen: per(p.CPUSeconds.Loadgen),
	}
}

// perSecond fills the receipt updates per second of the step.
func (p *Point) perSecond() {
	p.ReceiptUpdatesPerSecond = 0
	if p.Seconds > 0 {
		p.ReceiptUpdatesPerSecond = round2(float64(p.ReceiptUpdates) / p.Seconds)
	}
}

func (r *ReceiptFigures) unanswered() {
	var failed int64
	for _, n := range r.MarkReadErrors {
		failed += n
	}
	r.MarkReadsUnanswered = max(0, r.MarkReadsSent-r.MarkReadsOk-failed)
}

func (l *LoadgenFigures) perDelivery() {
	l.CPUMicrosPerDelivery = 0
	if l.Deliveries > 0 {
		l.CPUMicrosPerDelivery = round2(l.CPUSeconds * 1e6 / float64(l.Deliveries))
	}
}

func (d *DrainFigures) perSecond() {
	d.EventsPerSecond = 0
	if d.SecondsUntilAllDrained > 0 {
		d.EventsPerSecond = round2(float64(d.BacklogEvents) / d.SecondsUntilAllDrained)
	}
}

func round2(v float64) float64 {
	if v < 0 {
		return -round2(-v)
	}
	return float64(int64(v*100+0.5)) / 100
}

func writeResult(path string, r *Result) error {
	out, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(out, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path) // a reader never sees half a result
}

func readResult(path string) (*Result, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

func addCounts(into map[string]int64, from map[string]int64) {
	for k, v := range from {
		into[k] += v
	}
}

// merge combines shard results exactly: histograms are merged and their percentiles recomputed, counters summed;
// the watched processes' CPU, RSS and load average come from the result that sampled them (shard 0), loadgen CPU
// is summed, the connect and drain times are the slowest shard's.
func merge(results []*Result) (*Result, error) {
	if len(results) == 0 {
		return nil, errors.New("nothing to merge")
	}
	first := results[0]
	m := &Result{
		Scenario: first.Scenario, Shards: len(results), DevicesPerConn: first.DevicesPerConn,
		RecipientsPerSend: first.RecipientsPerSend, StartAtMs: first.StartAtMs, Errors: map[string]int64{},
	}
	var sampler *Result
	for _, r := range results {
		if r.Scenario != first.Scenario || len(r.Points) != len(first.Points) || r.StartAtMs != first.StartAtMs {
			return nil, errors.New("the results are not of one run (scenario, steps or startAtMs differ)")
		}
		if r.WatchSampled {
			if sampler != nil {
				return nil, errors.New("two results sampled the watched processes")
			}
			sampler = r
		}
		if r.Shards > m.Shards {
			m.Shards = r.Shards
		}
	}
	m.WatchSampled = sampler != nil

	// Points, step by step.
	for i := range first.Points {
		p := Point{Tag: first.Points[i].Tag, Rate: first.Points[i].Rate, Seconds: first.Points[i].Seconds,
			Skipped: true, SendErrors: map[string]int64{}, MarkReadErrors: map[string]int64{}}
		var deliveries, sends []Latency
		for _, r := range results {
			q := r.Points[i]
			if q.Tag != p.Tag {
				return nil, fmt.Errorf("step %d: tags %q and %q differ", i, p.Tag, q.Tag)
			}
			p.Skipped = p.Skipped && q.Skipped
			p.SendsDue += q.SendsDue
			p.SendsOk += q.SendsOk
			p.SendsUnanswered += q.SendsUnanswered
			addCounts(p.SendErrors, q.SendErrors)
			p.DeliveriesReceived += q.DeliveriesReceived
			p.Duplicates += q.Duplicates
			p.CPUSeconds.Loadgen += q.CPUSeconds.Loadgen
			p.ReceiptUpdates += q.ReceiptUpdates
			p.MarkReadsSent += q.MarkReadsSent
			p.MarkReadsOk += q.MarkReadsOk
			addCounts(p.MarkReadErrors, q.MarkReadErrors)
			deliveries = append(deliveries, q.DeliveryLatency)
			sends = append(sends, q.SendLatency)
		}
		var err error
		if p.DeliveryLatency, err = mergeLatencies(deliveries); err != nil {
			return nil, fmt.Errorf("step %s, delivery latency: %w", p.Tag, err)
		}
		if p.SendLatency, err = mergeLatencies(sends); err != nil {
			return nil, fmt.Errorf("step %s, send latency: %w", p.Tag, err)
		}
		if sampler != nil {
			sp := sampler.Points[i]
			p.LoadAvg1 = sp.LoadAvg1
			p.CPUSeconds.Server, p.CPUSeconds.Postgres, p.CPUSeconds.Redis, p.CPUSeconds.Haproxy =
				sp.CPUSeconds.Server, sp.CPUSeconds.Postgres, sp.CPUSeconds.Redis, sp.CPUSeconds.Haproxy
		}
		p.CPUSeconds.Loadgen = round2(p.CPUSeconds.Loadgen)
		p.DeliveriesExpected = p.SendsOk * int64(m.RecipientsPerSend)
		p.perDelivery()
		p.perSecond()
		m.Points = append(m.Points, p)
	}

	var connects []Latency
	stopped := map[string]bool{}
	var churn []*ChurnFigures
	m.Receipts.MarkReadErrors = map[string]int64{}
	for _, r := range results {
		m.Devices += r.Devices
		m.Receipts.MarkRead = m.Receipts.MarkRead || r.Receipts.MarkRead
		m.Receipts.MarkReadsSent += r.Receipts.MarkReadsSent
		m.Receipts.MarkReadsOk += r.Receipts.MarkReadsOk
		addCounts(m.Receipts.MarkReadErrors, r.Receipts.MarkReadErrors)
		m.Receipts.ReceiptUpdates += r.Receipts.ReceiptUpdates
		m.Receipts.TypingUpdates += r.Receipts.TypingUpdates
		connects = append(connects, r.Connect.Latency)
		m.Connect.Devices += r.Connect.Devices
		m.Connect.Failed += r.Connect.Failed
		m.Connect.SecondsUntilAllLive = max(m.Connect.SecondsUntilAllLive, r.Connect.SecondsUntilAllLive)
		m.Connect.StartedLateMs = max(m.Connect.StartedLateMs, r.Connect.StartedLateMs)
		m.Drain.BacklogEvents += r.Drain.BacklogEvents
		m.Drain.ServerBacklogEvents += r.Drain.ServerBacklogEvents
		m.Drain.SecondsUntilAllDrained = max(m.Drain.SecondsUntilAllDrained, r.Drain.SecondsUntilAllDrained)
		addCounts(m.Errors, r.Errors)
		m.Loadgen.CPUSeconds += r.Loadgen.CPUSeconds
		m.Loadgen.MaxRSSBytes = max(m.Loadgen.MaxRSSBytes, r.Loadgen.MaxRSSBytes)
		m.Loadgen.Deliveries += r.Loadgen.Deliveries
		if r.RampStoppedAfter != "" {
			stopped[r.RampStoppedAfter] = true
		}
		if r.Churn != nil {
			churn = append(churn, r.Churn)
		}
	}
	var err error
	if m.Connect.Latency, err = mergeLatencies(connects); err != nil {
		return nil, fmt.Errorf("connect latency: %w", err)
	}
	m.Drain.perSecond()
	m.Receipts.unanswered()
	m.Loadgen.CPUSeconds = round2(m.Loadgen.CPUSeconds)
	m.Loadgen.perDelivery()
	if sampler != nil {
		m.Memory = sampler.Memory
	}
	// Shards decide to stop a ramp on their own; the merged result names the earliest step any of them stopped after.
	for _, p := range m.Points {
		if stopped[p.Tag] {
			m.RampStoppedAfter = p.Tag
			break
		}
	}
	if len(churn) > 0 {
		c := &ChurnFigures{}
		for _, x := range churn {
			c.Reconnects += x.Reconnects
			c.Lost += x.Lost
			c.DuplicatesOnAStream += x.DuplicatesOnAStream
			c.RedeliveredAfterReconnect += x.RedeliveredAfterReconnect
			c.ResentSends += x.ResentSends
			c.ExpectedMessages += x.ExpectedMessages
			c.UnknownOwnSends += x.UnknownOwnSends
			c.FinalDrainFailed += x.FinalDrainFailed
			c.ChatsUnchecked += x.ChatsUnchecked
		}
		m.Churn = c
	}
	return m, nil
}

// sortedKeys is for stable printing.
func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
