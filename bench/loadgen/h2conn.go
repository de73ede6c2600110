package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Receive windows we advertise: large, so the server never waits for us and our WINDOW_UPDATEs are rare (one per
// half window consumed).
const (
	recvStreamWindow = 4 << 20
	recvConnWindow   = 16 << 20
	readBufSize      = 16 << 10 // one read(2) takes many small frames
	writeBufSize     = 4 << 10
	maxMessageBytes  = 4 << 20
)

// idler is work the reader does once it has handled every frame already read (acks with ackDelayMs 0).
type idler interface{ idle() }

// h2conn is one HTTP/2 client connection (h2c, prior knowledge) carrying gRPC streams. It replaces connect-go over
// http2.Transport for the Connect streams because there every delivered event crossed goroutines several times
// (transport read loop -> stream reader; writer -> io.Pipe -> request-body goroutine for every ack), and those
// hand-offs, not the protocol, were most of loadgen's CPU. Here one goroutine reads the connection and calls each
// stream's handler inline; whoever has something to send (that reader, the send clock, the ack clock) writes it
// under the connection's lock and flushes. Writes never block on flow control: what does not fit the send windows
// waits in its stream's pending buffer until WINDOW_UPDATE.
type h2conn struct {
	nc        net.Conn
	br        *bufio.Reader
	fr        *http2.Framer // read only by readLoop; written only under mu
	authority string
	live      atomic.Bool // new streams may open (not failed, closed or told GOAWAY)

	mu          sync.Mutex // guards what follows, and every write
	bw          *bufio.Writer
	henc        *hpack.Encoder
	hbuf        bytes.Buffer
	streams     map[uint32]*grpcStream
	nextID      uint32
	sendWin     int64 // the connection's send window
	peerInitWin int64 // the peer's SETTINGS_INITIAL_WINDOW_SIZE: a new stream's send window
	maxFrame    int
	maxStreams  uint32
	blocked     []*grpcStream // streams with bytes waiting for a window
	recvUnacked int64         // DATA bytes consumed since our last connection WINDOW_UPDATE
	goaway      bool
	closeErr    error // why we closed it ourselves (streams end with it)
	failed      error // set once the connection is dead

	idlers []idler       // the reader's own
	done   chan struct{} // closed when the reader has ended every stream and returned
	stalls atomic.Int64  // writes that had to wait for a window (tests)
}

var (
	errConnClosed   = connect.NewError(connect.CodeUnavailable, errors.New("connection closed"))
	errStreamClosed = errors.New("stream closed")
)

// dialH2 opens a connection to addr (host:port) and starts its reader.
func dialH2(ctx context.Context, addr, authority string) (*h2conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &h2conn{
		nc: nc, authority: authority, br: bufio.NewReaderSize(nc, readBufSize), bw: bufio.NewWriterSize(nc, writeBufSize),
		streams: map[uint32]*grpcStream{}, nextID: 1, sendWin: 65535, peerInitWin: 65535,
		maxFrame: 16384, maxStreams: 1 << 31, done: make(chan struct{}),
	}
	c.fr = http2.NewFramer(c.bw, c.br)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil) // HEADERS and CONTINUATION arrive as one MetaHeadersFrame
	c.fr.SetReuseFrames()
	c.henc = hpack.NewEncoder(&c.hbuf)
	_, _ = c.bw.WriteString(http2.ClientPreface)
	_ = c.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: recvStreamWindow})
	_ = c.fr.WriteWindowUpdate(0, recvConnWindow-65535)
	if err := c.bw.Flush(); err != nil {
		_ = nc.Close()
		return nil, err
	}
	c.live.Store(true)
	go c.readLoop()
	return c, nil
}

// open starts a gRPC stream: its HEADERS are written and flushed. handle gets each response message in the
// reader's goroutine (the bytes are valid during the call only); an error from it resets the stream.
func (c *h2conn) open(path, token string, handle func([]byte) error) (*grpcStream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed != nil || c.goaway || c.closeErr != nil {
		return nil, errConnClosed
	}
	if uint32(len(c.streams)) >= c.maxStreams || c.nextID >= 1<<31-1 {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("no stream left on the connection"))
	}
	s := &grpcStream{c: c, id: c.nextID, handle: handle, sendWin: c.peerInitWin, done: make(chan struct{})}
	c.nextID += 2
	c.hbuf.Reset()
	for _, f := range [...]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: path},
		{Name: ":authority", Value: c.authority}, {Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"}, {Name: "grpc-accept-encoding", Value: "identity"},
		{Name: "user-agent", Value: "palaver-loadgen"}, {Name: "authorization", Value: "Bearer " + token},
	} {
		_ = c.henc.WriteField(f)
	}
	block := c.hbuf.Bytes()
	for first := true; first || len(block) > 0; first = false {
		frag := block[:min(len(block), c.maxFrame)]
		block = block[len(frag):]
		var err error
		if first {
			err = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: frag, EndHeaders: len(block) == 0})
		} else {
			err = c.fr.WriteContinuation(s.id, len(block) == 0, frag)
		}
		if err != nil {
			c.writeFailedLocked()
			return nil, errConnClosed
		}
	}
	c.streams[s.id] = s
	c.flushLocked()
	return s, nil
}

