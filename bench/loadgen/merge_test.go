package main

import (
	"math/rand/v2"
	"testing"
)

// A run split over two shards must merge into exactly the figures of one process that recorded every sample.
func TestMergeIsExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	all, a, b := newHist(), newHist(), newHist()
	sendAll, sendA, sendB := newHist(), newHist(), newHist()
	for i := 0; i < 200_000; i++ {
		// A long tail: mostly a few ms, some seconds, a few past the histogram's top (clamped).
		v := int64(rng.ExpFloat64() * 4000)
		if i%1000 == 0 {
			v = int64(rng.Float64() * 700e6)
		}
		record(all, v)
		record(sendAll, v/3)
		if rng.IntN(3) == 0 {
			record(a, v)
			record(sendA, v/3)
		} else {
			record(b, v)
			record(sendB, v/3)
		}
	}
	s0, s1 := 0, 1
	la, lb := 0.5, 1.5
	step := func(delivery, send Latency, received, ok int64, load *float64, server float64) Point {
		return Point{Tag: "100", Rate: 100, Seconds: 10, LoadAvg1: load, SendsDue: ok + 1, SendsOk: ok,
			SendErrors: map[string]int64{"RESOURCE_EXHAUSTED": 1}, DeliveriesReceived: received,
			DeliveryLatency: delivery, SendLatency: send,
			CPUSeconds: CPUFigures{Server: server, Haproxy: server / 3, Loadgen: 0.25}}
	}
	r0 := &Result{Scenario: "steady", Shards: 2, Shard: &s0, WatchSampled: true, Devices: 10, RecipientsPerSend: 9,
		StartAtMs: 42, Points: []Point{step(summarize(a), summarize(sendA), a.TotalCount(), 10, &la, 3)},
		Connect: ConnectFigures{Devices: 10, SecondsUntilAllLive: 1.5, Latency: summarize(a)},
		Drain:   DrainFigures{BacklogEvents: 100, SecondsUntilAllDrained: 1.5},
		Memory:  MemoryFigures{ServerRSSBeforeBytes: 1000, ServerRSSConnectedBytes: 3000, RSSPerIdleDeviceBytes: 100},
		Errors:  map[string]int64{"stream/UNAVAILABLE": 1}, Loadgen: LoadgenFigures{CPUSeconds: 1, Deliveries: 10}}
	r1 := &Result{Scenario: "steady", Shards: 2, Shard: &s1, Devices: 10, RecipientsPerSend: 9, StartAtMs: 42,
		Points:  []Point{step(summarize(b), summarize(sendB), b.TotalCount(), 20, &lb, 0)},
		Connect: ConnectFigures{Devices: 10, SecondsUntilAllLive: 2.5, Latency: summarize(b), Failed: 1},
		Drain:   DrainFigures{BacklogEvents: 300, SecondsUntilAllDrained: 2.5},
		Errors:  map[string]int64{"stream/UNAVAILABLE": 2, "ack/INTERNAL": 1}, Loadgen: LoadgenFigures{CPUSeconds: 2, Deliveries: 30}}

	m, err := merge([]*Result{r0, r1})
	if err != nil {
		t.Fatal(err)
	}
	want, wantSend := summarize(all), summarize(sendAll)
	p := m.Points[0]
	for _, c := range []struct {
		name      string
		got, want Latency
	}{
		{"delivery", p.DeliveryLatency, want},
		{"send", p.SendLatency, wantSend},
		{"connect", m.Connect.Latency, want},
	} {
		if c.got.P50 != c.want.P50 || c.got.P90 != c.want.P90 || c.got.P99 != c.want.P99 || c.got.P999 != c.want.P999 ||
			c.got.Max != c.want.Max || c.got.Count != c.want.Count {
			t.Errorf("%s: merged %+v, single %+v", c.name, strip(c.got), strip(c.want))
		}
		if c.got.HDR != c.want.HDR {
			t.Errorf("%s: the merged histogram encodes differently from the single one", c.name)
		}
	}
	if p.SendsOk != 30 || p.SendsDue != 32 || p.DeliveriesExpected != 270 || p.SendErrors["RESOURCE_EXHAUSTED"] != 2 {
		t.Errorf("counters: %+v", p)
	}
	if p.DeliveriesReceived != all.TotalCount() {
		t.Errorf("received %d, want %d", p.DeliveriesReceived, all.TotalCount())
	}
	// Watched CPU and load from the sampling shard only, loadgen CPU summed.
	if p.CPUSeconds.Server != 3 || p.CPUSeconds.Haproxy != 1 || p.CPUSeconds.Loadgen != 0.5 || p.LoadAvg1 == nil || *p.LoadAvg1 != 0.5 {
		t.Errorf("cpu %+v load %v", p.CPUSeconds, p.LoadAvg1)
	}
	if m.Connect.SecondsUntilAllLive != 2.5 || m.Connect.Failed != 1 || m.Connect.Devices != 20 || m.Devices != 20 {
		t.Errorf("connect %+v", m.Connect)
	}
	if m.Drain.BacklogEvents != 400 || m.Drain.EventsPerSecond != 160 {
		t.Errorf("drain %+v", m.Drain)
	}
	if m.Errors["stream/UNAVAILABLE"] != 3 || m.Errors["ack/INTERNAL"] != 1 {
		t.Errorf("errors %v", m.Errors)
	}
	if m.Loadgen.CPUSeconds != 3 || m.Loadgen.Deliveries != 40 || m.Loadgen.CPUMicrosPerDelivery != 75000 {
		t.Errorf("loadgen %+v", m.Loadgen)
	}
	if m.Memory.ServerRSSConnectedBytes != 3000 || m.Shard != nil || m.Shards != 2 {
		t.Errorf("memory %+v shard %v shards %d", m.Memory, m.Shard, m.Shards)
	}

	// Merging a merged result with nothing else changes nothing.
	again, err := merge([]*Result{m})
	if err != nil {
		t.Fatal(err)
	}
	if again.Points[0].DeliveryLatency != p.DeliveryLatency {
		t.Error("merging one result changed its histogram")
	}
}

