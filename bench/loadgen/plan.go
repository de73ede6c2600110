package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
)

// Plan is what bench/run.ts writes for one run (README.md, "The plan"). Every shard reads the same plan.
type Plan struct {
	Scenario              string       `json:"scenario"`
	URLs                  []string     `json:"urls"`
	Devices               []PlanDevice `json:"devices"`
	RecipientsPerSend     int          `json:"recipientsPerSend"`
	StartAtMs             int64        `json:"startAtMs"`
	Steps                 []Step       `json:"steps"`
	HoldSeconds           float64      `json:"holdSeconds"`
	StopAboveP99Ms        float64      `json:"stopAboveP99Ms"`
	InFlightPerSender     int          `json:"inFlightPerSender"`
	AckDelayMs            float64      `json:"ackDelayMs"`
	MarkRead              bool         `json:"markRead"` // receivers mark their chat read (README.md); receipts implies it
	Churn                 *Churn       `json:"churn"`
	ConnectTimeoutSeconds float64      `json:"connectTimeoutSeconds"`
	Watch                 Watch        `json:"watch"`
}

// PlanDevice is one device of the run. Online defaults to true when absent: a device listed without it connects.
type PlanDevice struct {
	Token  string `json:"token"`
	ChatID string `json:"chatId"`
	Sends  bool   `json:"sends"`
	Online *bool  `json:"online"`
}

func (d PlanDevice) online() bool { return d.Online == nil || *d.Online }

// Step is one stretch of the send plan at a fixed total rate (sends/s over all shards).
type Step struct {
	Tag     string  `json:"tag"`
	Rate    float64 `json:"rate"`
	Seconds float64 `json:"seconds"`
}

// Churn says how often, and what share of the connections, drop and reconnect while sending runs.
type Churn struct {
	EverySeconds float64 `json:"everySeconds"`
	Fraction     float64 `json:"fraction"`
}

// Watch lists the pids whose CPU (with their children's: see cpuSecondsOf) and, for the server, memory shard 0 samples.
type Watch struct {
	Server   []int `json:"server"`
	Postgres []int `json:"postgres"` // the postmaster: its backends are its children
	Redis    []int `json:"redis"`
	Haproxy  []int `json:"haproxy"`
}

var scenarios = []string{"steady", "receipts", "ramp", "groups100", "drain", "connections", "connect", "churn"}

// maxTagLen keeps a step tag small: it travels in every message text and is looked up per delivery.
const maxTagLen = 32

func loadPlan(path string) (*Plan, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p Plan
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("plan %s: %w", path, err)
	}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("plan %s: %w", path, err)
	}
	return &p, nil
}

// validate rejects a plan the run cannot follow and fills the defaults README.md documents.
func (p *Plan) validate() error {
	known := false
	for _, s := range scenarios {
		known = known || s == p.Scenario
	}
	if !known {
		return fmt.Errorf("unknown scenario %q (want one of %s)", p.Scenario, strings.Join(scenarios, ", "))
	}
	if len(p.URLs) == 0 {
		return errors.New("no urls")
	}
	for _, u := range p.URLs {
		if !strings.HasPrefix(u, "http://") {
			return fmt.Errorf("url %q: only http:// (h2c) is supported", u)
		}
	}
	if len(p.Devices) == 0 {
		return errors.New("no devices")
	}
	for i, d := range p.Devices {
		if d.Token == "" {
			return fmt.Errorf("device %d has no token", i)
		}
		if d.Sends && d.ChatID == "" {
			return fmt.Errorf("device %d sends but has no chatId", i)
		}
	}
	tags := map[string]bool{}
	for i, s := range p.Steps {
		if s.Tag == "" || len(s.Tag) > maxTagLen || strings.ContainsAny(s.Tag, "|") {
			return fmt.Errorf("step %d: tag %q must be 1-%d characters without '|'", i, s.Tag, maxTagLen)
		}
		if tags[s.Tag] {
			return fmt.Errorf("step %d: tag %q used twice (a delivery is counted against its step by tag)", i, s.Tag)
		}
		tags[s.Tag] = true
		if s.Rate < 0 || math.IsNaN(s.Rate) || math.IsInf(s.Rate, 0) || !(s.Seconds > 0) || math.IsInf(s.Seconds, 0) {
			return fmt.Errorf("step %d (%s): rate must be >= 0 and seconds > 0", i, s.Tag)
		}
	}
	if p.HoldSeconds < 0 || p.StopAboveP99Ms < 0 || p.AckDelayMs < 0 || p.ConnectTimeoutSeconds < 0 || p.RecipientsPerSend < 0 {
		return errors.New("holdSeconds, stopAboveP99Ms, ackDelayMs, connectTimeoutSeconds and recipientsPerSend must not be negative")
	}
	if p.InFlightPerSender <= 0 {
		p.InFlightPerSender = 4
	}
	if p.ConnectTimeoutSeconds == 0 {
		p.ConnectTimeoutSeconds = 300
	}
	if p.Scenario == "receipts" {
		p.MarkRead = true
	}
	if p.Scenario == "churn" {
		if p.Churn == nil {
			p.Churn = &Churn{}
		}
		if p.Churn.EverySeconds <= 0 {
			p.Churn.EverySeconds = 1
		}
		if p.Churn.Fraction <= 0 || p.Churn.Fraction > 1 {
			p.Churn.Fraction = 0.05
		}
	}
	return nil
}

// onlineDevices counts the devices of the whole run that connect (all shards).
func (p *Plan) onlineDevices() int {
	n := 0
	for _, d := range p.Devices {
		if d.online() {
			n++
		}
	}
	return n
}

// sendingDevices counts the online devices of the whole run that send (all shards): the rate is shared over them.
func (p *Plan) sendingDevices() int {
	n := 0
	for _, d := range p.Devices {
		if d.online() && d.Sends {
			n++
		}
	}
	return n
}

// sendSeconds is how long the send plan runs from startAtMs.
func (p *Plan) sendSeconds() float64 {
	s := 0.0
	for _, st := range p.Steps {
		s += st.Seconds
	}
	return s
}
