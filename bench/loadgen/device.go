package main

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	chatv1 "github.com/palaver-chat/palaver/gen/go/palaver/chat/v1"
	"github.com/palaver-chat/palaver/gen/go/palaver/chat/v1/chatv1connect"
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

// device is one phone: a Connect stream at a time (a session), re-opened after a drop. Its goroutine opens the
// stream and waits for its end; the stream's frames are handled by its connection's reader (h2conn), and whoever
// has something to send writes it: the reader (acks with ackDelayMs 0, messages freed by an answer), the send clock
// (due messages), the ack clock (acks that are due), close (the last acks and the half-close).
type device struct {
	r      *runner
	index  int // in the plan
	token  string
	chatID string
	sends  bool
	link   *link
	done   chan struct{} // closed when run returns

	mu        sync.Mutex // guards the fields below, shared by the reader, the send clock, the ack clock and close
	sess      *session
	queue     []outgoing // due, not yet written on this session
	inflight  []outgoing // written, unanswered
	unacked   []uint64   // handled, not yet acked
	ackQueued bool       // the ack clock (or, ackDelayMs 0, the reader's idle pass) will ack what is unacked
	closing   bool       // end: ack what was handled, half-close, no new session
	nextAck   int64
	closed    chan struct{} // closed with closing: cuts a reconnect's backoff short
	enc       requestEncoder

	// Marking read (plan.markRead): at most one mark_read unanswered, carrying the newest seq received.
	readWant     uint64 // the newest seq of the chat received: what the chat should be marked read up to
	readSent     uint64 // the seq of the last mark_read written (on this session, or answered on an earlier one)
	readDone     uint64 // the highest seq a mark_read was answered for without an error
	readInFlight bool   // a mark_read is unanswered on this session
	readReq      int64  // its number ("m<n>")
	nextMark     int64

	// Read by the runner while the device runs.
	sessions      atomic.Int64 // sessions started
	drainedIn     atomic.Int64 // the number of the last session that got InboxDrained
	live          atomic.Bool  // drained at least once
	firstOpenedAt time.Time

	// The current stream's reader's own (one session at a time), read by the runner once the device has ended.
	f          frame  // the frame being handled: its buffers are reused, the hot path does not allocate
	seen       seqSet // seqs of this device's chat received on any session
	streamSeen seqSet // ... on the current session
	own        seqSet // seqs of the messages this device sent (from their results)
	otherSeen  map[uint64]struct{}
}

// session is one Connect stream of a device.
type session struct {
	num        int64
	stream     *grpcStream
	dropped    atomic.Bool // the end was asked for (churn drop): reconnect at once, not an error
	drained    bool        // the reader's
	halfClosed bool        // under device.mu
}

