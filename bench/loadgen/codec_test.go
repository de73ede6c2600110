package main

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	chatv1 "github.com/palaver-chat/palaver/gen/go/palaver/chat/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var sampleMessage = &chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Event{Event: &chatv1.Event{
	EventId: 123456789, ChatId: "0b3c6d2e-1111-2222-3333-444455556666",
	Kind: &chatv1.Event_NewMessage{NewMessage: &chatv1.NewMessage{
		MessageId: "9b3c6d2e-1111-2222-3333-444455556666", Seq: 42, SenderUserId: "run-g1-u1", SenderDeviceId: "d0",
		Text:        "1796170000000.123|warmup| lorem ipsum",
		Attachments: []*chatv1.Attachment{{AttachmentId: "x", SizeBytes: 5}},
		SentAt:      timestamppb.Now(), ClientMessageId: "lg1-0-17",
	}},
}}}

// The hand decoder reads what the generated encoder writes.
func TestFrameDecodesWhatProtobufEncodes(t *testing.T) {
	var f frame
	decode := func(m *chatv1.ConnectResponse) {
		t.Helper()
		raw, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.decode(raw); err != nil {
			t.Fatal(err)
		}
	}
	decode(sampleMessage)
	if f.kind != frameEvent || f.eventKind != eventNewMessage || f.eventID != 123456789 || f.seq != 42 ||
		string(f.chatID) != "0b3c6d2e-1111-2222-3333-444455556666" || string(f.text) != "1796170000000.123|warmup| lorem ipsum" {
		t.Errorf("new message: %+v", f)
	}
	decode(&chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Event{Event: &chatv1.Event{
		Kind: &chatv1.Event_InboxDrained{InboxDrained: &chatv1.InboxDrained{BacklogEvents: 77}}}}})
	if f.kind != frameEvent || f.eventKind != eventInboxDrained || f.backlogEvents != 77 || f.eventID != 0 || len(f.text) != 0 {
		t.Errorf("drained: %+v", f)
	}
	decode(&chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Event{Event: &chatv1.Event{
		Kind: &chatv1.Event_Resync{Resync: &chatv1.Resync{Reason: chatv1.ResyncReason_RESYNC_REASON_INBOX_OVERFLOW}}}}})
	if f.eventKind != eventResync || f.resyncReason != 2 {
		t.Errorf("resync: %+v", f)
	}
	decode(&chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Event{Event: &chatv1.Event{EventId: 5, ChatId: "c",
		Kind: &chatv1.Event_ChatUpdate{ChatUpdate: &chatv1.ChatUpdate{Chat: &chatv1.Chat{ChatId: "c", LastSeq: 9}}}}}})
	if f.eventKind != eventOther || f.eventID != 5 || f.seq != 0 {
		t.Errorf("chat update: %+v", f)
	}
	decode(&chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Result{Result: &chatv1.CommandResult{RequestId: "s12",
		Outcome: &chatv1.CommandResult_SendMessage{SendMessage: &chatv1.SendMessageResponse{MessageId: "m", Seq: 1234, SentAt: timestamppb.Now()}}}}})
	if f.kind != frameResult || string(f.requestID) != "s12" || f.sendSeq != 1234 || f.hasError {
		t.Errorf("send result: %+v", f)
	}
	decode(&chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Result{Result: &chatv1.CommandResult{RequestId: "a3",
		Outcome: &chatv1.CommandResult_Error{Error: &chatv1.CommandError{Code: 8, Message: "slow down"}}}}})
	if f.kind != frameResult || string(f.requestID) != "a3" || !f.hasError || f.errorCode != 8 {
		t.Errorf("error result: %+v", f)
	}
	if err := f.decode([]byte{0x0a, 0x05, 0x08}); err == nil {
		t.Error("a truncated frame decoded")
	}
}

