package main

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// fakePlan is groups chats of users × devicesPerUser devices, every device sending, for the fake server.
func fakePlan(url, scenario string, groups, users, devicesPerUser int, steps []Step) *Plan {
	p := &Plan{Scenario: scenario, URLs: []string{url}, RecipientsPerSend: users*devicesPerUser - 1, Steps: steps,
		HoldSeconds: 0.5, StopAboveP99Ms: 500, AckDelayMs: 20, ConnectTimeoutSeconds: 10}
	for g := 0; g < groups; g++ {
		for u := 0; u < users; u++ {
			for d := 0; d < devicesPerUser; d++ {
				chat := fmt.Sprintf("chat%d", g)
				p.Devices = append(p.Devices, PlanDevice{Token: fmt.Sprintf("g%du%d|d%d|%s", g, u, d, chat), ChatID: chat, Sends: true})
			}
		}
	}
	if err := p.validate(); err != nil {
		panic(err)
	}
	return p
}

func runPlan(t *testing.T, p *Plan, shard, shards int) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := newRunner(p, shard, shards, 1).execute(ctx, make(chan struct{}))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func startFake(t *testing.T) (*fakeServer, string) {
	t.Helper()
	f := newFakeServer()
	url, stop, err := f.serve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return f, url
}

func TestSteadyDeliversEverything(t *testing.T) {
	_, url := startFake(t)
	p := fakePlan(url, "steady", 6, 3, 2, []Step{{Tag: "warmup", Rate: 100, Seconds: 0.5}, {Tag: "200", Rate: 200, Seconds: 1}})
	p.HoldSeconds = 2 // the race detector slows the fake server down
	p.StartAtMs = time.Now().Add(time.Second).UnixMilli()
	res := runPlan(t, p, 0, 1)
	if res.Connect.Failed != 0 || res.Connect.Latency.Count != 36 {
		t.Fatalf("connect %+v", res.Connect)
	}
	for _, pt := range res.Points {
		if pt.SendsDue == 0 || pt.SendsOk != pt.SendsDue || pt.DeliveriesReceived != pt.DeliveriesExpected || pt.Duplicates != 0 {
			t.Errorf("step %s: due %d ok %d expected %d received %d duplicates %d", pt.Tag, pt.SendsDue, pt.SendsOk,
				pt.DeliveriesExpected, pt.DeliveriesReceived, pt.Duplicates)
		}
		if pt.DeliveryLatency.Count != pt.DeliveriesReceived || pt.SendLatency.Count != pt.SendsOk {
			t.Errorf("step %s: histogram counts", pt.Tag)
		}
	}
	if res.Points[1].SendsDue != 200 {
		t.Errorf("step 200 for 1 s: %d sends due", res.Points[1].SendsDue)
	}
	if len(res.Errors) != 0 {
		t.Errorf("errors %v", res.Errors)
	}
	if rc := res.Receipts; rc.MarkRead || rc.MarkReadsSent != 0 {
		t.Errorf("steady marked read: %+v", rc)
	}
}

