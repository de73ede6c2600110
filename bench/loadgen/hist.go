package main

import (
	"fmt"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histograms record microseconds from 1 µs to 10 minutes with 3 significant digits: every shard uses the same
// geometry, so merging the encoded histograms is exact.
const (
	histLowestMicros  = 1
	histHighestMicros = 10 * 60 * 1_000_000
	histDigits        = 3
)

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowestMicros, histHighestMicros, histDigits)
}

// record clamps a latency into the histogram's range: a negative value (clocks of two hosts apart) counts as 1 µs,
// one past 10 minutes as 10 minutes, so no sample is dropped and counts stay exact.
func record(h *hdrhistogram.Histogram, micros int64) {
	if micros < histLowestMicros {
		micros = histLowestMicros
	} else if micros > histHighestMicros {
		micros = histHighestMicros
	}
	_ = h.RecordValue(micros)
}

// Latency is a histogram's summary in milliseconds, with the histogram itself (HdrHistogram V2, compressed,
// base64) so that merge can recompute the percentiles exactly.
type Latency struct {
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
	Count int64   `json:"count"`
	HDR   string  `json:"hdr"`
}

func summarize(h *hdrhistogram.Histogram) Latency {
	if h == nil {
		h = newHist()
	}
	ms := func(v int64) float64 { return float64(v) / 1000 }
	encoded, err := h.EncodeV2()
	if err != nil {
		panic(fmt.Sprintf("encoding a histogram: %v", err)) // our own geometry: cannot fail
	}
	l := Latency{Count: h.TotalCount(), HDR: string(encoded)}
	if l.Count > 0 {
		l.P50 = ms(h.ValueAtPercentile(50))
		l.P90 = ms(h.ValueAtPercentile(90))
		l.P99 = ms(h.ValueAtPercentile(99))
		l.P999 = ms(h.ValueAtPercentile(99.9))
		l.Max = ms(h.Max())
	}
	return l
}

// decodeHist reads a Latency's histogram back; an empty one (a result without samples) is an empty histogram.
func decodeHist(l Latency) (*hdrhistogram.Histogram, error) {
	if l.HDR == "" {
		return newHist(), nil
	}
	h, err := hdrhistogram.Decode([]byte(l.HDR))
	if err != nil {
		return nil, err
	}
	if h.TotalCount() != l.Count {
		return nil, fmt.Errorf("histogram holds %d samples, count says %d", h.TotalCount(), l.Count)
	}
	return h, nil
}

// mergeLatencies adds histograms into one of the common geometry and summarizes it.
func mergeLatencies(ls []Latency) (Latency, error) {
	sum := newHist()
	for _, l := range ls {
		h, err := decodeHist(l)
		if err != nil {
			return Latency{}, err
		}
		if dropped := sum.Merge(h); dropped != 0 {
			return Latency{}, fmt.Errorf("%d samples outside the histogram range", dropped)
		}
	}
	return summarize(sum), nil
}

// countAbove is how many samples of h are above limitMicros (by bucket: within the histogram's precision).
func countAbove(h *hdrhistogram.Histogram, limitMicros int64) int64 {
	var n int64
	for _, b := range h.Distribution() {
		if b.From > limitMicros {
			n += b.Count
		}
	}
	return n
}
