package main

import (
	"encoding/binary"
	"errors"
	"net/url"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
)

// grpcStream is one gRPC call on an h2conn. The reader owns the receive side (headers, message reassembly,
// trailers); writes go through the connection's lock. done is closed when the stream has ended, err says how
// (nil: grpc-status 0).
type grpcStream struct {
	c      *h2conn
	id     uint32
	handle func([]byte) error
	done   chan struct{}
	err    error

	// Under c.mu.
	sendWin     int64
	pending     []byte // written, waiting for a send window
	pendingEnd  bool   // half-close once pending is out
	sentEnd     bool   // END_STREAM (or RST_STREAM) written
	gone        bool   // ended: writes fail
	recvUnacked int64

	// The reader's own: the 5-byte gRPC prefix and the message being reassembled across DATA frames.
	gotHeaders bool
	hdr        [5]byte
	hdrN       int
	inMsg      bool
	msgLen     int
	msg        []byte
}

var errCompressed = connect.NewError(connect.CodeInternal, errors.New("compressed message (we accept identity only)"))

// write queues p (whole gRPC messages) on the stream and, with end, half-closes after it. Bytes beyond the send
// windows wait in pending. The caller flushes the connection.
func (s *grpcStream) write(p []byte, end bool) error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.gone || s.sentEnd || s.pendingEnd {
		return errStreamClosed
	}
	if len(s.pending) > 0 {
		s.pending = append(s.pending, p...)
		s.pendingEnd = end
		return nil
	}
	s.sendLocked(p, end)
	return nil
}

// sendLocked writes what the windows allow (in frames of at most the peer's frame size) and keeps the rest.
func (s *grpcStream) sendLocked(p []byte, end bool) {
	c := s.c
	for len(p) > 0 {
		n := min(int64(len(p)), s.sendWin, c.sendWin, int64(c.maxFrame))
		if n <= 0 {
			break
		}
		last := end && n == int64(len(p))
		if c.fr.WriteData(s.id, last, p[:n]) != nil {
			c.writeFailedLocked()
			return
		}
		s.sendWin -= n
		c.sendWin -= n
		p = p[n:]
		if last {
			s.sentEnd = true
			return
		}
	}
	if len(p) > 0 {
		s.pending = append(s.pending[:0], p...) // p may alias pending: append copies forward, which is safe
		s.pendingEnd = end
		c.blocked = append(c.blocked, s)
		c.stalls.Add(1)
		return
	}
	if end {
		if c.fr.WriteData(s.id, true, nil) != nil {
			c.writeFailedLocked()
		}
		s.sentEnd = true
	}
}

// feed takes one DATA frame's payload: gRPC length-prefixed messages, split anywhere. A message whole in the frame
// is handled in place; one split across frames is copied into msg first.
func (s *grpcStream) feed(p []byte) error {
	for {
		if !s.inMsg {
			if s.hdrN == 0 && len(p) >= 5 {
				n, err := msgLen(p[:5])
				if err != nil {
					return err
				}
				if len(p)-5 >= n {
					if err := s.handle(p[5 : 5+n]); err != nil {
						return err
					}
					p = p[5+n:]
					continue
				}
				s.inMsg, s.msgLen, s.msg = true, n, s.msg[:0]
				p = p[5:]
			} else {
				k := copy(s.hdr[s.hdrN:], p)
				s.hdrN += k
				p = p[k:]
				if s.hdrN < 5 {
					return nil
				}
				s.hdrN = 0
				n, err := msgLen(s.hdr[:])
				if err != nil {
					return err
				}
				s.inMsg, s.msgLen, s.msg = true, n, s.msg[:0]
			}
		}
		k := min(s.msgLen-len(s.msg), len(p))
		s.msg = append(s.msg, p[:k]...)
		p = p[k:]
		if len(s.msg) < s.msgLen {
			return nil
		}
		s.inMsg = false
		if err := s.handle(s.msg); err != nil {
			return err
		}
		if len(p) == 0 {
			return nil
		}
	}
}

func msgLen(prefix []byte) (int, error) {
	if prefix[0] != 0 {
		return 0, errCompressed
	}
	n := binary.BigEndian.Uint32(prefix[1:5])
	if n > maxMessageBytes {
		return 0, connect.NewError(connect.CodeResourceExhausted, errors.New("message of "+strconv.Itoa(int(n))+" bytes"))
	}
	return int(n), nil
}

// onHeaders handles the response headers (which must be :status 200 and a gRPC content type; with END_STREAM they
// are a Trailers-Only answer) and the trailers.
func (s *grpcStream) onHeaders(f *http2.MetaHeadersFrame) {
	c := s.c
	if f.Truncated {
		c.reset(s, http2.ErrCodeCancel, connect.NewError(connect.CodeInternal, errors.New("response headers too large")))
		return
	}
	if !s.gotHeaders {
		s.gotHeaders = true
		if status := f.PseudoValue("status"); status != "200" {
			c.reset(s, http2.ErrCodeCancel, connect.NewError(codeOfHTTP(status), errors.New("HTTP status "+status)))
			return
		}
		ct := header(f, "content-type")
		if ct != "application/grpc" && ct != "application/grpc+proto" {
			c.reset(s, http2.ErrCodeCancel, connect.NewError(connect.CodeUnknown, errors.New("content type "+strconv.Quote(ct))))
			return
		}
		if enc := header(f, "grpc-encoding"); enc != "" && enc != "identity" {
			c.reset(s, http2.ErrCodeCancel, connect.NewError(connect.CodeInternal, errors.New("grpc-encoding "+enc)))
			return
		}
		if !f.StreamEnded() {
			return
		}
	} else if !f.StreamEnded() {
		c.reset(s, http2.ErrCodeProtocol, connect.NewError(connect.CodeInternal, errors.New("trailers without END_STREAM")))
		return
	}
	c.end(s, s.status(f), true)
}

// status is the stream's end from its trailers: nil for grpc-status 0.
func (s *grpcStream) status(f *http2.MetaHeadersFrame) error {
	raw := header(f, "grpc-status")
	code, err := strconv.ParseUint(raw, 10, 32)
	if err != nil {
		return connect.NewError(connect.CodeUnknown, errors.New("no valid grpc-status in the trailers"))
	}
	if code == 0 {
		if s.inMsg || s.hdrN > 0 {
			return connect.NewError(connect.CodeInternal, errors.New("stream ended inside a message"))
		}
		return nil
	}
	msg := header(f, "grpc-message")
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	return connect.NewError(connect.Code(code), errors.New(msg))
}

func header(f *http2.MetaHeadersFrame, name string) string {
	for _, hf := range f.Fields {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

// codeOfHTTP maps a non-200 HTTP status to a gRPC code (the gRPC spec's table).
func codeOfHTTP(status string) connect.Code {
	switch status {
	case "400":
		return connect.CodeInternal
	case "401":
		return connect.CodeUnauthenticated
	case "403":
		return connect.CodePermissionDenied
	case "404":
		return connect.CodeUnimplemented
	case "429", "502", "503", "504":
		return connect.CodeUnavailable
	}
	if strings.HasPrefix(status, "5") {
		return connect.CodeUnavailable
	}
	return connect.CodeUnknown
}
