package server

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedgate/fedgate/hub/pki"
)

// startReplica starts a hub on the etcd of first (as a replica sharing it would) with its own data directory and the
// CA mutate gives it; the caller checks the error.
func startReplica(t *testing.T, first *testHub, mutate func(*Config)) (*Hub, error) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	sharesEtcdOf(first)(&cfg)
	cfg.ShutdownGrace = time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := Start(ctx, cfg)
	if err == nil {
		t.Cleanup(h.Close)
	}
	return h, err
}

// Replicas sharing one etcd sign with one CA (issue 9): the first records its CA in etcd; a replica started without
// --ca-cert/--ca-key, which would create a CA of its own, refuses to start and names those flags; one given the first
// replica's CA starts; a rotated bundle that keeps the recorded CA is recorded, after which the old CA alone is refused.
func TestReplicasAgreeOnOneCA(t *testing.T) {
	first := startHub(t)
	pkiDir := t.TempDir() // the first replica's CA, handed to the others as an operator would
	certPath, keyPath := filepath.Join(pkiDir, "ca.crt"), filepath.Join(pkiDir, "ca.key")
	if err := first.CA().Save(certPath, keyPath); err != nil {
		t.Fatal(err)
	}

	_, err := startReplica(t, first, nil) // its own CA, created in its data directory
	if !errors.Is(err, ErrCAMismatch) {
		t.Fatalf("a replica with its own CA started (err %v); want ErrCAMismatch", err)
	}
	t.Logf("refused as it should be: %v", err)
	for _, want := range []string{"--ca-cert", "--ca-key", first.CA().ActiveHash()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal does not name %q: %v", want, err)
		}
	}

	second, err := startReplica(t, first, func(c *Config) { c.CACert, c.CAKey = certPath, keyPath })
	if err != nil {
		t.Fatalf("a replica with the first one's CA: %v", err)
	}
	if got, want := second.CA().ActiveHash(), first.CA().ActiveHash(); got != want {
		t.Fatalf("second replica signs with %s, first with %s", got, want)
	}
	second.Close()

	// An operator rotates: a new active CA, the recorded one kept in the bundle for the certificates it signed.
	rotated, err := pki.LoadFiles(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := rotated.Rotate(); err != nil {
		t.Fatal(err)
	}
	rotDir := filepath.Join(t.TempDir(), "rotated")
	rotCert, rotKey := filepath.Join(rotDir, "ca.crt"), filepath.Join(rotDir, "ca.key")
	if err := rotated.Save(rotCert, rotKey); err != nil {
		t.Fatal(err)
	}
	third, err := startReplica(t, first, func(c *Config) { c.CACert, c.CAKey = rotCert, rotKey })
	if err != nil {
		t.Fatalf("a replica with a rotated bundle holding the recorded CA: %v", err)
	}
	third.Close()
	_, err = startReplica(t, first, func(c *Config) { c.CACert, c.CAKey = certPath, keyPath })
	if !errors.Is(err, ErrCAMismatch) || !strings.Contains(err.Error(), "rotated out") {
		t.Fatalf("a replica with the CA rotated out: err %v, want ErrCAMismatch saying it was rotated out", err)
	}
}
