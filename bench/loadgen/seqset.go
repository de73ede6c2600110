package main

// seqSet is a set of a chat's message seqs. Seqs are gap-free from 1 per chat, so a bitmap from the first seq seen
// is small and costs no allocation per message (a map per device would, at every delivery). A seq below the
// bitmap's start (rare: the backlog comes in seq order) goes to a map.
type seqSet struct {
	base  uint64 // seq of words[0]'s bit 0; a multiple of 64
	words []uint64
	low   map[uint64]struct{}
	n     int
}

// add puts seq in the set and says whether it was there already.
func (s *seqSet) add(seq uint64) bool {
	if s.n == 0 {
		s.base = seq &^ 63
		s.words = s.words[:0]
	}
	if seq < s.base {
		if _, ok := s.low[seq]; ok {
			return true
		}
		if s.low == nil {
			s.low = map[uint64]struct{}{}
		}
		s.low[seq] = struct{}{}
		s.n++
		return false
	}
	off := seq - s.base
	w := int(off / 64)
	for w >= len(s.words) {
		s.words = append(s.words, 0)
	}
	bit := uint64(1) << (off % 64)
	if s.words[w]&bit != 0 {
		return true
	}
	s.words[w] |= bit
	s.n++
	return false
}

func (s *seqSet) has(seq uint64) bool {
	if seq < s.base || len(s.words) == 0 {
		_, ok := s.low[seq]
		return ok
	}
	off := seq - s.base
	w := int(off / 64)
	return w < len(s.words) && s.words[w]&(uint64(1)<<(off%64)) != 0
}

// clear empties the set and keeps the bitmap's memory (a stream's set is cleared at every reconnect).
func (s *seqSet) clear() {
	clear(s.words)
	s.words = s.words[:0]
	s.low = nil
	s.n = 0
}

func (s *seqSet) len() int { return s.n }
