package main

import (
	"encoding/binary"
	"errors"
	"strconv"

	chatv1 "github.com/palaver-chat/palaver/gen/go/palaver/chat/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// A ConnectResponse is decoded by hand into a reused *frame, keeping only what loadgen uses: the generated decoder
// allocates every message, string and timestamp of every event (ten allocations), which at tens of thousands of
// events a second is a good part of loadgen's CPU. Requests are marshalled by the generated code into a reused
// buffer (requestEncoder).

// Kinds of frame (ConnectResponse.frame) and of event (Event.kind) loadgen tells apart.
const (
	frameNone = iota
	frameEvent
	frameResult
)

const (
	eventOther = iota // ChatUpdate or a kind added later: acked (when it has an event_id), not counted
	eventNewMessage
	eventInboxDrained
	eventResync
	eventReceiptUpdate // never stored (event_id 0): counted, never acked
	eventTypingUpdate  // never stored (event_id 0): counted, never acked
)

// frame is one ConnectResponse as loadgen needs it. Byte fields are copies (the message's bytes belong to the
// connection's reader), valid until the next decode into the same frame.
type frame struct {
	kind int

	// Event
	eventID       uint64
	eventKind     int
	chatID        []byte
	seq           uint64
	text          []byte
	backlogEvents uint64
	resyncReason  int32
	// ReceiptUpdate (its user_id is not kept) and TypingUpdate
	deliveredSeq, readSeq uint64
	typing                bool

	// CommandResult
	requestID []byte
	hasError  bool
	errorCode int32
	sendSeq   uint64
	// mark_read: the caller's receipt's read_seq after the call, and its unread count
	markRead    bool
	markReadSeq uint64
	unreadCount uint64
}

var errBadFrame = errors.New("malformed ConnectResponse")

func (f *frame) reset() {
	f.kind, f.eventID, f.eventKind, f.seq, f.backlogEvents, f.resyncReason = frameNone, 0, eventOther, 0, 0, 0
	f.chatID, f.text, f.requestID = f.chatID[:0], f.text[:0], f.requestID[:0]
	f.hasError, f.errorCode, f.sendSeq = false, 0, 0
	f.deliveredSeq, f.readSeq, f.typing = 0, 0, false
	f.markRead, f.markReadSeq, f.unreadCount = false, 0, 0
}

// fields walks the fields of one message, calling fn with each field's number, wire type, varint value (for
// varints) and bytes (for length-delimited fields); other wire types are skipped.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errBadFrame
		}
		b = b[n:]
		var v uint64
		var bs []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			bs, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errBadFrame
		}
		b = b[n:]
		if err := fn(num, typ, v, bs); err != nil {
			return err
		}
	}
	return nil
}

// varintField is the varint field want of message b (0 when absent).
func varintField(b []byte, want protowire.Number) (uint64, error) {
	var got uint64
	err := fields(b, func(num protowire.Number, typ protowire.Type, v uint64, _ []byte) error {
		if num == want && typ == protowire.VarintType {
			got = v
		}
		return nil
	})
	return got, err
}

func (f *frame) decode(data []byte) error {
	f.reset()
	return fields(data, func(num protowire.Number, typ protowire.Type, _ uint64, bs []byte) error {
		switch {
		case num == 1 && typ == protowire.BytesType: // event
			f.kind = frameEvent
			return f.decodeEvent(bs)
		case num == 2 && typ == protowire.BytesType: // result
			f.kind = frameResult
			return f.decodeResult(bs)
		}
		return nil
	})
}

func (f *frame) decodeEvent(b []byte) error {
	return fields(b, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
		switch {
		case num == 1 && typ == protowire.VarintType:
			f.eventID = v
		case num == 2 && typ == protowire.BytesType:
			f.chatID = append(f.chatID[:0], bs...)
		case num == 3 && typ == protowire.BytesType: // new_message
			f.eventKind = eventNewMessage
			return fields(bs, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
				switch {
				case num == 2 && typ == protowire.VarintType:
					f.seq = v
				case num == 5 && typ == protowire.BytesType:
					f.text = append(f.text[:0], bs...)
				}
				return nil
			})
		case num == 4 && typ == protowire.BytesType: // chat_update
			f.eventKind = eventOther
		case num == 5 && typ == protowire.BytesType: // inbox_drained
			f.eventKind = eventInboxDrained
			var err error
			f.backlogEvents, err = varintField(bs, 1)
			return err
		case num == 6 && typ == protowire.BytesType: // resync
			f.eventKind = eventResync
			reason, err := varintField(bs, 1)
			f.resyncReason = int32(reason)
			return err
		case num == 7 && typ == protowire.BytesType: // receipt_update
			f.eventKind = eventReceiptUpdate
			return fields(bs, func(num protowire.Number, typ protowire.Type, v uint64, _ []byte) error {
				switch {
				case num == 2 && typ == protowire.VarintType:
					f.deliveredSeq = v
				case num == 3 && typ == protowire.VarintType:
					f.readSeq = v
				}
				return nil
			})
		case num == 8 && typ == protowire.BytesType: // typing_update
			f.eventKind = eventTypingUpdate
			typing, err := varintField(bs, 3)
			f.typing = typing != 0
			return err
		}
		return nil
	})
}