// receipts: every receiving device marks its chat read with the newest seq it received, at most one mark_read
// unanswered at a time, checks the answers, and counts the ReceiptUpdates it gets without acking them.
func TestReceiptsMarksReadAndCountsUpdates(t *testing.T) {
	f, url := startFake(t)
	f.markReadDelay.Store(int64(60 * time.Millisecond)) // a device gets a message every 50 ms or so: some coalesce
	p := fakePlan(url, "receipts", 4, 3, 2, []Step{{Tag: "warmup", Rate: 50, Seconds: 0.5}, {Tag: "100", Rate: 100, Seconds: 1}})
	p.HoldSeconds = 1
	p.StartAtMs = time.Now().Add(time.Second).UnixMilli()
	res := runPlan(t, p, 0, 1)
	rc := res.Receipts
	if !rc.MarkRead || rc.MarkReadsSent == 0 || rc.MarkReadsOk != rc.MarkReadsSent || len(rc.MarkReadErrors) != 0 ||
		rc.MarkReadsUnanswered != 0 || rc.ReceiptUpdates == 0 {
		t.Errorf("receipts %+v", rc)
	}
	// Coalesced: answers held back 60 ms make some devices receive several messages while one is unanswered.
	if rc.MarkReadsSent >= res.Loadgen.Deliveries {
		t.Errorf("%d mark_reads for %d deliveries", rc.MarkReadsSent, res.Loadgen.Deliveries)
	}
	var sent, ok, updates int64
	for _, pt := range res.Points {
		if pt.SendsOk != pt.SendsDue || pt.DeliveriesReceived != pt.DeliveriesExpected {
			t.Errorf("step %s: due %d ok %d expected %d received %d", pt.Tag, pt.SendsDue, pt.SendsOk,
				pt.DeliveriesExpected, pt.DeliveriesReceived)
		}
		if pt.ReceiptUpdatesPerSecond != round2(float64(pt.ReceiptUpdates)/pt.Seconds) {
			t.Errorf("step %s: %d receipt updates in %g s, %g per second", pt.Tag, pt.ReceiptUpdates, pt.Seconds, pt.ReceiptUpdatesPerSecond)
		}
		sent, ok, updates = sent+pt.MarkReadsSent, ok+pt.MarkReadsOk, updates+pt.ReceiptUpdates
	}
	if res.Points[1].MarkReadsSent == 0 || res.Points[1].ReceiptUpdates == 0 || sent > rc.MarkReadsSent || ok > rc.MarkReadsOk || updates > rc.ReceiptUpdates {
		t.Errorf("per step: sent %d ok %d updates %d; run %+v", sent, ok, updates, rc)
	}
	if len(res.Errors) != 0 {
		t.Errorf("errors %v", res.Errors)
	}
	t.Logf("receipts %+v, deliveries %d", rc, res.Loadgen.Deliveries)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.zeroAcks != 0 || f.markReadsNotNewer != 0 {
		t.Errorf("acks of event_id 0: %d; mark_reads not newer than the device's last: %d", f.zeroAcks, f.markReadsNotNewer)
	}
	// Every user has a device that received the chat's last message, and marked it read before closing.
	for id, c := range f.chats {
		for _, m := range c.members {
			if c.read[m.user] != c.lastSeq {
				t.Errorf("%s: %s read up to %d of %d", id, m.user, c.read[m.user], c.lastSeq)
			}
		}
	}
}

// Acks ask to be answered only if refused (answer_errors_only) and nothing waits for their answers: a refusal counts
// as ack/CODE, and a success that a server older than the field answers counts as nothing.
func TestAcksAreAnsweredOnlyWhenRefused(t *testing.T) {
	for _, tc := range []struct {
		name      string
		answerAll bool
	}{{"errors only", false}, {"older server", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f, url := startFake(t)
			f.mu.Lock()
			f.refuseAcks, f.answerAll = true, tc.answerAll
			f.mu.Unlock()
			res := runPlan(t, fakePlan(url, "steady", 2, 3, 1, []Step{{Tag: "50", Rate: 50, Seconds: 1}}), 0, 1)
			if pt := res.Points[0]; pt.SendsOk != pt.SendsDue || pt.DeliveriesReceived != pt.DeliveriesExpected {
				t.Errorf("due %d ok %d expected %d received %d", pt.SendsDue, pt.SendsOk, pt.DeliveriesExpected, pt.DeliveriesReceived)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			answers := f.acksRefused
			if tc.answerAll {
				answers = f.ackFrames
			}
			if f.acksRefused == 0 || f.acksAnsweringAll != 0 || f.ackAnswers != answers {
				t.Errorf("ack frames %d, without answer_errors_only %d, refused %d, answered %d", f.ackFrames,
					f.acksAnsweringAll, f.acksRefused, f.ackAnswers)
			}
			if len(res.Errors) != 1 || res.Errors["ack/RESOURCE_EXHAUSTED"] != int64(f.acksRefused) {
				t.Errorf("errors %v, %d acks refused", res.Errors, f.acksRefused)
			}
		})
	}
}

