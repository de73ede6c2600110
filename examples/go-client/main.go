// Command go-client is a small Palaver device in Go, built on the generated client in gen/go.
//
// It opens one ChatService/Connect stream (gRPC over cleartext HTTP/2) with a token minted elsewhere
// (`palaver token --user U --device D`), or with a token a command prints, and, by mode:
//
//	go-client create-chat --with bob[,carol] [--name N]
//	go-client send --chat C --text T [--client-id X]
//	go-client listen [--until-drained] [--count N] [--no-ack] [--mark-read]
//
// Every mode also takes --url (default http://127.0.0.1:8080), --token (default $PALAVER_TOKEN) or --token-command
// (default $PALAVER_TOKEN_COMMAND), and --timeout. Results and events go to stdout, one protojson object a line; errors
// go to stderr with exit status 1.
//
// listen acks a stored event only after printing it (at least once), and in batches: one ack frame carries up to
// 1000 ids, and goes out when 1000 wait, when the oldest has waited a second, at InboxDrained, at the stop condition,
// and on an interrupt (Ctrl-C, SIGTERM), which acks what was printed and closes the stream cleanly; a second
// interrupt ends the process at once. An ack frame asks for an answer only if it is refused (answer_errors_only), so
// listen waits for none; a refused ack ends listen with its error. An event left unacked is sent again on the next
// listen, never lost.
//
// listen prints every event, the ones that are not stored too: InboxDrained, Resync, ReceiptUpdate (how far another
// participant, or the user's own other device, has received and read a chat) and TypingUpdate (someone started or
// stopped typing; typing lapses after its lapse_after unless renewed). Those have event_id 0: they are never acked,
// never counted by --count, and a device that is offline when they happen does not get them later (a client that
// keeps receipts reads them again from ListChats after a reconnect's InboxDrained). With --mark-read, listen marks each
// chat read up to the newest message it printed, as a chat app does with the chat on screen: a MarkRead command on the
// stream, at most one unanswered per chat, with the newest seq printed when the answer comes (readMarks). A refused
// MarkRead is reported on stderr, and listening goes on.
//
// A stream lives no longer than its token. With --token-command (e.g. 'palaver token --user U --device D --ttl 1h'),
// listen runs the command again shortly before the token expires, half-closes the stream (the server takes its acks
// before it ends it) and opens the next with the new token; a stream the server ends because its token expired is
// reopened the same way at once. The next stream's backlog repeats what was printed but not acked yet: it is acked
// again, not printed again.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	chatv1 "github.com/palaver-chat/palaver/gen/go/palaver/chat/v1"
	"github.com/palaver-chat/palaver/gen/go/palaver/chat/v1/chatv1connect"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const usage = `usage: go-client MODE [flags]
modes:
  create-chat --with U1[,U2...] [--name N]        create a chat; prints the CreateChatResponse
  send --chat C --text T [--client-id X]         send a message; prints the SendMessageResponse
  listen [--until-drained] [--count N] [--no-ack] [--mark-read]
        print each event received (receipt and typing updates too); stop after InboxDrained and/or N stored events
        (else run until interrupted); ack the printed ones in batches: up to 1000 ids a frame, after at most 1 s,
        and before stopping; --mark-read: mark each chat read up to the newest message printed
common flags: --url URL (--token T | --token-command CMD) --timeout D
  --token-command runs CMD (through sh) for each token; listen then renews its token before it expires`

// closeGrace is how long listen has, after an interrupt, to ack what it printed and close the stream.
const closeGrace = 5 * time.Second

