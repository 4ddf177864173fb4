package main

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fedgate/fedgate/hub/server"
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
	cfg, _, err := parseFlags([]string{"--listen", "127.0.0.1:0", "--etcd-endpoints", "http://127.0.0.1:1, http://127.0.0.1:2",
		"--etcd-max-txn-ops", "64", "--compile-holdoff", "5ms", "--compile-max-delay", "1s", "--log-level", "debug"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:0" || len(cfg.EtcdEndpoints) != 2 || cfg.EtcdEndpoints[1] != "http://127.0.0.1:2" || cfg.EtcdMaxTxnOps != 64 ||
		cfg.CompileHoldOff != 5*time.Millisecond || cfg.CompileMaxDelay != time.Second {
		t.Fatalf("parsed %+v", cfg)
	}
	if _, _, err := parseFlags([]string{"--compile-holdoff", "1s", "--compile-max-delay", "1ms"}); err == nil ||
		!strings.Contains(err.Error(), "compile-max-delay") {
		t.Fatalf("inconsistent delays: %v", err)
	}
	if _, _, err := parseFlags([]string{"--etcd-max-txn-ops", "0"}); err == nil || !strings.Contains(err.Error(), "etcd-max-txn-ops") {
		t.Fatalf("--etcd-max-txn-ops 0: %v", err)
	}
}