// usable says whether new streams may open on c.
func (c *h2conn) usable() bool { return c.live.Load() }

// flush sends what is buffered.
func (c *h2conn) flush() {
	c.mu.Lock()
	c.flushLocked()
	c.mu.Unlock()
}

func (c *h2conn) flushLocked() {
	if c.bw.Buffered() > 0 && c.bw.Flush() != nil {
		c.writeFailedLocked()
	}
}

// writeFailedLocked closes the socket: the reader then ends every stream.
func (c *h2conn) writeFailedLocked() {
	c.live.Store(false)
	_ = c.nc.Close()
}

// close closes the connection under its streams, which end with err (a churn drop, a cancelled run).
func (c *h2conn) close(err error) {
	c.mu.Lock()
	if c.closeErr == nil {
		c.closeErr = err
	}
	c.live.Store(false)
	c.mu.Unlock()
	_ = c.nc.Close()
}

// later runs x.idle() once the reader has handled what it has read. Only the reader calls it (from a handler).
func (c *h2conn) later(x idler) { c.idlers = append(c.idlers, x) }

func (c *h2conn) runIdlers() {
	for i, x := range c.idlers {
		x.idle()
		c.idlers[i] = nil
	}
	c.idlers = c.idlers[:0]
}

// readLoop reads frames and handles them inline. When nothing more is buffered it runs the idlers and flushes
// whatever the handlers wrote (acks, sends, WINDOW_UPDATE), so a burst of frames costs one write.
func (c *h2conn) readLoop() {
	defer close(c.done)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if s := c.stream(se.StreamID); s != nil {
					c.reset(s, se.Code, connect.NewError(connect.CodeInternal, err))
				}
				continue
			}
			c.fail(err)
			c.runIdlers() // they find no stream; their devices ack on the next one
			return
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			c.onData(f)
		case *http2.MetaHeadersFrame:
			if s := c.stream(f.StreamID); s != nil {
				s.onHeaders(f)
			}
		case *http2.SettingsFrame:
			c.onSettings(f)
		case *http2.WindowUpdateFrame:
			c.mu.Lock()
			if f.StreamID == 0 {
				c.sendWin += int64(f.Increment)
			} else if s := c.streams[f.StreamID]; s != nil {
				s.sendWin += int64(f.Increment)
			}
			c.flushBlockedLocked()
			c.mu.Unlock()
		case *http2.PingFrame:
			if !f.IsAck() {
				c.mu.Lock()
				_ = c.fr.WritePing(true, f.Data)
				c.mu.Unlock()
			}
		case *http2.RSTStreamFrame:
			if s := c.stream(f.StreamID); s != nil {
				c.end(s, connect.NewError(codeOfH2(f.ErrCode), errors.New("stream reset by the server: "+f.ErrCode.String())), false)
			}
		case *http2.GoAwayFrame:
			c.onGoAway(f)
		}
		if c.br.Buffered() == 0 {
			c.runIdlers()
			c.flush()
		}
	}
}

func (c *h2conn) stream(id uint32) *grpcStream {
	c.mu.Lock()
	s := c.streams[id]
	c.mu.Unlock()
	return s
}

func (c *h2conn) onData(f *http2.DataFrame) {
	n := int64(f.Header().Length) // padding counts against the window too
	c.mu.Lock()
	s := c.streams[f.StreamID]
	c.recvUnacked += n
	if c.recvUnacked >= recvConnWindow/2 {
		_ = c.fr.WriteWindowUpdate(0, uint32(c.recvUnacked))
		c.recvUnacked = 0
	}
	if s != nil && !f.StreamEnded() {
		if s.recvUnacked += n; s.recvUnacked >= recvStreamWindow/2 {
			_ = c.fr.WriteWindowUpdate(s.id, uint32(s.recvUnacked))
			s.recvUnacked = 0
		}
	}
	c.mu.Unlock()
	if s == nil {
		return // a stream that has ended (we reset it)
	}
	if err := s.feed(f.Data()); err != nil {
		c.reset(s, http2.ErrCodeCancel, err)
		return
	}
	if f.StreamEnded() {
		c.end(s, connect.NewError(connect.CodeInternal, errors.New("stream ended without gRPC trailers")), true)
	}
}