func main() {
	err := run(os.Args[1:])
	if errors.Is(err, errFlags) {
		os.Exit(2) // the flag package has printed the problem and the mode's flags
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-client:", err)
		var usageErr usageError
		if errors.As(err, &usageErr) {
			fmt.Fprintln(os.Stderr, usage)
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errFlags = errors.New("bad flags")

type usageError string

func (e usageError) Error() string { return string(e) }

func run(args []string) error {
	if len(args) == 0 {
		return usageError("no mode given")
	}
	mode := args[0]
	flags := flag.NewFlagSet(mode, flag.ContinueOnError)
	baseURL := flags.String("url", "http://127.0.0.1:8080", "the server's base URL")
	token := flags.String("token", os.Getenv("PALAVER_TOKEN"), "bearer token (default $PALAVER_TOKEN)")
	tokenCommand := flags.String("token-command", os.Getenv("PALAVER_TOKEN_COMMAND"),
		"a command that prints a fresh token, run for each one; listen renews its token with it "+
			"(default $PALAVER_TOKEN_COMMAND)")
	timeout := flags.Duration("timeout", 0, "give up after this long (0: never)")

	// An interrupt ends the stream: at once, or for listen after closeGrace, in which listen acks what it printed and
	// closes the stream itself.
	interrupt, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(interrupt, stop) // a second interrupt ends the process at once
	grace := time.Duration(0)

	var conn *connector // set once the flags are parsed
	var act func(*device) error
	switch mode {
	case "create-chat":
		with := flags.String("with", "", "the other participants' user ids, comma-separated")
		name := flags.String("name", "", "the chat's name")
		act = func(d *device) error { return createChat(d, *name, strings.Split(*with, ",")) }
	case "send":
		chatID := flags.String("chat", "", "the chat's id")
		text := flags.String("text", "", "the message text")
		clientID := flags.String("client-id", "", "idempotency key: reuse it when retrying (default: random)")
		act = func(d *device) error { return send(d, *chatID, *text, *clientID) }
	case "listen":
		var opts listenOptions
		flags.BoolVar(&opts.untilDrained, "until-drained", false, "stop after InboxDrained")
		flags.IntVar(&opts.count, "count", 0, "stop after this many stored events (messages and chat updates)")
		flags.BoolVar(&opts.noAck, "no-ack", false, "do not ack; the events stay in the inbox")
		flags.BoolVar(&opts.markRead, "mark-read", false, "mark each chat read up to the newest message printed")
		act = func(d *device) error { return listen(d, conn, opts, interrupt.Done()) }
		grace = closeGrace
	default:
		return usageError(fmt.Sprintf("unknown mode %q", mode))
	}
	if err := flags.Parse(args[1:]); err != nil {
		return errFlags
	}
	if *token == "" && *tokenCommand == "" {
		return usageError("--token (or PALAVER_TOKEN) or --token-command (or PALAVER_TOKEN_COMMAND) is required")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	context.AfterFunc(interrupt, func() { time.AfterFunc(grace, cancel) })
	if *timeout > 0 {
		var cancelTimeout context.CancelFunc
		ctx, cancelTimeout = context.WithTimeout(ctx, *timeout)
		defer cancelTimeout()
	}
	// With both, the command wins: it can renew the token.
	conn = &connector{ctx: ctx, baseURL: *baseURL, tokens: tokenSource{token: *token, command: *tokenCommand}}
	first, err := conn.tokens.get(ctx)
	var d *device
	if err == nil {
		d, err = conn.open(first)
	}
	if err == nil {
		err = act(d)
	}
	if interrupt.Err() != nil {
		return nil // interrupted: what was not acked stays in the inbox
	}
	return err
}

// h2cClient speaks HTTP/2 without TLS (prior knowledge), which gRPC needs on a cleartext port.
func h2cClient() *http.Client {
	return &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		// http:// URLs still go through the TLS dial hook: dial plain TCP there.
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, network, addr)
		},
		ReadIdleTimeout: 30 * time.Second, // ping a quiet connection so a dead one is noticed
	}}
}

// device is one open Connect stream. One goroutine receives its frames into frames; the caller's goroutine sends
// and reads frames, so it can wait for a frame and a timer at once (listen does). A command waits for its result
// frame, and events that arrive meanwhile are not acked, so they stay in the inbox for the next listen.
type device struct {
	stream *connect.BidiStreamForClient[chatv1.ConnectRequest, chatv1.ConnectResponse]
	frames <-chan *chatv1.ConnectResponse // closed when the stream ends
	end    error                          // why it ended (io.EOF: the server ended it with OK); set before frames closes
	nextID int
}

func open(ctx context.Context, baseURL, token string) (*device, error) {
	client := chatv1connect.NewChatServiceClient(h2cClient(), baseURL, connect.WithGRPC())
	stream := client.Connect(ctx)
	stream.RequestHeader().Set("Authorization", "Bearer "+token)
	frames := make(chan *chatv1.ConnectResponse)
	d := &device{stream: stream, frames: frames}
	go func() {
		defer close(frames)
		for {
			frame, err := stream.Receive()
			if err != nil {
				d.end = err
				return
			}
			select {
			case frames <- frame:
			case <-ctx.Done(): // nobody reads any more
				d.end = ctx.Err()
				return
			}
		}
	}()
	// Send the headers now: the server starts sending the backlog as soon as the stream opens.
	if err := d.send(nil); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *device) send(frame *chatv1.ConnectRequest) error {
	err := d.stream.Send(frame)
	if errors.Is(err, io.EOF) { // the server ended the stream: its status comes after the frames it sent
		for range d.frames {
		}
		return d.ended()
	}
	return err
}

// receive returns the next frame; an end of the stream the device did not ask for is an error.
func (d *device) receive() (*chatv1.ConnectResponse, error) {
	frame, ok := <-d.frames
	if !ok {
		return nil, d.ended()
	}
	return frame, nil
}

