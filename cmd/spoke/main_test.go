package main

import (
	"strings"
	"testing"
)

func TestParseLabels(t *testing.T) {
	got, err := parseLabels(" region=eu , tier=edge,empty=")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["region"] != "eu" || got["tier"] != "edge" || got["empty"] != "" {
		t.Fatalf("parseLabels = %v", got)
	}
	if got, err := parseLabels(""); got != nil || err != nil {
		t.Fatalf("empty: %v, %v", got, err)
	}
	for _, bad := range []string{"novalue", "=x", "a=1,a=2"} {
		if _, err := parseLabels(bad); err == nil {
			t.Errorf("parseLabels(%q) accepted", bad)
		}
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--hub", "127.0.0.1:1"}, "--credentials-dir is required with --hub"},
		{[]string{}, "--cluster is required"},
		{[]string{"--hub", "127.0.0.1:1", "--credentials-dir", "/nonexistent/creds"}, "--credentials-dir"},
		{[]string{"--cluster", "a", "--labels", "x"}, "--labels"},
		{[]string{"--cluster", "a", "--log-level", "loud"}, "--log-level"},
		{[]string{"--cluster", "a", "--port-offset", "-3"}, "--port-offset"},
		{[]string{"--static-config", "/nonexistent/cfg.json"}, "--static-config"},
		{[]string{"--cluster", "a", "--hub", "nohostport"}, "--credentials-dir is required"},
	} {
		err := run(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("run(%q) = %v, want an error containing %q", tc.args, err, tc.wantErr)
		}
	}
}
