package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	chatv1 "github.com/palaver-chat/palaver/gen/go/palaver/chat/v1"
	"github.com/palaver-chat/palaver/gen/go/palaver/chat/v1/chatv1connect"
)

// fakeServer is a small in-memory Palaver for loadgen's tests: the Connect stream life cycle of docs/protocol.md
// (backlog, InboxDrained, live events, a newer stream replaces an older one with ABORTED, a half-close is answered
// and ends the stream, a frame with answer_errors_only is answered only if its command fails), gap-free seqs per chat,
// idempotent sends, inboxes emptied by acks, mark_read (a read receipt per user, a ReceiptUpdate with event_id 0 to
// the chat's other live streams), and GetChat. A token is "user|device|chat": the device joins that chat the first
// time it is seen.
//
// With LOADGEN_FAKE_SERVE=host:port the test binary only serves it (to measure the loadgen binary's own CPU against a
// server that costs little): go test -c -o /tmp/fake.test && LOADGEN_FAKE_SERVE=127.0.0.1:9999 /tmp/fake.test
type fakeServer struct {
	chatv1connect.UnimplementedChatServiceHandler

	mu        sync.Mutex
	nextEvent uint64
	chats     map[string]*fakeChat
	devices   map[string]*fakeDevice
	// What the receipts tests check: acks of event_id 0 (ReceiptUpdate is never stored, so never acked), and
	// mark_reads a device sent with a seq not above its previous one (they should carry the newest seq received).
	zeroAcks, markReadsNotNewer int
	// markReadDelay (ns) holds each mark_read's answer back, like a loaded server, so that devices coalesce.
	markReadDelay atomic.Int64
	// What the acks tests check: ack_events frames received, those without answer_errors_only, those refused, and
	// the ack results sent. They set refuseAcks (every other ack frame is refused with RESOURCE_EXHAUSTED, its ids
	// left in the inbox) and answerAll (a server older than answer_errors_only: it ignores the field).
	ackFrames, acksAnsweringAll, acksRefused, ackAnswers int
	refuseAcks, answerAll                                bool
}

type fakeChat struct {
	lastSeq uint64
	members []*fakeDevice
	sent    map[string]uint64 // device/client_message_id -> seq
	read    map[string]uint64 // user -> read_seq
}

type fakeDevice struct {
	key      string
	user     string
	chat     *fakeChat
	inbox    map[uint64]*chatv1.ConnectResponse
	live     *fakeStream
	lastMark uint64 // the seq of its last mark_read
}

// fakeStream is one open Connect stream's outgoing queue; frames are queued under the server's lock, so a stream
// sees its backlog, InboxDrained and live events in order.
type fakeStream struct {
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*chatv1.ConnectResponse
	ended   bool // half-closed by the client: end once the queue is sent
	aborted error
}

func newFakeServer() *fakeServer {
	return &fakeServer{chats: map[string]*fakeChat{}, devices: map[string]*fakeDevice{}}
}

func (s *fakeStream) push(f *chatv1.ConnectResponse) {
	s.mu.Lock()
	s.queue = append(s.queue, f)
	s.cond.Signal()
	s.mu.Unlock()
}

func (s *fakeStream) abort(err error) {
	s.mu.Lock()
	s.aborted = err
	s.cond.Signal()
	s.mu.Unlock()
}

// device returns the token's device, registering it (caller holds mu).
func (f *fakeServer) device(token string) (*fakeDevice, error) {
	parts := strings.Split(strings.TrimPrefix(token, "Bearer "), "|")
	if len(parts) != 3 {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("bad token"))
	}
	key := parts[0] + "/" + parts[1]
	if d := f.devices[key]; d != nil {
		return d, nil
	}
	c := f.chats[parts[2]]
	if c == nil {
		c = &fakeChat{sent: map[string]uint64{}, read: map[string]uint64{}}
		f.chats[parts[2]] = c
	}
	d := &fakeDevice{key: key, user: parts[0], chat: c, inbox: map[uint64]*chatv1.ConnectResponse{}}
	c.members = append(c.members, d)
	f.devices[key] = d
	return d, nil
}