// ended returns why the stream ended, as an error even when the server ended it with OK; call it once frames closed.
func (d *device) ended() error {
	if errors.Is(d.end, io.EOF) {
		return errors.New("the server ended the stream")
	}
	return d.end
}

// start sends a command frame and returns its request id.
func (d *device) start(frame *chatv1.ConnectRequest) (string, error) {
	d.nextID++
	frame.RequestId = fmt.Sprintf("r%d", d.nextID)
	return frame.RequestId, d.send(frame)
}

// command sends a command frame and waits for its result.
func (d *device) command(frame *chatv1.ConnectRequest) (*chatv1.CommandResult, error) {
	id, err := d.start(frame)
	if err != nil {
		return nil, err
	}
	for {
		in, err := d.receive()
		if err != nil {
			return nil, err
		}
		if result := in.GetResult(); result.GetRequestId() == id {
			return result, resultError(result)
		}
	}
}

// resultError turns a CommandError into the error the unary call would have returned.
func resultError(result *chatv1.CommandResult) error {
	if e := result.GetError(); e != nil {
		return connect.NewError(connect.Code(e.GetCode()), errors.New(e.GetMessage()))
	}
	return nil
}

// close half-closes the stream and reads it to its end: the server answers what it was sent, then ends the stream.
// answered, unless nil, takes each result read meanwhile (listen's last acks, answered only if refused, are answered
// then), and its first error is returned.
func (d *device) close(answered func(*chatv1.CommandResult) error) error {
	if err := d.stream.CloseRequest(); err != nil {
		return err
	}
	var refused error
	for frame := range d.frames {
		if result := frame.GetResult(); result != nil && answered != nil && refused == nil {
			refused = answered(result)
		}
	}
	if refused != nil {
		return refused
	}
	if !errors.Is(d.end, io.EOF) {
		return d.end
	}
	return d.stream.CloseResponse()
}

func createChat(d *device, name string, with []string) error {
	result, err := d.command(&chatv1.ConnectRequest{Command: &chatv1.ConnectRequest_CreateChat{
		CreateChat: &chatv1.CreateChatRequest{Name: name, ParticipantUserIds: with},
	}})
	if err != nil {
		return fmt.Errorf("create-chat: %w", err)
	}
	if err := printJSON(result.GetCreateChat()); err != nil {
		return err
	}
	return d.close(nil)
}

func send(d *device, chatID, text, clientID string) error {
	if clientID == "" {
		clientID = randomID()
	}
	result, err := d.command(&chatv1.ConnectRequest{Command: &chatv1.ConnectRequest_SendMessage{
		SendMessage: &chatv1.SendMessageRequest{ChatId: chatID, ClientMessageId: clientID, Text: text},
	}})
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if err := printJSON(result.GetSendMessage()); err != nil {
		return err
	}
	return d.close(nil)
}

// ackAnswer takes a result of listen's that is not a MarkRead's, so an ack's (listen sends nothing else). Acks go with
// answer_errors_only: it is a refusal, unless the server predates that field and answers successes too.
func ackAnswer(result *chatv1.CommandResult) error {
	if err := resultError(result); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	return nil
}

type listenOptions struct {
	untilDrained bool
	count        int
	noAck        bool
	markRead     bool
}

