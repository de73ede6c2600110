package main

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/url"
	"sync"

	"connectrpc.com/connect"
	"github.com/palaver-chat/palaver/gen/go/palaver/chat/v1/chatv1connect"
	"golang.org/x/net/http2"
)

// link is the HTTP/2 connection (h2c, prior knowledge) shared by --devices-per-conn devices: by default each device
// has its own, as a phone does. Churn drops a link: its TCP connection is closed under its streams, like a phone
// losing the network, and the next stream dials a fresh one.
type link struct {
	url, addr, authority string
	devices              []*device

	dialMu sync.Mutex // one dial at a time: the link's devices share what it dials
	mu     sync.Mutex
	cur    *h2conn
	old    []*h2conn // replaced after GOAWAY or a failure: closed at the end
}

// newLink takes a URL the plan has checked (http://host[:port]).
func newLink(rawURL string) *link {
	l := &link{url: rawURL}
	if u, err := url.Parse(rawURL); err == nil {
		l.addr, l.authority = u.Host, u.Host
		if u.Port() == "" {
			l.addr = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	return l
}

// conn returns the link's connection, dialing one if there is none that takes new streams.
func (l *link) conn(ctx context.Context) (*h2conn, error) {
	l.mu.Lock()
	c := l.cur
	l.mu.Unlock()
	if c != nil && c.usable() {
		return c, nil
	}
	l.dialMu.Lock()
	defer l.dialMu.Unlock()
	l.mu.Lock()
	c = l.cur
	l.mu.Unlock()
	if c != nil && c.usable() {
		return c, nil
	}
	c, err := dialH2(ctx, l.addr, l.authority)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	l.mu.Lock()
	if l.cur != nil {
		old := l.old[:0]
		for _, o := range l.old {
			select {
			case <-o.done:
			default:
				old = append(old, o)
			}
		}
		l.old = append(old, l.cur)
	}
	l.cur = c
	l.mu.Unlock()
	return c, nil
}

var errDropped = connect.NewError(connect.CodeUnavailable, errors.New("dropped by churn"))

// drop closes the link's TCP connection under its streams; the next stream dials anew. The devices' sessions are
// marked first, so they know the end was asked for.
func (l *link) drop() {
	l.mu.Lock() // held while marking: a session registering meanwhile is marked, or sees cur change (device.session)
	for _, d := range l.devices {
		d.markDropped()
	}
	c := l.cur
	l.cur = nil
	l.mu.Unlock()
	if c != nil {
		c.close(errDropped)
	}
}

// close ends the link's connections at the end of the run.
func (l *link) close(err error) {
	l.mu.Lock()
	conns := append(l.old, l.cur)
	l.cur, l.old = nil, nil
	l.mu.Unlock()
	for _, c := range conns {
		if c != nil {
			c.close(err)
		}
	}
}

// unaryClients are connect-go clients for unary calls (GetChat), one per URL: rare, so the generated client on a
// shared http2.Transport is good enough there.
type unaryClients struct {
	mu sync.Mutex
	m  map[string]chatv1connect.ChatServiceClient
}

func (u *unaryClients) get(url string) chatv1connect.ChatServiceClient {
	u.mu.Lock()
	defer u.mu.Unlock()
	if c := u.m[url]; c != nil {
		return c
	}
	tr := &http2.Transport{
		AllowHTTP: true,
		// http:// URLs still go through the TLS dial hook: dial plain TCP there.
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	// No gzip offered: small answers gain nothing.
	c := chatv1connect.NewChatServiceClient(&http.Client{Transport: tr}, url, connect.WithGRPC(),
		connect.WithAcceptCompression("gzip", nil, nil))
	if u.m == nil {
		u.m = map[string]chatv1connect.ChatServiceClient{}
	}
	u.m[url] = c
	return c
}
