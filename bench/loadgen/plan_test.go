package main

import (
	"strings"
	"testing"
)

func TestPlanValidation(t *testing.T) {
	good := func() *Plan {
		return &Plan{Scenario: "steady", URLs: []string{"http://127.0.0.1:1"},
			Devices: []PlanDevice{{Token: "t", ChatID: "c", Sends: true}},
			Steps:   []Step{{Tag: "warmup", Rate: 10, Seconds: 1}, {Tag: "10", Rate: 10, Seconds: 2}}}
	}
	p := good()
	if err := p.validate(); err != nil {
		t.Fatal(err)
	}
	if p.InFlightPerSender != 4 || p.ConnectTimeoutSeconds != 300 || !p.Devices[0].online() || p.sendSeconds() != 3 {
		t.Errorf("defaults: %+v", p)
	}
	for name, breakIt := range map[string]func(*Plan){
		"scenario":   func(p *Plan) { p.Scenario = "soak" },
		"no urls":    func(p *Plan) { p.URLs = nil },
		"https":      func(p *Plan) { p.URLs = []string{"https://x"} },
		"no devices": func(p *Plan) { p.Devices = nil },
		"no token":   func(p *Plan) { p.Devices[0].Token = "" },
		"no chat":    func(p *Plan) { p.Devices[0].ChatID = "" },
		"tag twice":  func(p *Plan) { p.Steps[1].Tag = "warmup" },
		"tag pipe":   func(p *Plan) { p.Steps[1].Tag = "a|b" },
		"long tag":   func(p *Plan) { p.Steps[1].Tag = strings.Repeat("x", 33) },
		"no seconds": func(p *Plan) { p.Steps[1].Seconds = 0 },
		"negative":   func(p *Plan) { p.HoldSeconds = -1 },
	} {
		p := good()
		breakIt(p)
		if err := p.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c := good()
	c.Scenario = "churn"
	if err := c.validate(); err != nil || c.Churn == nil || c.Churn.EverySeconds != 1 || c.Churn.Fraction != 0.05 {
		t.Errorf("churn defaults: %v %+v", err, c.Churn)
	}
	if p.MarkRead {
		t.Error("steady marks read without markRead")
	}
	rc := good()
	rc.Scenario = "receipts"
	if err := rc.validate(); err != nil || !rc.MarkRead {
		t.Errorf("receipts: %v, markRead %v (the scenario implies it)", err, rc.MarkRead)
	}
}

func TestShardArgument(t *testing.T) {
	if i, n, err := parseShard("1/3"); err != nil || i != 1 || n != 3 {
		t.Errorf("1/3: %d %d %v", i, n, err)
	}
	for _, bad := range []string{"3/3", "-1/2", "1", "a/b", "0/0"} {
		if _, _, err := parseShard(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
