package main

import (
	"slices"
	"testing"
)

func TestReadMarksSendTheNewestSeqOfEachChat(t *testing.T) {
	m := newReadMarks()
	if due := m.due(); len(due) != 0 {
		t.Fatalf("nothing printed, due %v", due)
	}
	m.printed("b", 3)
	m.printed("a", 1)
	m.printed("b", 2) // an older message printed later (a backlog) does not lower the mark
	want := []readMark{{"a", 1}, {"b", 3}}
	if due := m.due(); !slices.Equal(due, want) {
		t.Fatalf("due %v; want %v", due, want)
	}
	if due := m.due(); len(due) != 0 {
		t.Fatalf("due again before any answer: %v", due)
	}
}

func TestReadMarksKeepOneUnansweredPerChat(t *testing.T) {
	m := newReadMarks()
	m.printed("a", 1)
	first := m.due()
	m.printed("a", 2)
	m.printed("a", 3)
	m.printed("b", 1) // another chat is not held back by a's
	if due := m.due(); !slices.Equal(due, []readMark{{"b", 1}}) {
		t.Fatalf("while a's MarkRead is unanswered, due %v; want only b's", due)
	}
	m.answered(first[0], true)
	if due := m.due(); !slices.Equal(due, []readMark{{"a", 3}}) {
		t.Fatalf("after the answer, due %v; want a up to its newest seq, 3", due)
	}
}

func TestReadMarksDoNotRepeatARefusedSeq(t *testing.T) {
	m := newReadMarks()
	m.printed("a", 5)
	m.answered(m.due()[0], false)
	if due := m.due(); len(due) != 0 {
		t.Fatalf("a refused seq is due again: %v", due)
	}
	m.printed("a", 6)
	if due := m.due(); !slices.Equal(due, []readMark{{"a", 6}}) {
		t.Fatalf("due %v; want the newer seq", due)
	}
}

func TestReadMarksSendWhatALostStreamLeftUnansweredAgain(t *testing.T) {
	m := newReadMarks()
	m.printed("a", 4)
	m.printed("b", 7)
	due := m.due()
	m.answered(due[0], true) // a answered; b's answer lost with the stream
	m.newStream()
	if due := m.due(); !slices.Equal(due, []readMark{{"b", 7}}) {
		t.Fatalf("on the next stream, due %v; want only b, whose MarkRead was not answered", due)
	}
}
