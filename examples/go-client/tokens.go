package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// tokenSource gives the device its bearer tokens: a fixed one (--token), or a fresh one each time from a command
// (--token-command, such as `palaver token --user U --device D --ttl 1h`), which lets listen renew its token.
type tokenSource struct {
	token   string
	command string
}

func (s tokenSource) renewable() bool { return s.command != "" }

// get returns the fixed token, or runs the command (through sh) and returns what it printed.
func (s tokenSource) get(ctx context.Context) (string, error) {
	if s.command == "" {
		return s.token, nil
	}
	out, err := exec.CommandContext(ctx, "sh", "-c", s.command).Output()
	if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
		return "", fmt.Errorf("token command: %w: %s", err, strings.TrimSpace(string(exit.Stderr)))
	}
	if err != nil {
		return "", fmt.Errorf("token command: %w", err)
	}
	token := strings.TrimSpace(string(out))
	if token == "" {
		return "", errors.New("token command printed no token")
	}
	return token, nil
}

// renewalTime is when to renew a token: once three quarters of its lifetime (exp - iat) have passed, and at most a
// minute before it expires (docs/protocol.md, "Renewing the token"). ok is false for a token that does not say when
// it expires. The claims are only read here; the server checks the signature.
func renewalTime(token string) (at time.Time, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Iat *float64 `json:"iat"`
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	exp, iat := *claims.Exp, *claims.Exp
	if claims.Iat != nil {
		iat = *claims.Iat
	}
	lead := min((exp-iat)/4, 60)
	return time.UnixMilli(int64((exp - lead) * 1000)), true
}

// connector opens the device's streams: the first, and after each renewal of the token the next one.
type connector struct {
	ctx     context.Context
	baseURL string
	tokens  tokenSource
	token   string // the current stream's
}

func (c *connector) open(token string) (*device, error) {
	c.token = token
	return open(c.ctx, c.baseURL, token)
}

// renewal fires when the current token is due for renewal; it never fires without a token command, or for a token
// that does not say when it expires (the stream then ends when it does).
func (c *connector) renewal() <-chan time.Time {
	if !c.tokens.renewable() {
		return nil
	}
	at, ok := renewalTime(c.token)
	if !ok {
		return nil
	}
	return time.After(time.Until(at))
}

type tokenResult struct {
	token string
	err   error
}

// fetch gets a fresh token in the background: the stream goes on meanwhile.
func (c *connector) fetch() <-chan tokenResult {
	result := make(chan tokenResult, 1)
	go func() {
		token, err := c.tokens.get(c.ctx)
		result <- tokenResult{token, err}
	}()
	return result
}

// fresh returns the token a fetch is bringing, or, with none under way, gets one now.
func (c *connector) fresh(fetching <-chan tokenResult) (string, error) {
	if fetching == nil {
		return c.tokens.get(c.ctx)
	}
	result := <-fetching
	return result.token, result.err
}
