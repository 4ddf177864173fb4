package main

import (
	"regexp"
	"strings"
	"testing"

	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/fedgate/fedgate/internal/testio"
	"github.com/fedgate/fedgate/internal/version"
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
		{[]string{"--hub", "127.0.0.1:1"}, "--credentials-dir or --credentials-secret is required with --hub"},
		{[]string{"--hub", "127.0.0.1:1", "--credentials-dir", "d", "--credentials-secret", "ns/s"}, "give one"},
		{[]string{"--hub", "127.0.0.1:1", "--credentials-secret", "ns/s"}, "--credentials-secret needs --kubernetes"},
		{[]string{}, "--cluster is required"},
		{[]string{"--hub", "127.0.0.1:1", "--credentials-dir", "/nonexistent/creds"}, "--credentials-dir"},
		{[]string{"--cluster", "a", "--labels", "x"}, "--labels"},
		{[]string{"--cluster", "a", "--log-level", "loud"}, "--log-level"},
		{[]string{"--cluster", "a", "--port-offset", "-3"}, "--port-offset"},
		{[]string{"--cluster", "a", "--health-check-path", "healthz"}, "--health-check-*: health check path"},
		{[]string{"--cluster", "a", "--health-check-timeout", "0"}, "--health-check-timeout and the thresholds must be positive"},
		{[]string{"--cluster", "a", "--health-check-interval", "-1s"}, "--health-check-*: health check interval"},
		{[]string{"--static-config", "/nonexistent/cfg.json"}, "--static-config"},
		{[]string{"--cluster", "a", "--hub", "nohostport"}, "--credentials-dir or --credentials-secret is required"},
	} {
		err := run(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("run(%q) = %v, want an error containing %q", tc.args, err, tc.wantErr)
		}
	}
}

// -h and --help ask for the usage: printed, exit 0. --version prints the build's version, exit 0.
func TestHelpAndVersionExitZero(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		var code int
		_, stderr := testio.Capture(t, func() { code = realMain([]string{arg}) })
		if code != 0 || !strings.Contains(stderr, "-credentials-dir") {
			t.Errorf("spoke %s: exit %d, stderr:\n%s", arg, code, stderr)
		}
	}
	var code int
	stdout, stderr := testio.Capture(t, func() { code = realMain([]string{"--version"}) })
	if code != 0 || stdout != version.String("spoke")+"\n" || stderr != "" {
		t.Errorf("spoke --version: exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, version.String("spoke"))
	}
	_, stderr = testio.Capture(t, func() { code = realMain([]string{"--no-such-flag"}) })
	if code != 1 || !strings.Contains(stderr, "no-such-flag") {
		t.Errorf("spoke --no-such-flag: exit %d, stderr %q", code, stderr)
	}
}

// Every flag in --help shows its type as the value's placeholder (or a deliberate upper-case one): flag.PrintDefaults
// takes a backquoted word of the usage string as the placeholder, which printed "-credentials-dir hubctl join".
func TestUsagePlaceholders(t *testing.T) {
	_, usage := testio.Capture(t, func() { realMain([]string{"--help"}) })
	line := regexp.MustCompile(`(?m)^  -(\S+)(?: (.*))?$`)
	typeNames := map[string]bool{"": true, "string": true, "int": true, "uint": true, "int64": true, "uint64": true,
		"float": true, "duration": true, "value": true}
	upper := regexp.MustCompile(`^[A-Z][A-Z0-9_:.-]*$`)
	flags := line.FindAllStringSubmatch(usage, -1)
	if len(flags) < 10 {
		t.Fatalf("usage lists %d flags:\n%s", len(flags), usage)
	}
	for _, m := range flags {
		if !typeNames[m[2]] && !upper.MatchString(m[2]) {
			t.Errorf("-%s shows the placeholder %q: a backquoted phrase in its usage string?", m[1], m[2])
		}
	}
}

// The spoke routes controller-runtime's logs (its Kubernetes source and status writer) into its own log: without a
// logger set, controller-runtime prints a stack trace at shutdown saying it was never set, and drops every log line.
func TestControllerRuntimeLogsIntoTheSpokeLog(t *testing.T) {
	var code int
	_, stderr := testio.Capture(t, func() {
		// Refused after the logger is set up, before anything starts.
		code = realMain([]string{"--cluster", "a", "--port-offset", "-3"})
	})
	if code != 1 || !strings.Contains(stderr, "--port-offset") || !strings.Contains(stderr, "version="+version.Version()) {
		t.Fatalf("spoke --port-offset -3: exit %d, stderr:\n%s", code, stderr)
	}
	// controller-runtime keeps the first logger it is given (an earlier test may have run the spoke): what matters is
	// that it has one, which a NullLogSink (the default, and what it falls back to after its warning) is not.
	if !ctrllog.Log.Enabled() {
		t.Error("controller-runtime has no logger after the spoke started: its log lines are dropped")
	}
}
