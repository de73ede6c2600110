package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/palaver-chat/palaver/gen/go/palaver/chat/v1/chatv1connect"
	"golang.org/x/net/http2"
)

// The new client's branches, against real servers: x/net's http2.Server (framing, resets, GOAWAY, flow control
// as a server does them) and the fake Palaver on connect-go.

const connectPath = chatv1connect.ChatServiceConnectProcedure

// serveH2 serves h on a fresh listener with h2s (h2c, prior knowledge) and returns the address and the
// http.Server whose Shutdown sends GOAWAY on the connections open at that time.
func serveH2(t *testing.T, h2s *http2.Server, h http.Handler) (string, *http.Server) {
	t.Helper()
	hs := &http.Server{Handler: h}
	if err := http2.ConfigureServer(hs, h2s); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go h2s.ServeConn(nc, &http2.ServeConnOpts{BaseConfig: hs, Handler: h})
		}
	}()
	return ln.Addr().String(), hs
}

func dialT(t *testing.T, addr string) *h2conn {
	t.Helper()
	c, err := dialH2(context.Background(), addr, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.close(errConnClosed) })
	return c
}

// collect returns a handler that decodes each ConnectResponse into a line on ch: "drained", "event <seq>",
// "result <request id> <error code>".
func collect(ch chan string) func([]byte) error {
	var f frame
	return func(msg []byte) error {
		if err := f.decode(msg); err != nil {
			return err
		}
		switch {
		case f.kind == frameEvent && f.eventKind == eventInboxDrained:
			ch <- "drained"
		case f.kind == frameEvent:
			ch <- fmt.Sprintf("event %d", f.seq)
		case f.kind == frameResult:
			ch <- fmt.Sprintf("result %s %d", f.requestID, f.errorCode)
		}
		return nil
	}
}

func expect(t *testing.T, ch chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no %q within 5 s", want)
	}
}

func ended(t *testing.T, s *grpcStream) error {
	t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not end within 5 s")
		return nil
	}
}

func grpcMsg(b []byte) []byte { return append([]byte{0, 0, 0, 0, byte(len(b))}, b...) }

