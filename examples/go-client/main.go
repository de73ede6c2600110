// Command go-client is a small Palaver device in Go, built on the generated client in gen/go.
//
// It opens one ChatService/Connect stream (gRPC over cleartext HTTP/2) with a token minted elsewhere
// (`palaver token --user U --device D`) and, by mode:
//
//	go-client create-chat --with bob[,carol] [--name N]
//	go-client send --chat C --text T [--client-id X]
//	go-client listen [--until-drained] [--count N] [--no-ack]
//
// Every mode also takes --url (default http://127.0.0.1:8080), --token (default $PALAVER_TOKEN) and --timeout.
// Results and events go to stdout, one protojson object a line; errors go to stderr with exit status 1.
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
  listen [--until-drained] [--count N] [--no-ack]
        print each event received; stop after InboxDrained and/or N stored events (else run until interrupted)
common flags: --url URL --token T --timeout D`

// maxAckBatch is the most event ids one AckEvents command may carry.
const maxAckBatch = 1000

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
	timeout := flags.Duration("timeout", 0, "give up after this long (0: never)")

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
		act = func(d *device) error { return listen(d, opts) }
	default:
		return usageError(fmt.Sprintf("unknown mode %q", mode))
	}
	if err := flags.Parse(args[1:]); err != nil {
		return errFlags
	}
	if *token == "" {
		return usageError("--token (or PALAVER_TOKEN) is required")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	d, err := open(ctx, *baseURL, *token)
	if err == nil {
		err = act(d)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
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

// device is one open Connect stream. Everything runs on one goroutine: a command waits for its result frame, and
// events that arrive meanwhile are not acked, so they stay in the inbox for the next listen.
type device struct {
	stream *connect.BidiStreamForClient[chatv1.ConnectRequest, chatv1.ConnectResponse]
	nextID int
}

func open(ctx context.Context, baseURL, token string) (*device, error) {
	client := chatv1connect.NewChatServiceClient(h2cClient(), baseURL, connect.WithGRPC())
	stream := client.Connect(ctx)
	stream.RequestHeader().Set("Authorization", "Bearer "+token)
	d := &device{stream: stream}
	// Send the headers now: the server starts sending the backlog as soon as the stream opens.
	if err := d.send(nil); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *device) send(frame *chatv1.ConnectRequest) error {
	err := d.stream.Send(frame)
	if errors.Is(err, io.EOF) {
		_, err = d.stream.Receive() // the server ended the stream; Receive has its status
	}
	return err
}

// receive returns the next frame; an end of the stream the device did not ask for is an error.
func (d *device) receive() (*chatv1.ConnectResponse, error) {
	frame, err := d.stream.Receive()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("the server ended the stream")
	}
	return frame, err
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
func (d *device) close() error {
	if err := d.stream.CloseRequest(); err != nil {
		return err
	}
	for {
		if _, err := d.stream.Receive(); err != nil {
			if errors.Is(err, io.EOF) {
				return d.stream.CloseResponse()
			}
			return err
		}
	}
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
	return d.close()
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
	return d.close()
}

type listenOptions struct {
	untilDrained bool
	count        int
	noAck        bool
}

// listen prints events as they arrive and acks the stored ones after printing them (at least once): in batches while
// the backlog drains, then one by one. It returns once the stop condition holds and every ack has been answered.
func listen(d *device, opts listenOptions) error {
	var (
		seen     = map[uint64]bool{} // the server may send an event again after a reconnect: dedupe by event_id
		unacked  []uint64
		acking   = map[string]bool{} // request ids of ack commands not yet answered
		drained  bool
		received int
	)
	done := func() bool {
		if !opts.untilDrained && opts.count == 0 {
			return false // run until interrupted
		}
		return (drained || !opts.untilDrained) && received >= opts.count
	}
	flush := func() error {
		if opts.noAck || len(unacked) == 0 {
			return nil
		}
		id, err := d.start(&chatv1.ConnectRequest{Command: &chatv1.ConnectRequest_AckEvents{
			AckEvents: &chatv1.AckEventsRequest{EventIds: unacked},
		}})
		acking[id] = true
		unacked = nil
		return err
	}

	for finished := false; !finished || len(acking) > 0; {
		in, err := d.receive()
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		if result := in.GetResult(); result != nil {
			delete(acking, result.GetRequestId())
			if err := resultError(result); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
			continue
		}
		event := in.GetEvent()
		if finished || event == nil || seen[event.GetEventId()] {
			continue // past the stop condition, events stay unacked for next time
		}
		if err := printJSON(event); err != nil {
			return err
		}
		if id := event.GetEventId(); id != 0 { // InboxDrained and Resync are not stored and carry no id
			seen[id] = true
			unacked = append(unacked, id)
			received++
		}
		if event.GetInboxDrained() != nil {
			drained = true
		}
		finished = done()
		if drained || finished || len(unacked) == maxAckBatch {
			if err := flush(); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
		}
	}
	return d.close()
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
