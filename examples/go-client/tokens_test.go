package main

import (
	"encoding/base64"
	"testing"
	"time"
)

// unsigned builds a token with these claims; renewalTime reads them without checking the signature.
func unsigned(claims string) string {
	return "e30." + base64.RawURLEncoding.EncodeToString([]byte(claims)) + ".sig"
}

func TestRenewalTimeIsAQuarterOfTheLifetimeBeforeExpiryAtMostAMinute(t *testing.T) {
	for _, c := range []struct {
		claims string
		want   time.Time
	}{
		{`{"iat":1000,"exp":1010}`, time.UnixMilli(1007_500)},
		{`{"iat":0,"exp":43200}`, time.Unix(43200-60, 0)},
		{`{"exp":500}`, time.Unix(500, 0)},
	} {
		if at, ok := renewalTime(unsigned(c.claims)); !ok || !at.Equal(c.want) {
			t.Errorf("renewalTime(%s) = %v, %v; want %v", c.claims, at, ok, c.want)
		}
	}
}

func TestRenewalTimeNeedsAnExpiry(t *testing.T) {
	for _, token := range []string{unsigned(`{"iat":1000}`), "garbage", "a.!!!.c", unsigned(`not json`)} {
		if _, ok := renewalTime(token); ok {
			t.Errorf("renewalTime(%q) is ok", token)
		}
	}
}
