package main

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/palaver-chat/palaver/gen/go/palaver/chat/v1/chatv1connect"
	"golang.org/x/net/http2"
)

// link is one HTTP/2 connection (h2c, prior knowledge) shared by --devices-per-conn devices: by default each device
// has its own, as a phone does. Churn drops a link: its TCP connection is closed under its streams, like a phone
// losing the network, and the next stream dials a fresh one.
type link struct {
	url     string
	devices []*device

	mu     sync.Mutex
	tr     *http2.Transport
	client chatv1connect.ChatServiceClient
	conns  []net.Conn // dialed by the current transport, closed by drop
}

func newLink(url string) *link {
	l := &link{url: url}
	l.renew()
	return l
}

// renew starts a new transport; the caller holds mu (or owns the link alone).
func (l *link) renew() {
	tr := &http2.Transport{
		AllowHTTP: true,
		// http:// URLs still go through the TLS dial hook: dial plain TCP there, and keep the conn so drop can close it.
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			l.mu.Lock()
			l.conns = append(l.conns, c)
			l.mu.Unlock()
			return c, nil
		},
		ReadIdleTimeout: 30 * time.Second, // ping a quiet connection so a dead one is noticed
	}
	l.tr = tr
	// No gzip: ~100-byte messages gain nothing, and inflating every frame would be most of loadgen's CPU.
	l.client = chatv1connect.NewChatServiceClient(&http.Client{Transport: tr}, l.url, connect.WithGRPC(),
		connect.WithAcceptCompression("gzip", nil, nil), connect.WithCodec(codec{}))
}

func (l *link) chatClient() chatv1connect.ChatServiceClient {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.client
}

// drop closes the link's TCP connections under their streams and makes the next stream dial anew. The devices'
// sessions are marked first, so their readers know the end was asked for.
func (l *link) drop() {
	l.mu.Lock() // held while marking: a session starting meanwhile gets the new transport (see device.session)
	for _, d := range l.devices {
		d.markDropped()
	}
	conns := l.conns
	l.conns = nil
	old := l.tr
	l.renew()
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	old.CloseIdleConnections()
}

// close ends the link's connections at the end of the run.
func (l *link) close() {
	l.mu.Lock()
	conns := l.conns
	l.conns = nil
	tr := l.tr
	l.mu.Unlock()
	tr.CloseIdleConnections()
	for _, c := range conns {
		_ = c.Close()
	}
}