// enqueue hands a due message to the device (the send clock calls it) and writes it if the window allows.
func (d *device) enqueue(o outgoing) {
	d.mu.Lock()
	d.queue = append(d.queue, o)
	if s := d.sess; s != nil && len(d.inflight) < d.r.window {
		d.pumpLocked(s)
		s.stream.c.flush()
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

// close asks the device to end: it acks what was handled and half-closes; the server answers what it was sent and
// ends the stream.
func (d *device) close() {
	d.mu.Lock()
	if !d.closing {
		d.closing = true
		close(d.closed)
	}
	if s := d.sess; s != nil && !s.halfClosed {
		d.writeAcksLocked(s)
		d.markReadLocked(s) // the newest seq, unless one is still unanswered
		s.halfClosed = true
		_ = s.stream.write(nil, true)
		s.stream.c.flush()
	}
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
		if err != nil {
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

// session opens a stream on the link's connection, waits for its end and returns how it ended (nil: the device is
// closing).
func (d *device) session(ctx context.Context) (*session, error) {
	s := &session{}
	if d.firstOpenedAt.IsZero() {
		d.firstOpenedAt = time.Now()
	}
	l := d.link
	var c *h2conn
	for {
		var err error
		if c, err = l.conn(ctx); err != nil {
			return s, err
		}
		// The link's lock is held while the session is registered, so a drop either marks it or replaced l.cur
		// before (then dial again).
		l.mu.Lock()
		if l.cur == c {
			break
		}
		l.mu.Unlock()
	}
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		l.mu.Unlock()
		return nil, nil
	}
	d.streamSeen.clear() // the last session's reader is done with it
	s.num = d.sessions.Add(1)
	stream, err := c.open(chatv1connect.ChatServiceConnectProcedure, d.token, func(msg []byte) error { return d.handle(s, msg) })
	if err != nil {
		d.mu.Unlock()
		l.mu.Unlock()
		return s, err
	}
	s.stream = stream
	d.sess = s
	// Sends left unanswered by the last session go first, with the same client_message_id (idempotent); acks left
	// by it go now (event ids are the device's, not the stream's).
	if len(d.inflight) > 0 {
		d.queue = append(d.inflight, d.queue...)
		d.inflight = nil
	}
	d.writeAcksLocked(s)
	// A mark_read the last session left unanswered may not have been carried out: the newest seq goes again.
	d.readInFlight, d.readSent = false, d.readDone
	d.markReadLocked(s)
	d.pumpLocked(s)
	c.flush()
	d.mu.Unlock()
	l.mu.Unlock()

	select {
	case <-stream.done:
	case <-ctx.Done():
		c.close(connect.NewError(connect.CodeCanceled, ctx.Err()))
		<-stream.done
	}
	d.mu.Lock()
	d.sess = nil
	d.mu.Unlock()
	return s, stream.err
}

// handle is the stream's message handler, in its connection's reader goroutine.
func (d *device) handle(s *session, msg []byte) error {
	f := &d.f
	if err := f.decode(msg); err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	now := time.Now()
	switch f.kind {
	case frameEvent:
		d.onEvent(s, f, now)
	case frameResult:
		d.onResult(s, f, now)
	}
	return nil
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
	case eventReceiptUpdate:
		r.receiptUpdates.Add(1)
		if st := r.stepNow(); st != nil {
			st.receiptUpdates.Add(1)
		}
	case eventTypingUpdate:
		r.typingUpdates.Add(1)
	}
	if f.eventKind == eventReceiptUpdate || f.eventKind == eventTypingUpdate {
		if f.eventID != 0 {
			r.errs.add("event/STORED_SIGNAL", 1) // docs/protocol.md: they are never stored, their event_id is 0
		}
		return // not stored: never acked
	}
	if f.eventID == 0 {
		return // InboxDrained and Resync are not stored: never acked
	}
	if f.eventKind != eventNewMessage && !d.live.Load() {
		r.backlogEvents.Add(1) // a message counts once, in onMessage
	}
	d.mu.Lock()
	if r.markRead && f.eventKind == eventNewMessage && f.seq > d.readWant && d.inChat(f.chatID) {
		d.readWant = f.seq
		d.markReadLocked(s) // flushed when the reader is idle
	}
	d.unacked = append(d.unacked, f.eventID)
	switch {
	case len(d.unacked) >= maxAckBatch:
		d.writeAcksLocked(s) // a full batch goes at once (flushed when the reader is idle)
	case !d.ackQueued:
		d.ackQueued = true
		if r.ackDelay > 0 {
			r.acks.add(d, now.Add(r.ackDelay))
		} else {
			s.stream.c.later(d)
		}
	}
	d.mu.Unlock()
}

// inChat says whether chatID (an event's) is the device's chat.
func (d *device) inChat(chatID []byte) bool {
	return string(chatID) == d.chatID || strings.EqualFold(string(chatID), d.chatID)
}

// onMessage dedupes by seq (the device is in one chat, where seqs are unique: the same as deduping by event_id,
// without a map) and records the first arrival's latency against the step that sent it.
func (d *device) onMessage(f *frame, now time.Time) {
	r := d.r
	if !d.inChat(f.chatID) {
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

func (d *device) onResult(s *session, f *frame, now time.Time) {
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
			d.pumpLocked(s) // flushed when the reader is idle
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
		// Acks go with answer_errors_only, so nothing waits for their answers: a refusal counts as an error, and a
		// success answered by a server older than that field needs nothing.
		if f.hasError {
			r.errs.add("ack/"+codeName(connect.Code(f.errorCode)), 1)
		}
	case 'm':
		d.onMarkRead(s, f, requestNumber(id[1:]))
	}
}

// requestNumber reads the number of a request id after its letter (-1 if it is not one).
func requestNumber(digits []byte) int64 {
	var n int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// onMarkRead takes a mark_read's answer: an error counts as one (by code, like failed sends), an answer whose
// receipt is behind the seq asked for counts as markRead/BEHIND (read_seq only moves forward, so it is at least the
// seq asked for), and the newest seq received since goes next.
func (d *device) onMarkRead(s *session, f *frame, n int64) {
	r := d.r
	st := r.stepNow()
	d.mu.Lock()
	asked := uint64(0)
	if d.readInFlight && n == d.readReq {
		asked = d.readSent
		d.readInFlight = false
		if !f.hasError {
			d.readDone = max(d.readDone, asked)
		}
		d.markReadLocked(s) // flushed when the reader is idle
	}
	d.mu.Unlock()
	if f.hasError {
		code := codeName(connect.Code(f.errorCode))
		r.markReadErrs.add(code, 1)
		r.errs.add("markRead/"+code, 1)
		if st != nil {
			st.addMarkReadError(code)
		}
		return
	}
	r.markReadsOk.Add(1)
	if st != nil {
		st.markReadsOk.Add(1)
	}
	switch {
	case !f.markRead:
		r.errs.add("markRead/NO_RECEIPT", 1) // answered, but not with a MarkReadResponse
	case f.markReadSeq < asked:
		r.errs.add("markRead/BEHIND", 1)
	}
}

// markReadLocked writes a mark_read for the newest seq received, unless one is unanswered (it goes when the answer
// comes) or that seq was already sent. The caller flushes.
func (d *device) markReadLocked(s *session) {
	if d.readInFlight || d.readWant <= d.readSent || s.halfClosed {
		return
	}
	d.nextMark++
	if s.stream.write(d.enc.markRead(d.nextMark, d.chatID, d.readWant), false) != nil {
		return // the stream has ended: the next session sends it
	}
	d.readInFlight, d.readSent, d.readReq = true, d.readWant, d.nextMark
	d.r.markReadsSent.Add(1)
	if st := d.r.stepNow(); st != nil {
		st.markReadsSent.Add(1)
	}
}

// ackDue acks what is unacked: the ack clock calls it when the first of them is due, and with ackDelayMs 0 the
// reader does (idle) once it has handled what it read. It returns the connection to flush (nil: nothing written).
func (d *device) ackDue() *h2conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ackQueued = false
	s := d.sess
	if s == nil || len(d.unacked) == 0 {
		return nil // left for the next session, which acks them when it opens
	}
	d.writeAcksLocked(s)
	return s.stream.c
}

// idle is ackDue for the reader, which flushes after its idlers.
func (d *device) idle() { d.ackDue() }

// writeAcksLocked writes every unacked id in ack_events frames of at most maxAckBatch ids; what cannot be written
// (the stream has ended) stays for the next session. The caller flushes.
func (d *device) writeAcksLocked(s *session) {
	for len(d.unacked) > 0 && !s.halfClosed {
		n := min(len(d.unacked), maxAckBatch)
		d.nextAck++
		if s.stream.write(d.enc.acks(d.nextAck, d.unacked[:n]), false) != nil {
			return
		}
		d.unacked = d.unacked[:copy(d.unacked, d.unacked[n:])]
	}
}

// pumpLocked writes due messages while fewer than inFlightPerSender are unanswered. The caller flushes.
func (d *device) pumpLocked(s *session) {
	r := d.r
	for !d.closing && len(d.queue) > 0 && len(d.inflight) < r.window {
		o := d.queue[0]
		if s.stream.write(d.enc.send(d.chatID, r.clientMessageID(o.k), o.k, o.due, r.plan.Steps[o.step].Tag), false) != nil {
			return // the stream has ended: the next session sends it
		}
		d.queue = d.queue[1:]
		if o.sent {
			r.resent.Add(1)
		}
		o.sent = true
		d.inflight = append(d.inflight, o)
	}
}

// codeName is a gRPC code as README.md spells it: RESOURCE_EXHAUSTED.
func codeName(c connect.Code) string {
	if c == 0 {
		return "OK"
	}
	return strings.ToUpper(c.String())
}
