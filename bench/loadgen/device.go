package main

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	chatv1 "github.com/palaver-chat/palaver/gen/go/palaver/chat/v1"
)

// maxAckBatch is the most event ids one ack_events frame may carry (docs/protocol.md).
const maxAckBatch = 1000

// outgoing is one message of the send plan: its number in this shard (request and client message ids derive from
// it), its due time (unix µs: latencies count from it) and its step.
type outgoing struct {
	k    int64
	due  int64
	step int32
	sent bool // written at least once: a later write is a resend after a reconnect
}

// device is one phone: a Connect stream at a time (a session), re-opened after a drop. Its goroutine reads the
// stream; a writer goroutine per session owns the stream's send side (acks and messages), so a slow stream never
// holds up the send clock or another device.
type device struct {
	r      *runner
	index  int // in the plan
	token  string
	chatID string
	sends  bool
	link   *link
	done   chan struct{} // closed when run returns

	mu       sync.Mutex // guards the fields below, shared by the reader, the writer and the send clock
	sess     *session
	queue    []outgoing // due, not yet written on this session
	inflight []outgoing // written, unanswered
	unacked  []uint64   // handled, not yet acked
	ackDue   time.Time
	closing  bool // end: ack what was handled, half-close, no new session
	nextAck  int64
	closed   chan struct{} // closed with closing: cuts a reconnect's backoff short

	// Read by the runner while the device runs.
	sessions      atomic.Int64 // sessions started
	drainedIn     atomic.Int64 // the number of the last session that got InboxDrained
	live          atomic.Bool  // drained at least once
	firstOpenedAt time.Time

	// The reader's own (the device goroutine), read by the runner once the device has ended.
	seen       seqSet // seqs of this device's chat received on any session
	streamSeen seqSet // ... on the current session
	own        seqSet // seqs of the messages this device sent (from their results)
	otherSeen  map[uint64]struct{}
}

// session is one Connect stream of a device.
type session struct {
	num        int64
	conn       connect.StreamingClientConn
	opened     time.Time
	wake       chan struct{}
	ackTimer   *time.Timer // armed by the reader when an event waits for its ack
	readerDone chan struct{}
	dropped    atomic.Bool // the end was asked for (churn drop): reconnect at once, not an error
	drained    bool
}