// Messages split across DATA frames (the 5-byte prefix too), several in one frame, an empty one, in order.
func TestMessagesAcrossAndWithinDataFrames(t *testing.T) {
	msgs := [][]byte{[]byte("first message"), []byte("second"), {}, []byte("fourth, in the same frame"), []byte("fifth")}
	var wire []byte
	for _, m := range msgs {
		wire = append(wire, grpcMsg(m)...)
	}
	// Cut points: inside the first prefix, inside the first body, inside the second prefix; the rest in one frame.
	cuts := []int{3, 10, len(grpcMsg(msgs[0])) + 2, len(wire)}
	addr, _ := serveH2(t, &http2.Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(200)
		from := 0
		for _, to := range cuts {
			_, _ = w.Write(wire[from:to])
			w.(http.Flusher).Flush() // one DATA frame each
			from = to
		}
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
	}))
	c := dialT(t, addr)
	var got [][]byte
	s, err := c.open("/x", "t", func(b []byte) error { got = append(got, bytes.Clone(b)); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := ended(t, s); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(msgs) {
		t.Fatalf("%d messages, want %d: %q", len(got), len(msgs), got)
	}
	for i := range msgs {
		if !bytes.Equal(got[i], msgs[i]) {
			t.Errorf("message %d: %q, want %q", i, got[i], msgs[i])
		}
	}
}

// A compressed message is refused (we offer identity only).
func TestCompressedMessageFailsTheStream(t *testing.T) {
	addr, _ := serveH2(t, &http2.Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		_, _ = w.Write([]byte{1, 0, 0, 0, 1, 'x'})
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	s, err := dialT(t, addr).open("/x", "t", func([]byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := ended(t, s); connect.CodeOf(err) != connect.CodeInternal || !strings.Contains(err.Error(), "compressed") {
		t.Fatalf("err %v", err)
	}
}

// A bad token gets a Trailers-Only UNAUTHENTICATED from connect-go.
func TestTrailersOnlyError(t *testing.T) {
	_, url := startFake(t)
	c := dialT(t, strings.TrimPrefix(url, "http://"))
	s, err := c.open(connectPath, "not-a-token", collect(make(chan string, 10)))
	if err != nil {
		t.Fatal(err)
	}
	if err := ended(t, s); connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "bad token") {
		t.Fatalf("err %v", err)
	}
}

// A stream the server resets ends with the mapped code; the connection goes on.
func TestResetStream(t *testing.T) {
	addr, _ := serveH2(t, &http2.Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		if r.URL.Path == "/reset" {
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // RST_STREAM INTERNAL_ERROR
		}
		w.Header().Set("Grpc-Status", "5")
		w.Header().Set("Grpc-Message", "no such thing: 100%25")
		w.WriteHeader(200)
	}))
	c := dialT(t, addr)
	s, err := c.open("/reset", "t", func([]byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := ended(t, s); connect.CodeOf(err) != connect.CodeInternal || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("err %v", err)
	}
	s, err = c.open("/other", "t", func([]byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := ended(t, s); connect.CodeOf(err) != connect.CodeNotFound || !strings.HasSuffix(err.Error(), "no such thing: 100%") {
		t.Fatalf("err %v", err)
	}
}

// A newer stream of the same device ends the older one with ABORTED (the fake server, as Palaver does).
func TestNewerStreamAborts(t *testing.T) {
	_, url := startFake(t)
	c := dialT(t, strings.TrimPrefix(url, "http://"))
	ch1, ch2 := make(chan string, 10), make(chan string, 10)
	s1, err := c.open(connectPath, "u|d|chat", collect(ch1))
	if err != nil {
		t.Fatal(err)
	}
	expect(t, ch1, "drained")
	if _, err := c.open(connectPath, "u|d|chat", collect(ch2)); err != nil {
		t.Fatal(err)
	}
	expect(t, ch2, "drained")
	if err := ended(t, s1); connect.CodeOf(err) != connect.CodeAborted {
		t.Fatalf("err %v", err)
	}
}

// After GOAWAY no stream opens on the connection: the link dials a fresh one, and the stream already open runs
// to its end there.
func TestGoAwayThenReconnect(t *testing.T) {
	f := newFakeServer()
	mux := http.NewServeMux()
	mux.Handle(chatv1connect.NewChatServiceHandler(f))
	addr, hs := serveH2(t, &http2.Server{}, mux)
	l := newLink("http://" + addr)
	t.Cleanup(func() { l.close(errConnClosed) })
	c1, err := l.conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ch1 := make(chan string, 10)
	s1, err := c1.open(connectPath, "u1|d|chat", collect(ch1))
	if err != nil {
		t.Fatal(err)
	}
	expect(t, ch1, "drained")

	go func() { _ = hs.Shutdown(context.Background()) }() // GOAWAY on every open connection
	for deadline := time.Now().Add(5 * time.Second); c1.usable(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no GOAWAY within 5 s")
		}
	}
	if _, err := c1.open(connectPath, "u2|d|chat", collect(make(chan string, 10))); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("a stream opened after GOAWAY: %v", err)
	}
	c2, err := l.conn(context.Background())
	if err != nil || c2 == c1 {
		t.Fatalf("no fresh connection: %v", err)
	}
	ch2 := make(chan string, 10)
	if _, err := c2.open(connectPath, "u2|d|chat", collect(ch2)); err != nil {
		t.Fatal(err)
	}
	expect(t, ch2, "drained")

	// The old stream still works: u1 sends, u2 gets it on the new connection; then u1 half-closes and its
	// connection, now empty, closes.
	var enc requestEncoder
	if err := s1.write(enc.send("chat", "m1", 1, 1796170000000000, "t"), false); err != nil {
		t.Fatal(err)
	}
	c1.flush()
	expect(t, ch1, "result s1 0")
	expect(t, ch2, "event 1")
	if err := s1.write(nil, true); err != nil {
		t.Fatal(err)
	}
	c1.flush()
	if err := ended(t, s1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c1.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the old connection stayed open")
	}
}

// With a send window smaller than what is written, bytes wait for WINDOW_UPDATE and all arrive in order; the
// server would reset the stream (FLOW_CONTROL_ERROR) if we wrote beyond its window.
func TestFlowControlSmallPeerWindow(t *testing.T) {
	f := newFakeServer()
	mux := http.NewServeMux()
	mux.Handle(chatv1connect.NewChatServiceHandler(f))
	addr, _ := serveH2(t, &http2.Server{MaxUploadBufferPerStream: 256}, mux)
	c := dialT(t, addr)
	ch := make(chan string, 100)
	s, err := c.open(connectPath, "u|d|chat", collect(ch))
	if err != nil {
		t.Fatal(err)
	}
	expect(t, ch, "drained") // the server's SETTINGS (its window) came first
	var enc requestEncoder
	const n = 40 // ~150 bytes each: 6 KB against a 256-byte window
	for k := int64(1); k <= n; k++ {
		if err := s.write(enc.send("chat", fmt.Sprint("m", k), k, 1796170000000000, "t"), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.write(nil, true); err != nil {
		t.Fatal(err)
	}
	c.flush()
	for k := 1; k <= n; k++ {
		expect(t, ch, fmt.Sprintf("result s%d 0", k))
	}
	if err := ended(t, s); err != nil {
		t.Fatal(err)
	}
	if c.stalls.Load() == 0 {
		t.Error("nothing waited for a window: the test did not test flow control")
	}
}

// Devices sharing connections, acks as soon as the reader is idle (ackDelayMs 0), and a dropped connection: all
// delivered, nothing counted as an error.
func TestSharedConnectionsAndImmediateAcks(t *testing.T) {
	_, url := startFake(t)
	p := fakePlan(url, "churn", 4, 3, 2, []Step{{Tag: "100", Rate: 100, Seconds: 1.5}})
	p.AckDelayMs = 0
	p.Churn = &Churn{EverySeconds: 0.5, Fraction: 0.5}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRunner(p, 0, 1, 8)
	if len(r.links) != 3 {
		t.Fatalf("%d links for 24 devices, 8 per connection", len(r.links))
	}
	res, err := r.execute(ctx, make(chan struct{}))
	if err != nil {
		t.Fatal(err)
	}
	pt := res.Points[0]
	if pt.SendsOk != pt.SendsDue || pt.DeliveriesReceived != pt.DeliveriesExpected || len(res.Errors) != 0 {
		t.Errorf("due %d ok %d expected %d received %d errors %v", pt.SendsDue, pt.SendsOk, pt.DeliveriesExpected,
			pt.DeliveriesReceived, res.Errors)
	}
	if c := res.Churn; c.Reconnects == 0 || c.Lost != 0 || c.DuplicatesOnAStream != 0 {
		t.Errorf("churn %+v", *c)
	}
}
