package main

import (
	"strconv"
)

// A message text is "<due unix ms>.<µs, 3 digits>|<step tag>|<padding>", about 100 bytes like a typical chat
// message. The receiver reads the due time and the tag back without allocating: latency = arrival - due, counted
// against the step that sent it.
const (
	messageBytes = 100
	padding      = " lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et"
)

// messageText builds the text of a message due at dueMicros (unix µs) in the step tagged tag.
func messageText(buf []byte, dueMicros int64, tag string) string {
	buf = buf[:0]
	buf = strconv.AppendInt(buf, dueMicros/1000, 10)
	frac := dueMicros % 1000
	buf = append(buf, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10), '|')
	buf = append(buf, tag...)
	buf = append(buf, '|')
	if n := messageBytes - len(buf); n > 0 {
		buf = append(buf, padding[:min(n, len(padding))]...)
	}
	return string(buf)
}

// parseText returns the due time (unix µs) and the step tag of a message text; ok is false for a text that is not
// ours. Whole milliseconds ("1796170000000|fill|…", as bench/run.ts writes the drain backlog) are accepted too.
func parseText[T string | []byte](text T) (dueMicros int64, tag T, ok bool) {
	i := 0
	var ms int64
	for ; i < len(text) && text[i] >= '0' && text[i] <= '9'; i++ {
		ms = ms*10 + int64(text[i]-'0')
	}
	if i == 0 || i > 16 {
		return 0, tag, false
	}
	var frac, scale int64 = 0, 1000
	if i < len(text) && text[i] == '.' {
		i++
		for ; i < len(text) && text[i] >= '0' && text[i] <= '9'; i++ {
			if scale > 1 {
				scale /= 10
				frac += int64(text[i]-'0') * scale
			}
		}
	}
	if i >= len(text) || text[i] != '|' {
		return 0, tag, false
	}
	i++
	j := i
	for ; j < len(text) && text[j] != '|'; j++ {
	}
	if j >= len(text) {
		return 0, tag, false
	}
	return ms*1000 + frac, text[i:j], true
}