func (d *device) wakeWriter() {
	if s := d.sess; s != nil {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// enqueue hands a due message to the device (the send clock calls it).
func (d *device) enqueue(o outgoing) {
	d.mu.Lock()
	d.queue = append(d.queue, o)
	if len(d.inflight) < d.r.window {
		d.wakeWriter()
	}
	d.mu.Unlock()
}

// markDropped flags the current session's end as asked for; link.drop calls it before closing the connection.
func (d *device) markDropped() {
	d.mu.Lock()
	if d.sess != nil {
		d.sess.dropped.Store(true)
	}
	d.mu.Unlock()
}

// close asks the device to end: the writer acks what was handled and half-closes; the server answers what it was
// sent and ends the stream.
func (d *device) close() {
	d.mu.Lock()
	if !d.closing {
		d.closing = true
		close(d.closed)
	}
	d.wakeWriter()
	d.mu.Unlock()
}

func (d *device) isClosing() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closing
}

// run keeps a session open until the device is closed or ctx ends: after a drop it reconnects at once, after an
// error with backoff (0.5 s doubling to 5 s: the run is short), after ABORTED never (another instance is live).
func (d *device) run(ctx context.Context) {
	defer close(d.done)
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil && !d.isClosing() {
		s, err := d.session(ctx)
		if s == nil || ctx.Err() != nil || d.isClosing() {
			return
		}
		if s.dropped.Load() {
			d.r.reconnects.Add(1)
			backoff = 500 * time.Millisecond
			continue
		}
		kind := "stream/"
		if !d.live.Load() {
			kind = "connect/"
		}
		code := "OK" // the server ended the stream without an error: not asked for either
		if err != nil && !errors.Is(err, io.EOF) {
			code = codeName(connect.CodeOf(err))
		}
		d.r.errs.add(kind+code, 1)
		if connect.CodeOf(err) == connect.CodeAborted {
			return
		}
		if s.drained {
			backoff = 500 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-d.closed:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// session opens a stream, reads it to its end and returns how it ended (nil: the device is closing).
func (d *device) session(ctx context.Context) (*session, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &session{wake: make(chan struct{}, 1), readerDone: make(chan struct{}), ackTimer: time.NewTimer(time.Hour)}
	s.ackTimer.Stop()
	// The link's lock is held while the session is registered, so a drop either marks it or comes after its client.
	d.link.mu.Lock()
	client := d.link.client
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		d.link.mu.Unlock()
		return nil, nil
	}
	s.num = d.sessions.Add(1)
	d.sess = s
	// Sends left unanswered by the last session go first, with the same client_message_id (idempotent).
	if len(d.inflight) > 0 {
		d.queue = append(d.inflight, d.queue...)
		d.inflight = nil
	}
	d.mu.Unlock()
	d.link.mu.Unlock()

	s.opened = time.Now()
	if d.firstOpenedAt.IsZero() {
		d.firstOpenedAt = s.opened
	}
	d.streamSeen.clear()
	stream := client.Connect(sctx)
	stream.RequestHeader().Set("Authorization", "Bearer "+d.token)
	s.conn, _ = stream.Conn()
	writerDone := make(chan struct{})
	go d.writer(s, writerDone)
	err := d.read(s)
	close(s.readerDone)
	cancel()
	<-writerDone
	_ = s.conn.CloseResponse()
	d.mu.Lock()
	d.sess = nil
	d.mu.Unlock()
	return s, err
}

// read handles frames until the stream ends. The frame and its buffers are reused: the hot path does not allocate.
func (d *device) read(s *session) error {
	var f frame
	for {
		f.reset() // an empty message leaves the frame as it is
		if err := s.conn.Receive(&f); err != nil {
			return err
		}
		now := time.Now()
		switch f.kind {
		case frameEvent:
			d.onEvent(s, &f, now)
		case frameResult:
			d.onResult(&f, now)
		}
	}
}

func (d *device) onEvent(s *session, f *frame, now time.Time) {
	r := d.r
	switch f.eventKind {
	case eventNewMessage:
		d.onMessage(f, now)
	case eventInboxDrained:
		if !s.drained {
			s.drained = true
			d.drainedIn.Store(s.num)
			r.serverBacklog.Add(int64(f.backlogEvents))
			if d.live.CompareAndSwap(false, true) {
				r.onLive(d, now)
			}
		}
	case eventResync:
		r.errs.add("resync/"+chatv1.ResyncReason(f.resyncReason).String(), 1)
	}
	if f.eventID == 0 {
		return // InboxDrained and Resync are not stored: never acked
	}
	if f.eventKind != eventNewMessage && !d.live.Load() {
		r.backlogEvents.Add(1) // a message counts once, in onMessage
	}
	d.mu.Lock()
	d.unacked = append(d.unacked, f.eventID)
	if len(d.unacked) == 1 {
		d.ackDue = now.Add(r.ackDelay)
		if r.ackDelay > 0 {
			s.ackTimer.Reset(r.ackDelay) // wakes the writer when the ack is due, not now
		} else {
			d.wakeWriter()
		}
	} else if len(d.unacked) == maxAckBatch {
		d.wakeWriter()
	}
	d.mu.Unlock()
}

// onMessage dedupes by seq (the device is in one chat, where seqs are unique: the same as deduping by event_id,
// without a map) and records the first arrival's latency against the step that sent it.
func (d *device) onMessage(f *frame, now time.Time) {
	r := d.r
	if string(f.chatID) != d.chatID && !strings.EqualFold(string(f.chatID), d.chatID) {
		// Another chat's message (not in bench plans): dedupe by event_id.
		if d.otherSeen == nil {
			d.otherSeen = map[uint64]struct{}{}
		}
		if _, ok := d.otherSeen[f.eventID]; !ok {
			d.otherSeen[f.eventID] = struct{}{}
			d.delivered()
		}
		return
	}
	again := d.streamSeen.add(f.seq)
	seenBefore := d.seen.add(f.seq)
	if again {
		r.dupOnStream.Add(1)
		if _, tag, ok := parseText(f.text); ok {
			if i, ok := r.tagIndex[string(tag)]; ok {
				r.steps[i].addDuplicate()
			}
		}
		return
	}
	if seenBefore {
		r.redelivered.Add(1)
		return
	}
	d.delivered()
	due, tag, ok := parseText(f.text)
	if !ok {
		return
	}
	// A message due before this run's clock started is not this run's (an old backlog with the same tag).
	if i, ok := r.tagIndex[string(tag)]; ok && due >= r.startAt.Load() {
		r.steps[i].addDelivery(now.UnixMicro()-due, due)
	}
}

// delivered counts a message's first arrival on this device. Before the device's first InboxDrained it is backlog,
// counted once even when a failed first stream left part of the backlog to the next one.
func (d *device) delivered() {
	d.r.deliveries.Add(1)
	if !d.live.Load() {
		d.r.backlogEvents.Add(1)
	}
}

func (d *device) onResult(f *frame, now time.Time) {
	id := f.requestID
	if len(id) < 2 {
		return
	}
	r := d.r
	switch id[0] {
	case 's':
		var k int64
		for _, c := range id[1:] {
			if c < '0' || c > '9' {
				return
			}
			k = k*10 + int64(c-'0')
		}
		d.mu.Lock()
		var o outgoing
		found := false
		for i := range d.inflight {
			if d.inflight[i].k == k {
				o, found = d.inflight[i], true
				d.inflight = append(d.inflight[:i], d.inflight[i+1:]...)
				break
			}
		}
		if found && len(d.queue) > 0 {
			d.wakeWriter()
		}
		d.mu.Unlock()
		if !found {
			return
		}
		st := r.steps[o.step]
		if f.hasError {
			code := codeName(connect.Code(f.errorCode))
			st.addSendError(code)
			r.errs.add("send/"+code, 1)
			return
		}
		d.own.add(f.sendSeq)
		st.addSendOk(now.UnixMicro()-o.due, o.due)
	case 'a':
		if f.hasError {
			r.errs.add("ack/"+codeName(connect.Code(f.errorCode)), 1)
		}
	}
}

// writer owns the session's send side: it sends the headers, then acks (at most ackDelay after the first unacked
// event was handled, at once when a batch is full) and due messages (while fewer than inFlightPerSender are
// unanswered). On close it acks what is left and half-closes.
func (d *device) writer(s *session, done chan struct{}) {
	defer close(done)
	// Send the headers now: the server starts the backlog as soon as the stream opens.
	if err := s.conn.Send(nil); err != nil {
		return // the reader gets the stream's error
	}
	r := d.r
	timer := s.ackTimer
	var (
		ids   []uint64
		batch []outgoing
		text  = make([]byte, 0, 128)
		idBuf = make([]byte, 0, 24)
	)
	ack := &chatv1.AckEventsRequest{}
	ackFrame := &chatv1.ConnectRequest{Command: &chatv1.ConnectRequest_AckEvents{AckEvents: ack}}
	msg := &chatv1.SendMessageRequest{ChatId: d.chatID}
	sendFrame := &chatv1.ConnectRequest{Command: &chatv1.ConnectRequest_SendMessage{SendMessage: msg}}
	select { // a first pass: messages may have waited for this session
	case s.wake <- struct{}{}:
	default:
	}
	for {
		select {
		case <-s.wake:
		case <-timer.C:
		case <-s.readerDone:
			return
		}
		for {
			d.mu.Lock()
			now := time.Now()
			closing := d.closing
			ids = ids[:0]
			if n := len(d.unacked); n > 0 && (closing || n >= maxAckBatch || !now.Before(d.ackDue)) {
				n = min(n, maxAckBatch)
				ids = append(ids, d.unacked[:n]...)
				d.unacked = d.unacked[:copy(d.unacked, d.unacked[n:])]
				d.ackDue = now // what is left is overdue too
			}
			batch = batch[:0]
			if !closing {
				for len(d.queue) > 0 && len(d.inflight) < r.window {
					o := d.queue[0]
					d.queue = d.queue[1:]
					if o.sent {
						r.resent.Add(1)
					}
					o.sent = true
					d.inflight = append(d.inflight, o)
					batch = append(batch, o)
				}
			}
			more := len(d.unacked) > 0 && (closing || len(d.unacked) >= maxAckBatch)
			wait := time.Duration(-1)
			if len(d.unacked) > 0 {
				wait = max(0, d.ackDue.Sub(now))
			}
			if len(ids) > 0 {
				d.nextAck++
			}
			ackNum := d.nextAck
			d.mu.Unlock()

			if len(ids) > 0 {
				ackFrame.RequestId = "a" + strconv.FormatInt(ackNum, 10)
				ack.EventIds = ids
				if s.conn.Send(ackFrame) != nil {
					return
				}
			}
			for _, o := range batch {
				idBuf = strconv.AppendInt(append(idBuf[:0], 's'), o.k, 10)
				sendFrame.RequestId = string(idBuf)
				msg.ClientMessageId = r.clientMessageID(o.k)
				msg.Text = messageText(text, o.due, r.plan.Steps[o.step].Tag)
				if s.conn.Send(sendFrame) != nil {
					return
				}
			}
			if closing && !more {
				_ = s.conn.CloseRequest()
				return
			}
			if more || len(ids) == maxAckBatch {
				continue
			}
			if wait >= 0 {
				timer.Reset(wait)
			}
			break
		}
	}
}

// codeName is a gRPC code as README.md spells it: RESOURCE_EXHAUSTED.
func codeName(c connect.Code) string {
	if c == 0 {
		return "OK"
	}
	return strings.ToUpper(c.String())
}
