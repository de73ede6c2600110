package main

import "slices"

// readMark is one MarkRead command: the chat, read up to seq.
type readMark struct {
	chatID string
	seq    uint64
}

// readMarks decides the MarkRead commands listen sends with --mark-read: a chat is marked read up to the newest
// message printed in it, with at most one MarkRead of a chat unanswered at a time. Messages printed meanwhile only
// raise the seq to mark, and the newest goes once the answer comes, so a busy chat costs one command per round trip,
// not one per message (the server limits MarkRead per device, about 20 a second). Like ackBatch it only decides: it
// sends nothing, so it is tested on its own.
type readMarks struct {
	want    map[string]uint64 // per chat, the newest seq printed
	done    map[string]uint64 // per chat, the highest seq a MarkRead was answered for without an error
	sent    map[string]uint64 // per chat, the seq last sent on this stream (or done before it)
	pending map[string]bool   // chats with a MarkRead unanswered on this stream
}

func newReadMarks() *readMarks {
	return &readMarks{
		want: map[string]uint64{}, done: map[string]uint64{}, sent: map[string]uint64{}, pending: map[string]bool{},
	}
}

// printed records that a message of the chat with this seq was printed.
func (m *readMarks) printed(chatID string, seq uint64) {
	if seq > m.want[chatID] {
		m.want[chatID] = seq
	}
}

// due returns the MarkReads to send now, in chat order, and counts them as unanswered: for each chat without one
// unanswered, the newest seq printed if it was not sent yet.
func (m *readMarks) due() []readMark {
	var marks []readMark
	for chatID, seq := range m.want {
		if !m.pending[chatID] && seq > m.sent[chatID] {
			marks = append(marks, readMark{chatID, seq})
		}
	}
	slices.SortFunc(marks, func(a, b readMark) int {
		if a.chatID < b.chatID {
			return -1
		}
		if a.chatID > b.chatID {
			return 1
		}
		return 0
	})
	for _, mark := range marks {
		m.pending[mark.chatID] = true
		m.sent[mark.chatID] = mark.seq
	}
	return marks
}

// answered takes the answer to a MarkRead; ok is false when it was refused. A refused seq is not sent again on this
// stream (a newer one is, once printed).
func (m *readMarks) answered(mark readMark, ok bool) {
	delete(m.pending, mark.chatID)
	if ok && mark.seq > m.done[mark.chatID] {
		m.done[mark.chatID] = mark.seq
	}
}

// newStream forgets what the last stream left unanswered (it may not have been carried out): what was not answered
// goes again, with the newest seq, on the next stream.
func (m *readMarks) newStream() {
	clear(m.pending)
	clear(m.sent)
	for chatID, seq := range m.done {
		m.sent[chatID] = seq
	}
}