func strip(l Latency) Latency { l.HDR = ""; return l }

func TestMergeRefusesResultsOfDifferentRuns(t *testing.T) {
	a := &Result{Scenario: "steady", StartAtMs: 1}
	b := &Result{Scenario: "steady", StartAtMs: 2}
	if _, err := merge([]*Result{a, b}); err == nil {
		t.Fatal("merged results of two runs")
	}
}

func TestMessageTextRoundTrip(t *testing.T) {
	buf := make([]byte, 0, 128)
	for _, due := range []int64{1796170000000123, 1796170000000000, 1796170000000007} {
		text := messageText(buf, due, "warmup")
		if len(text) != messageBytes {
			t.Errorf("text is %d bytes, want %d", len(text), messageBytes)
		}
		got, tag, ok := parseText(text)
		if !ok || got != due || tag != "warmup" {
			t.Errorf("%q: got %d %q %v", text, got, tag, ok)
		}
	}
	// bench/run.ts's backlog texts carry whole milliseconds.
	if due, tag, ok := parseText("1796170000000|fill| backlog message 3"); !ok || due != 1796170000000000 || tag != "fill" {
		t.Errorf("fill text: %d %q %v", due, tag, ok)
	}
	for _, bad := range []string{"", "hello", "123", "123|no end", "|x|"} {
		if _, _, ok := parseText(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestSeqSet(t *testing.T) {
	var s seqSet
	for _, seq := range []uint64{70, 71, 200, 5, 70} {
		s.add(seq)
	}
	if s.len() != 4 || !s.has(5) || !s.has(70) || !s.has(200) || s.has(72) || s.has(4) {
		t.Errorf("set: len %d", s.len())
	}
	if !s.add(5) || !s.add(200) || s.add(201) {
		t.Error("add did not report what was there")
	}
	s.clear()
	if s.len() != 0 || s.has(70) || s.has(5) {
		t.Error("clear left seqs")
	}
	if s.add(3) || !s.has(3) {
		t.Error("after clear")
	}
}
