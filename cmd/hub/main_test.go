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