func (f *frame) decodeResult(b []byte) error {
	return fields(b, func(num protowire.Number, typ protowire.Type, _ uint64, bs []byte) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			f.requestID = append(f.requestID[:0], bs...)
		case num == 4 && typ == protowire.BytesType: // send_message
			var err error
			f.sendSeq, err = varintField(bs, 2)
			return err
		case num == 8 && typ == protowire.BytesType: // error
			f.hasError = true
			code, err := varintField(bs, 1)
			f.errorCode = int32(code)
			return err
		case num == 9 && typ == protowire.BytesType: // mark_read
			f.markRead = true
			return fields(bs, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
				switch {
				case num == 1 && typ == protowire.BytesType: // receipt
					var err error
					f.markReadSeq, err = varintField(bs, 3)
					return err
				case num == 2 && typ == protowire.VarintType:
					f.unreadCount = v
				}
				return nil
			})
		}
		return nil
	})
}

// requestEncoder builds a device's ConnectRequest frames, gRPC length prefix included, in one reused buffer: a frame
// is valid until the next one is built (the stream copies it into the connection's buffer).
type requestEncoder struct {
	buf       []byte
	text      []byte
	id        []byte
	ack       *chatv1.AckEventsRequest
	ackFrame  *chatv1.ConnectRequest
	msg       *chatv1.SendMessageRequest
	sendFrame *chatv1.ConnectRequest
	read      *chatv1.MarkReadRequest
	readFrame *chatv1.ConnectRequest
}

// acks is an ack_events frame numbered n ("a<n>"), with answer_errors_only: the server answers it only if it refuses
// it, so an ack costs no frame down the stream (docs/protocol.md, "Acking").
func (e *requestEncoder) acks(n int64, ids []uint64) []byte {
	if e.ackFrame == nil {
		e.ack = &chatv1.AckEventsRequest{}
		e.ackFrame = &chatv1.ConnectRequest{Command: &chatv1.ConnectRequest_AckEvents{AckEvents: e.ack}, AnswerErrorsOnly: true}
	}
	e.id = strconv.AppendInt(append(e.id[:0], 'a'), n, 10)
	e.ackFrame.RequestId = string(e.id)
	e.ack.EventIds = ids
	return e.frame(e.ackFrame)
}

// send is the send_message frame of message k ("s<k>").
func (e *requestEncoder) send(chatID, clientMessageID string, k, due int64, tag string) []byte {
	if e.sendFrame == nil {
		e.msg = &chatv1.SendMessageRequest{ChatId: chatID}
		e.sendFrame = &chatv1.ConnectRequest{Command: &chatv1.ConnectRequest_SendMessage{SendMessage: e.msg}}
		e.text = make([]byte, 0, 128)
	}
	e.id = strconv.AppendInt(append(e.id[:0], 's'), k, 10)
	e.sendFrame.RequestId = string(e.id)
	e.msg.ClientMessageId = clientMessageID
	e.msg.Text = messageText(e.text, due, tag)
	return e.frame(e.sendFrame)
}

// markRead is the mark_read frame numbered n ("m<n>"): the chat read up to seq.
func (e *requestEncoder) markRead(n int64, chatID string, seq uint64) []byte {
	if e.readFrame == nil {
		e.read = &chatv1.MarkReadRequest{}
		e.readFrame = &chatv1.ConnectRequest{Command: &chatv1.ConnectRequest_MarkRead{MarkRead: e.read}}
	}
	e.id = strconv.AppendInt(append(e.id[:0], 'm'), n, 10)
	e.readFrame.RequestId = string(e.id)
	e.read.ChatId = chatID
	e.read.Seq = seq
	return e.frame(e.readFrame)
}

func (e *requestEncoder) frame(m proto.Message) []byte {
	b, err := proto.MarshalOptions{}.MarshalAppend(append(e.buf[:0], 0, 0, 0, 0, 0), m)
	if err != nil {
		panic(err) // these messages always marshal
	}
	binary.BigEndian.PutUint32(b[1:5], uint32(len(b)-5))
	e.buf = b
	return b
}