// listen prints events as they arrive and acks the stored ones after printing them (at least once), in batches
// (ackBatch): when maxAckBatch ids wait, when the oldest has waited ackDelay, at InboxDrained, at the stop condition
// and on an interrupt. With --mark-read it marks each chat read up to the newest message printed (readMarks). It
// returns once the stop condition holds (or the interrupt came) and every MarkRead has been answered, after closing
// the stream: the server takes the acks sent before it ends the stream. With a token command it moves to a new stream
// each time it renews the token, or when the server ends the stream because the token expired.
func listen(d *device, conn *connector, opts listenOptions, interrupted <-chan struct{}) error {
	var (
		seen     = newSeenEvents() // an event comes again after a reconnect until it is acked: dedupe by event_id
		drained  bool
		received int
		finished bool // past the stop condition: events stay unacked for next time
		reads    = newReadMarks()
	)
	done := func() bool {
		if !opts.untilDrained && opts.count == 0 {
			return false // run until interrupted
		}
		return (drained || !opts.untilDrained) && received >= opts.count
	}
	// timer fires when the oldest waiting id has waited ackDelay; it is stopped while none waits. (Since Go 1.23 a
	// stopped or reset timer delivers no stale tick.)
	timer := time.NewTimer(ackDelay)
	defer timer.Stop()

streams:
	for {
		var (
			batch    = ackBatch{max: maxAckBatch, delay: ackDelay}
			marking  = map[string]readMark{} // this stream's MarkRead commands not yet answered, by request id
			opened   bool                    // the stream sent a frame: if it ends UNAUTHENTICATED, its token expired
			renewal  = conn.renewal()        // fires shortly before the token expires
			fetching <-chan tokenResult      // a fresh token on its way
			next     string                  // the fresh token to move to
		)
		timer.Stop()
		reads.newStream()
		seen.newStream()
		// reopenIfExpired opens the next stream with a fresh token when this one ended because its token expired
		// while it was open; otherwise it returns why the stream ended.
		reopenIfExpired := func(end error) error {
			if finished || !opened || !conn.tokens.renewable() || connect.CodeOf(end) != connect.CodeUnauthenticated {
				return end
			}
			token, err := conn.fresh(fetching)
			if err != nil {
				return fmt.Errorf("%w (renewing the token: %w)", end, err)
			}
			d, err = conn.open(token)
			return err
		}

		for next == "" && (!finished || len(marking) > 0) {
			flush := false
			select {
			case in, ok := <-d.frames:
				if !ok {
					if err := reopenIfExpired(d.ended()); err != nil {
						return fmt.Errorf("listen: %w", err)
					}
					continue streams
				}
				opened = true
				if result := in.GetResult(); result != nil {
					if mark, ok := marking[result.GetRequestId()]; ok {
						delete(marking, result.GetRequestId())
						err := resultError(result)
						if err != nil { // marking read is best effort: the next message printed marks it again
							fmt.Fprintf(os.Stderr, "go-client: mark-read %s up to %d: %v\n", mark.chatID, mark.seq, err)
						}
						reads.answered(mark, err == nil)
						break
					}
					if err := ackAnswer(result); err != nil {
						return err
					}
					break
				}
				event := in.GetEvent()
				if finished || event == nil {
					break
				}
				id := event.GetEventId() // 0 for InboxDrained and Resync, which are not stored
				if id != 0 && seen.came(id) {
					// Printed on an earlier stream, and its ack did not arrive: ack it again.
					if !opts.noAck {
						batch.add(id, time.Now())
					}
					break
				}
				if err := printJSON(event); err != nil {
					return err
				}
				if id != 0 {
					received++
					if !opts.noAck {
						batch.add(id, time.Now())
					}
				}
				if message := event.GetNewMessage(); message != nil && opts.markRead {
					reads.printed(event.GetChatId(), message.GetSeq())
				}
				if event.GetInboxDrained() != nil {
					drained = true
					flush = true // the backlog's tail
					seen.drained()
				}
				if finished = done(); finished {
					flush = true
				}
			case <-timer.C:
			case <-renewal:
				if !finished {
					fetching = conn.fetch()
				}
			case result := <-fetching:
				fetching = nil
				if result.err != nil { // the stream goes on until the token expires; then the command is run again
					fmt.Fprintln(os.Stderr, "go-client: renewing the token:", result.err)
					break
				}
				next = result.token
				flush = true // ack what was printed before moving
			case <-interrupted:
				interrupted = nil
				finished, flush = true, true // ack what was printed, then close
			}

			now := time.Now()
			for !batch.empty() && (flush || batch.due(now)) {
				// Answered only if refused: a lost or refused ack only means the events come again.
				ack := &chatv1.AckEventsRequest{EventIds: batch.take()}
				_, err := d.start(&chatv1.ConnectRequest{
					Command: &chatv1.ConnectRequest_AckEvents{AckEvents: ack}, AnswerErrorsOnly: true})
				if err != nil {
					if err := reopenIfExpired(err); err != nil {
						return fmt.Errorf("ack: %w", err)
					}
					continue streams
				}
			}
			for _, mark := range reads.due() {
				id, err := d.start(&chatv1.ConnectRequest{Command: &chatv1.ConnectRequest_MarkRead{
					MarkRead: &chatv1.MarkReadRequest{ChatId: mark.chatID, Seq: mark.seq},
				}})
				if err != nil {
					if err := reopenIfExpired(err); err != nil {
						return fmt.Errorf("mark-read: %w", err)
					}
					continue streams
				}
				marking[id] = mark
			}
			if wait, ok := batch.wait(now); ok {
				timer.Reset(wait)
			} else {
				timer.Stop()
			}
		}
		if next == "" {
			return d.close(ackAnswer)
		}
		// Half-close: the server takes the acks sent, then ends the stream. How it ends matters little (a refused ack
		// too): what it did not get acked comes again on the next stream.
		_ = d.close(nil)
		var err error
		if d, err = conn.open(next); err != nil {
			return err
		}
	}
}

func printJSON(message proto.Message) error {
	line, err := protojson.Marshal(message)
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", line)
	return err
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