func (c *h2conn) onSettings(f *http2.SettingsFrame) {
	if f.IsAck() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = f.ForeachSetting(func(st http2.Setting) error {
		switch st.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(st.Val) - c.peerInitWin
			c.peerInitWin = int64(st.Val)
			for _, s := range c.streams {
				s.sendWin += delta
			}
		case http2.SettingMaxFrameSize:
			c.maxFrame = int(st.Val)
		case http2.SettingMaxConcurrentStreams:
			c.maxStreams = st.Val
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSize(st.Val)
		}
		return nil
	})
	_ = c.fr.WriteSettingsAck()
	c.flushBlockedLocked()
}

// onGoAway: no new stream opens here; the streams the server will not process end as UNAVAILABLE (their devices
// reconnect on a fresh connection); the others run to their end, then the connection closes.
func (c *h2conn) onGoAway(f *http2.GoAwayFrame) {
	c.mu.Lock()
	c.goaway = true
	c.live.Store(false)
	var refused []*grpcStream
	for id, s := range c.streams {
		if id > f.LastStreamID {
			refused = append(refused, s)
		}
	}
	c.mu.Unlock()
	err := connect.NewError(connect.CodeUnavailable, errors.New("GOAWAY: "+f.ErrCode.String()))
	for _, s := range refused {
		c.end(s, err, false)
	}
	c.closeIfDone()
}

func (c *h2conn) closeIfDone() {
	c.mu.Lock()
	idle := c.goaway && len(c.streams) == 0
	c.mu.Unlock()
	if idle {
		_ = c.nc.Close()
	}
}

// reset ends s with err and tells the server with RST_STREAM (reader only).
func (c *h2conn) reset(s *grpcStream, code http2.ErrCode, err error) {
	c.mu.Lock()
	if c.streams[s.id] == s {
		_ = c.fr.WriteRSTStream(s.id, code)
		s.sentEnd = true
	}
	c.mu.Unlock()
	c.end(s, err, false)
}

// end removes s and wakes its owner; only the reader ends streams, so no handler of s runs after this. A stream the
// server ended while we had not half-closed is reset (CANCEL), so the server drops it at once. canRST false: the
// server reset it already.
func (c *h2conn) end(s *grpcStream, err error, canRST bool) {
	c.mu.Lock()
	if c.streams[s.id] != s {
		c.mu.Unlock()
		return
	}
	delete(c.streams, s.id)
	if canRST && !s.sentEnd {
		_ = c.fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
	}
	s.gone = true
	s.pending = nil
	c.mu.Unlock()
	s.err = err
	close(s.done)
	c.closeIfDone()
}

// fail ends every stream: the connection is dead (read error, or closed by us).
func (c *h2conn) fail(readErr error) {
	c.mu.Lock()
	err := c.closeErr
	if err == nil {
		err = connect.NewError(connect.CodeUnavailable, readErr)
	}
	c.failed = err
	c.live.Store(false)
	streams := c.streams
	c.streams = map[uint32]*grpcStream{}
	for _, s := range streams {
		s.gone = true
		s.pending = nil
	}
	c.blocked = nil
	c.mu.Unlock()
	_ = c.nc.Close()
	for _, s := range streams {
		s.err = err
		close(s.done)
	}
}

// flushBlockedLocked writes what waited for a window, now that one may have grown.
func (c *h2conn) flushBlockedLocked() {
	if len(c.blocked) == 0 {
		return
	}
	list := c.blocked
	c.blocked = nil
	for _, s := range list {
		if s.gone || len(s.pending) == 0 && !s.pendingEnd {
			continue
		}
		p, end := s.pending, s.pendingEnd
		s.pending, s.pendingEnd = s.pending[:0], false
		s.sendLocked(p, end) // what still does not fit goes back to pending (and to c.blocked)
	}
}

// codeOfH2 maps an RST_STREAM code to a gRPC code (the gRPC over HTTP/2 spec's table).
func codeOfH2(code http2.ErrCode) connect.Code {
	switch code {
	case http2.ErrCodeRefusedStream:
		return connect.CodeUnavailable
	case http2.ErrCodeCancel:
		return connect.CodeCanceled
	case http2.ErrCodeEnhanceYourCalm:
		return connect.CodeResourceExhausted
	case http2.ErrCodeInadequateSecurity:
		return connect.CodePermissionDenied
	}
	return connect.CodeInternal
}