// store puts a message into the inbox of every member of chat but from, and pushes it to their live streams.
func (f *fakeServer) store(c *fakeChat, chatID string, from *fakeDevice, text, cmid string) uint64 {
	c.lastSeq++
	for _, m := range c.members {
		if m == from {
			continue
		}
		f.nextEvent++
		ev := &chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Event{Event: &chatv1.Event{
			EventId: f.nextEvent, ChatId: chatID,
			Kind: &chatv1.Event_NewMessage{NewMessage: &chatv1.NewMessage{Seq: c.lastSeq, Text: text, ClientMessageId: cmid}},
		}}}
		m.inbox[f.nextEvent] = ev
		if m.live != nil {
			m.live.push(ev)
		}
	}
	return c.lastSeq
}

func (f *fakeServer) Connect(ctx context.Context, stream *connect.BidiStream[chatv1.ConnectRequest, chatv1.ConnectResponse]) error {
	f.mu.Lock()
	d, err := f.device(stream.RequestHeader().Get("Authorization"))
	if err != nil {
		f.mu.Unlock()
		return err
	}
	chatID := strings.Split(stream.RequestHeader().Get("Authorization"), "|")[2]
	s := &fakeStream{}
	s.cond = sync.NewCond(&s.mu)
	if d.live != nil {
		d.live.abort(connect.NewError(connect.CodeAborted, errors.New("replaced by a newer stream")))
	}
	d.live = s
	ids := make([]uint64, 0, len(d.inbox))
	for id := range d.inbox {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		s.queue = append(s.queue, d.inbox[id])
	}
	s.queue = append(s.queue, &chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Event{Event: &chatv1.Event{
		Kind: &chatv1.Event_InboxDrained{InboxDrained: &chatv1.InboxDrained{BacklogEvents: uint64(len(ids))}},
	}}})
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		if d.live == s {
			d.live = nil
		}
		f.mu.Unlock()
	}()

	// Commands, in order; a half-close ends the stream once everything queued is sent.
	go func() {
		for {
			req, err := stream.Receive()
			if err != nil {
				s.mu.Lock()
				s.ended = true
				if !errors.Is(err, io.EOF) && s.aborted == nil {
					s.aborted = err
				}
				s.cond.Signal()
				s.mu.Unlock()
				return
			}
			result := &chatv1.CommandResult{RequestId: req.RequestId}
			if _, ok := req.Command.(*chatv1.ConnectRequest_MarkRead); ok {
				time.Sleep(time.Duration(f.markReadDelay.Load()))
			}
			f.mu.Lock()
			switch c := req.Command.(type) {
			case *chatv1.ConnectRequest_SendMessage:
				key := d.key + "/" + c.SendMessage.ClientMessageId
				seq, ok := d.chat.sent[key]
				if !ok {
					seq = f.store(d.chat, chatID, d, c.SendMessage.Text, c.SendMessage.ClientMessageId)
					d.chat.sent[key] = seq
				}
				result.Outcome = &chatv1.CommandResult_SendMessage{SendMessage: &chatv1.SendMessageResponse{Seq: seq}}
			case *chatv1.ConnectRequest_AckEvents:
				f.ack(d, req, result)
			case *chatv1.ConnectRequest_MarkRead:
				f.markRead(d, chatID, c.MarkRead, result)
			default:
				result.Outcome = &chatv1.CommandResult_Error{Error: &chatv1.CommandError{Code: int32(connect.CodeUnimplemented)}}
			}
			answer := result.GetError() != nil || !req.AnswerErrorsOnly || f.answerAll
			if answer && req.GetAckEvents() != nil {
				f.ackAnswers++
			}
			f.mu.Unlock()
			if answer {
				s.push(&chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Result{Result: result}})
			}
		}
	}()

	var batch []*chatv1.ConnectResponse
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.ended && s.aborted == nil && ctx.Err() == nil {
			s.cond.Wait()
		}
		batch, s.queue = s.queue, batch[:0]
		ended, aborted := s.ended, s.aborted
		s.mu.Unlock()
		if aborted != nil {
			return aborted
		}
		for _, fr := range batch {
			if err := stream.Send(fr); err != nil {
				return err
			}
		}
		if ended && len(batch) == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// ack takes an ack_events frame: it deletes the ids from the device's inbox, or with refuseAcks refuses every other
