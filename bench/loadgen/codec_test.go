package main

import (
	"testing"

	chatv1 "github.com/palaver-chat/palaver/gen/go/palaver/chat/v1"
	"google.golang.org/protobuf/proto"
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
