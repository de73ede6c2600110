package main

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// codec is connect's binary protobuf codec ("proto") with one shortcut: a ConnectResponse read into a *frame is
// decoded by hand, keeping only what loadgen uses, into buffers the frame reuses. The generated decoder allocates
// every message, string and timestamp of every event (ten allocations), which at tens of thousands of events a
// second is a good part of loadgen's CPU. Everything else (requests, unary calls) goes through the generated code.
type codec struct{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("cannot marshal %T", m)
	}
	return proto.Marshal(pm)
}

func (codec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("cannot marshal %T", m)
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, pm)
}

func (codec) Unmarshal(data []byte, m any) error {
	if f, ok := m.(*frame); ok {
		return f.decode(data)
	}
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("cannot unmarshal into %T", m)
	}
	return proto.Unmarshal(data, pm)
}

func (codec) IsBinary() bool { return true }

// Kinds of frame (ConnectResponse.frame) and of event (Event.kind) loadgen tells apart.
const (
	frameNone = iota
	frameEvent
	frameResult
)

const (
	eventOther = iota // ChatUpdate or a kind added later: acked, not counted
	eventNewMessage
	eventInboxDrained
	eventResync
)

// frame is one ConnectResponse as loadgen needs it. Byte fields are copies (the codec's buffer goes back to a pool),
// valid until the next decode into the same frame.
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

	// CommandResult
	requestID []byte
	hasError  bool
	errorCode int32
	sendSeq   uint64
}

var errBadFrame = errors.New("malformed ConnectResponse")

func (f *frame) reset() {
	f.kind, f.eventID, f.eventKind, f.seq, f.backlogEvents, f.resyncReason = frameNone, 0, eventOther, 0, 0, 0
	f.chatID, f.text, f.requestID = f.chatID[:0], f.text[:0], f.requestID[:0]
	f.hasError, f.errorCode, f.sendSeq = false, 0, 0
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
		}
		return nil
	})
}