// The kinds the receipts protocol added: ReceiptUpdate and TypingUpdate events (never stored: event_id 0), the
// mark_read answer, and a ChatUpdate whose chat carries receipts.
func TestFrameDecodesReceiptsAndTyping(t *testing.T) {
	var f frame
	decode := func(m *chatv1.ConnectResponse) {
		t.Helper()
		raw, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.decode(raw); err != nil {
			t.Fatal(err)
		}
	}
	chat := "0b3c6d2e-1111-2222-3333-444455556666"
	decode(sampleMessage) // leaves fields set: the next decodes must reset them
	decode(&chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Event{Event: &chatv1.Event{ChatId: chat,
		Kind: &chatv1.Event_ReceiptUpdate{ReceiptUpdate: &chatv1.ReceiptUpdate{UserId: "bob", DeliveredSeq: 9, ReadSeq: 7}}}}})
	if f.kind != frameEvent || f.eventKind != eventReceiptUpdate || f.eventID != 0 || string(f.chatID) != chat ||
		f.deliveredSeq != 9 || f.readSeq != 7 || f.seq != 0 || len(f.text) != 0 {
		t.Errorf("receipt update: %+v", f)
	}
	decode(&chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Event{Event: &chatv1.Event{ChatId: chat,
		Kind: &chatv1.Event_TypingUpdate{TypingUpdate: &chatv1.TypingUpdate{UserId: "bob", DeviceId: "phone", Typing: true,
			LapseAfter: durationpb.New(6 * time.Second)}}}}})
	if f.eventKind != eventTypingUpdate || f.eventID != 0 || !f.typing || f.deliveredSeq != 0 || f.readSeq != 0 {
		t.Errorf("typing update: %+v", f)
	}
	decode(&chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Event{Event: &chatv1.Event{ChatId: chat,
		Kind: &chatv1.Event_TypingUpdate{TypingUpdate: &chatv1.TypingUpdate{UserId: "bob", DeviceId: "phone"}}}}})
	if f.eventKind != eventTypingUpdate || f.typing {
		t.Errorf("typing stopped: %+v", f)
	}
	decode(&chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Result{Result: &chatv1.CommandResult{RequestId: "m3",
		Outcome: &chatv1.CommandResult_MarkRead{MarkRead: &chatv1.MarkReadResponse{
			Receipt: &chatv1.Receipt{UserId: "alice", DeliveredSeq: 12, ReadSeq: 11}, UnreadCount: 2}}}}})
	if f.kind != frameResult || string(f.requestID) != "m3" || !f.markRead || f.markReadSeq != 11 || f.unreadCount != 2 || f.hasError {
		t.Errorf("mark_read result: %+v", f)
	}
	decode(&chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Result{Result: &chatv1.CommandResult{RequestId: "m4",
		Outcome: &chatv1.CommandResult_Error{Error: &chatv1.CommandError{Code: 3, Message: "seq beyond last_seq"}}}}})
	if string(f.requestID) != "m4" || f.markRead || !f.hasError || f.errorCode != 3 {
		t.Errorf("mark_read error: %+v", f)
	}
	decode(&chatv1.ConnectResponse{Frame: &chatv1.ConnectResponse_Event{Event: &chatv1.Event{EventId: 8, ChatId: chat,
		Kind: &chatv1.Event_ChatUpdate{ChatUpdate: &chatv1.ChatUpdate{Chat: &chatv1.Chat{ChatId: chat, LastSeq: 4,
			Receipts: []*chatv1.Receipt{{UserId: "alice", DeliveredSeq: 4, ReadSeq: 4}}, UnreadCount: 1}}}}}})
	if f.eventKind != eventOther || f.eventID != 8 || f.seq != 0 || f.readSeq != 0 {
		t.Errorf("chat update with receipts: %+v", f)
	}
}

// readRequest checks that b is one gRPC message (uncompressed, length-prefixed) and reads the ConnectRequest in it
// with the generated code.
func readRequest(t *testing.T, b []byte) *chatv1.ConnectRequest {
	t.Helper()
	if len(b) < 5 || b[0] != 0 || int(binary.BigEndian.Uint32(b[1:5])) != len(b)-5 {
		t.Fatalf("not one uncompressed gRPC message: % x", b)
	}
	var m chatv1.ConnectRequest
	if err := proto.Unmarshal(b[5:], &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

// A mark_read frame is the ConnectRequest the generated code reads, and building other frames in between does not
// change what it carries.
func TestMarkReadFrameEncoding(t *testing.T) {
	var e requestEncoder
	chat := "0b3c6d2e-1111-2222-3333-444455556666"
	want := &chatv1.ConnectRequest{RequestId: "m7", Command: &chatv1.ConnectRequest_MarkRead{
		MarkRead: &chatv1.MarkReadRequest{ChatId: chat, Seq: 42}}}
	if got := readRequest(t, e.markRead(7, chat, 42)); !proto.Equal(got, want) {
		t.Errorf("mark_read frame: %v, want %v", got, want)
	}
	_ = e.acks(1, []uint64{5, 6})
	_ = e.send(chat, "lg1-0-1", 1, 1796170000000123, "warmup")
	want.RequestId, want.GetMarkRead().Seq = "m8", 1<<40
	if got := readRequest(t, e.markRead(8, chat, 1<<40)); !proto.Equal(got, want) {
		t.Errorf("mark_read frame after others: %v, want %v", got, want)
	}
}

// Every ack_events frame asks to be answered only if it is refused (answer_errors_only), and carries only its own ids.
func TestAckFrameEncoding(t *testing.T) {
	var e requestEncoder
	for n, ids := range [][]uint64{{5, 6}, {1 << 40}} {
		want := &chatv1.ConnectRequest{RequestId: fmt.Sprintf("a%d", n+1), AnswerErrorsOnly: true,
			Command: &chatv1.ConnectRequest_AckEvents{AckEvents: &chatv1.AckEventsRequest{EventIds: ids}}}
		if got := readRequest(t, e.acks(int64(n+1), ids)); !proto.Equal(got, want) {
			t.Errorf("ack frame: %v, want %v", got, want)
		}
		_ = e.send("chat", "lg1-0-1", 1, 1796170000000123, "warmup")
	}
}

func BenchmarkFrameDecode(b *testing.B) {
	raw, _ := proto.Marshal(sampleMessage)
	var f frame
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = f.decode(raw)
	}
}

func BenchmarkGeneratedDecode(b *testing.B) {
	raw, _ := proto.Marshal(sampleMessage)
	var m chatv1.ConnectResponse
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = proto.Unmarshal(raw, &m)
	}
}
