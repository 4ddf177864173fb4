package main

import (
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/fedgate/fedgate/hub/server"
	"github.com/fedgate/fedgate/internal/testio"
	"github.com/fedgate/fedgate/internal/version"
)

func TestFlagDefaultsAreConfigDefaults(t *testing.T) {
	cfg, level, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := server.DefaultConfig()
	// The one flag default that is not the library's: the admin credential goes where hubctl looks for it.
	want.AdminConfig = defaultAdminConfig()
	if !strings.HasSuffix(cfg.AdminConfig, "/.fedgate/config") {
		t.Fatalf("--admin-config default %q, want ~/.fedgate/config", cfg.AdminConfig)
	}
	if !reflect.DeepEqual(cfg, want) || level != "info" {
		t.Fatalf("flags without arguments give %+v (level %s), want %+v", cfg, level, want)
	}
}

func TestFlags(t *testing.T) {
	cfg, _, err := parseFlags([]string{"--listen", "127.0.0.1:0", "--etcd-endpoints", "https://127.0.0.1:1, https://127.0.0.1:2",
		"--etcd-ca", "ca.crt", "--etcd-cert", "tls.crt", "--etcd-key", "tls.key", "--key-encryption-key-file", "kek",
		"--etcd-max-txn-ops", "64", "--compile-holdoff", "5ms", "--compile-max-delay", "1s", "--log-level", "debug"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:0" || len(cfg.EtcdEndpoints) != 2 || cfg.EtcdEndpoints[1] != "https://127.0.0.1:2" || cfg.EtcdMaxTxnOps != 64 ||
		cfg.EtcdCA != "ca.crt" || cfg.EtcdCert != "tls.crt" || cfg.EtcdKey != "tls.key" || cfg.KeyEncryptionKeyFile != "kek" ||
		cfg.CompileHoldOff != 5*time.Millisecond || cfg.CompileMaxDelay != time.Second {
		t.Fatalf("parsed %+v", cfg)
	}
	// An external etcd: https needs --etcd-ca, and every replica the same --key-encryption-key-file.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--etcd-endpoints", "https://127.0.0.1:1", "--key-encryption-key-file", "kek"}, "etcd-ca"},
		{[]string{"--etcd-endpoints", "https://127.0.0.1:1", "--etcd-ca", "ca.crt", "--etcd-cert", "tls.crt", "--key-encryption-key-file", "kek"}, "etcd-key"},
		{[]string{"--etcd-endpoints", "http://127.0.0.1:1", "--etcd-ca", "ca.crt", "--key-encryption-key-file", "kek"}, "use https://"},
		{[]string{"--etcd-endpoints", "https://127.0.0.1:1", "--etcd-ca", "ca.crt"}, "key-encryption-key-file"},
		{[]string{"--etcd-ca", "ca.crt"}, "only with etcd-endpoints"},
	} {
		if _, _, err := parseFlags(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
	if _, _, err := parseFlags([]string{"--compile-holdoff", "1s", "--compile-max-delay", "1ms"}); err == nil ||
		!strings.Contains(err.Error(), "compile-max-delay") {
		t.Fatalf("inconsistent delays: %v", err)
	}
	if _, _, err := parseFlags([]string{"--etcd-max-txn-ops", "0"}); err == nil || !strings.Contains(err.Error(), "etcd-max-txn-ops") {
		t.Fatalf("--etcd-max-txn-ops 0: %v", err)
	}
}

// -h and --help ask for the usage: printed, exit 0. --version prints the build's version, exit 0.
func TestHelpAndVersionExitZero(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		var code int
		_, stderr := testio.Capture(t, func() { code = realMain([]string{arg}) })
		if code != 0 || !strings.Contains(stderr, "-advertise-address") || strings.Contains(stderr, "hub: flag: help requested") {
			t.Errorf("hub %s: exit %d, stderr:\n%s", arg, code, stderr)
		}
	}
	var code int
	stdout, stderr := testio.Capture(t, func() { code = realMain([]string{"--version"}) })
	if code != 0 || stdout != version.String("hub")+"\n" || stderr != "" {
		t.Errorf("hub --version: exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, version.String("hub"))
	}
	_, stderr = testio.Capture(t, func() { code = realMain([]string{"--no-such-flag"}) })
	if code != 1 || !strings.Contains(stderr, "no-such-flag") {
		t.Errorf("hub --no-such-flag: exit %d, stderr %q", code, stderr)
	}
}

// Every flag in -h shows its type as the value's placeholder (or a deliberate upper-case one): flag.PrintDefaults
// takes a backquoted word of the usage string as the placeholder, which turned `hubctl join` into one.
func TestUsagePlaceholders(t *testing.T) {
	_, stderr := testio.Capture(t, func() { realMain([]string{"-h"}) })
	checkPlaceholders(t, stderr)
}

func checkPlaceholders(t *testing.T, usage string) {
	t.Helper()
	line := regexp.MustCompile(`(?m)^  -(\S+)(?: (.*))?$`)
	typeNames := map[string]bool{"": true, "string": true, "int": true, "uint": true, "int64": true, "uint64": true,
		"float": true, "duration": true, "value": true}
	upper := regexp.MustCompile(`^[A-Z][A-Z0-9_:.-]*$`)
	flags := line.FindAllStringSubmatch(usage, -1)
	if len(flags) < 5 {
		t.Fatalf("usage lists %d flags:\n%s", len(flags), usage)
	}
	for _, m := range flags {
		if !typeNames[m[2]] && !upper.MatchString(m[2]) {
			t.Errorf("-%s shows the placeholder %q: a backquoted phrase in its usage string?", m[1], m[2])
		}
	}
}

// The hub routes controller-runtime's logs (the hub-cluster mirror) into its own log: without a logger set,
// controller-runtime prints a stack trace saying it was never set, and drops every log line.
func TestControllerRuntimeLogsIntoTheHubLog(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	var code int
	_, stderr := testio.Capture(t, func() {
		// Fails at the CA, after the logger is set up and before anything is started.
		code = realMain([]string{"--ca-cert", missing + ".crt", "--ca-key", missing + ".key", "--data-dir", t.TempDir()})
		ctrllog.Log.WithName("probe").Info("from controller-runtime")
	})
	if code != 1 || !strings.Contains(stderr, "hub CA") {
		t.Fatalf("hub with a missing CA: exit %d, stderr:\n%s", code, stderr)
	}
	if !regexp.MustCompile(`level=INFO msg="from controller-runtime" app=hub logger=probe`).MatchString(stderr) {
		t.Errorf("controller-runtime's log line is not in the hub's log:\n%s", stderr)
	}
	if !strings.Contains(stderr, "version="+version.Version()) {
		t.Errorf("the hub's first log line does not say its version:\n%s", stderr)
	}
}