// frame (caller holds mu).
func (f *fakeServer) ack(d *fakeDevice, req *chatv1.ConnectRequest, result *chatv1.CommandResult) {
	f.ackFrames++
	if !req.AnswerErrorsOnly {
		f.acksAnsweringAll++
	}
	if f.refuseAcks && f.ackFrames%2 == 0 {
		f.acksRefused++
		result.Outcome = &chatv1.CommandResult_Error{Error: &chatv1.CommandError{Code: int32(connect.CodeResourceExhausted), Message: "too many acks"}}
		return
	}
	for _, id := range req.GetAckEvents().EventIds {
		if id == 0 {
			f.zeroAcks++
		}
		delete(d.inbox, id)
	}
	result.Outcome = &chatv1.CommandResult_AckEvents{AckEvents: &chatv1.AckEventsResponse{}}
}

// markRead moves the device's user's read_seq forward and tells the chat's other live streams with a ReceiptUpdate
// (event_id 0, not stored): a simplified MarkRead, enough for loadgen's counting (caller holds mu).
func (f *fakeServer) markRead(d *fakeDevice, chatID string, req *chatv1.MarkReadRequest, result *chatv1.CommandResult) {
	c := d.chat
	if req.ChatId != chatID || req.Seq == 0 || req.Seq > c.lastSeq {
		result.Outcome = &chatv1.CommandResult_Error{Error: &chatv1.CommandError{Code: int32(connect.CodeInvalidArgument), Message: "bad seq"}}
		return
	}
	if req.Seq <= d.lastMark {
		f.markReadsNotNewer++
	}
	d.lastMark = req.Seq
	if req.Seq > c.read[d.user] {
		c.read[d.user] = req.Seq
		update := &chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Event{Event: &chatv1.Event{ChatId: chatID,
			Kind: &chatv1.Event_ReceiptUpdate{ReceiptUpdate: &chatv1.ReceiptUpdate{UserId: d.user, DeliveredSeq: req.Seq, ReadSeq: req.Seq}}}}}
		for _, m := range c.members {
			if m != d && m.live != nil {
				m.live.push(update)
			}
		}
	}
	read := c.read[d.user]
	result.Outcome = &chatv1.CommandResult_MarkRead{MarkRead: &chatv1.MarkReadResponse{
		Receipt: &chatv1.Receipt{UserId: d.user, DeliveredSeq: read, ReadSeq: read}, UnreadCount: c.lastSeq - read}}
}

func (f *fakeServer) GetChat(_ context.Context, req *connect.Request[chatv1.GetChatRequest]) (*connect.Response[chatv1.GetChatResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.chats[req.Msg.ChatId]
	if c == nil {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such chat"))
	}
	return connect.NewResponse(&chatv1.GetChatResponse{Chat: &chatv1.Chat{ChatId: req.Msg.ChatId, LastSeq: c.lastSeq}}), nil
}

// fill stores n messages from a device outside the plan into chat (the drain scenario's backlog).
func (f *fakeServer) fill(chatID string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	from, _ := f.device("filler|f|" + chatID)
	for i := 0; i < n; i++ {
		f.store(from.chat, chatID, from, "1796170000000|fill| backlog", "fill")
	}
}

// serve starts the fake server on addr and returns its URL and a stop function.
func (f *fakeServer) serve(addr string) (string, func(), error) {
	mux := http.NewServeMux()
	mux.Handle(chatv1connect.NewChatServiceHandler(f))
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: protocols}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

func TestMain(m *testing.M) {
	if addr := os.Getenv("LOADGEN_FAKE_SERVE"); addr != "" {
		url, stop, err := newFakeServer().serve(addr)
		if err != nil {
			panic(err)
		}
		os.Stderr.WriteString("fake palaver serving at " + url + "\n")
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		stop()
		return
	}
	logOut = io.Discard
	os.Exit(m.Run())
}