// Two shards merged count exactly what one process counts.
func TestShardsMergeToOneRun(t *testing.T) {
	_, url := startFake(t)
	p := fakePlan(url, "steady", 4, 3, 2, []Step{{Tag: "100", Rate: 100, Seconds: 1}})
	p.StartAtMs = time.Now().Add(time.Second).UnixMilli()
	done := make(chan *Result, 2)
	for shard := 0; shard < 2; shard++ {
		go func() { done <- runPlan(t, p, shard, 2) }()
	}
	m, err := merge([]*Result{<-done, <-done})
	if err != nil {
		t.Fatal(err)
	}
	pt := m.Points[0]
	if m.Devices != 24 || pt.SendsDue != 100 || pt.SendsOk != 100 || pt.DeliveriesExpected != 500 || pt.DeliveriesReceived != 500 {
		t.Errorf("merged: devices %d due %d ok %d expected %d received %d", m.Devices, pt.SendsDue, pt.SendsOk,
			pt.DeliveriesExpected, pt.DeliveriesReceived)
	}
}

func TestChurnLosesNothing(t *testing.T) {
	_, url := startFake(t)
	p := fakePlan(url, "churn", 5, 3, 2, []Step{{Tag: "100", Rate: 100, Seconds: 2}})
	p.Churn = &Churn{EverySeconds: 0.25, Fraction: 0.3}
	p.AckDelayMs = 100 // acks wait: a drop leaves unacked events to come again
	res := runPlan(t, p, 0, 1)
	c := res.Churn
	if c == nil || c.Reconnects == 0 || c.ExpectedMessages == 0 {
		t.Fatalf("churn %+v", c)
	}
	if c.Lost != 0 || c.DuplicatesOnAStream != 0 || c.FinalDrainFailed != 0 || c.ChatsUnchecked != 0 {
		t.Errorf("churn %+v", c)
	}
	if c.RedeliveredAfterReconnect == 0 {
		t.Errorf("no redelivery after %d reconnects: the check does not see the backlog", c.Reconnects)
	}
	pt := res.Points[0]
	if pt.SendsOk != pt.SendsDue || pt.DeliveriesReceived != pt.DeliveriesExpected {
		t.Errorf("due %d ok %d expected %d received %d", pt.SendsDue, pt.SendsOk, pt.DeliveriesExpected, pt.DeliveriesReceived)
	}
	t.Logf("churn %+v errors %v", *c, res.Errors)
}

func TestDrainCountsTheBacklog(t *testing.T) {
	f, url := startFake(t)
	p := fakePlan(url, "drain", 3, 2, 2, nil)
	// Register the devices (as bench/run.ts does with ListChats), then store the backlog.
	f.mu.Lock()
	for _, d := range p.Devices {
		_, _ = f.device(d.Token)
	}
	f.mu.Unlock()
	for g := 0; g < 3; g++ {
		f.fill(fmt.Sprintf("chat%d", g), 50)
	}
	res := runPlan(t, p, 0, 1)
	if res.Drain.BacklogEvents != 12*50 || res.Drain.ServerBacklogEvents != 12*50 || res.Drain.EventsPerSecond <= 0 {
		t.Errorf("drain %+v", res.Drain)
	}
	if res.Loadgen.Deliveries != 12*50 {
		t.Errorf("deliveries %d", res.Loadgen.Deliveries)
	}
}

// A device that cannot connect is a failed device, and a run where none can is broken.
func TestNoDeviceConnectsIsBroken(t *testing.T) {
	p := fakePlan("http://127.0.0.1:1", "connect", 1, 2, 1, nil)
	p.ConnectTimeoutSeconds = 1
	res, err := newRunner(p, 0, 1, 1).execute(context.Background(), make(chan struct{}))
	if err == nil || res == nil || res.Connect.Failed != 2 {
		t.Fatalf("err %v res %+v", err, res)
	}
}
