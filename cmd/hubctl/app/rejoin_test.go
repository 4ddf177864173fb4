package app

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedgate/fedgate/hub/server"
)

// tokenJoin runs `hubctl token create ARGS...` against the hub whose admin config is cfg and returns the --token and
// --ca-hash of the join command it printed.
func tokenJoin(t *testing.T, cfg string, args ...string) (token, caHash string) {
	t.Helper()
	stdout, stderr, code := hubctl(t, "", append([]string{"--config", cfg, "token", "create"}, args...)...)
	if code != 0 {
		t.Fatalf("token create %v: exit %d: %s", args, code, stderr)
	}
	f := strings.Fields(stdout[strings.Index(stdout, "hubctl join "):])
	for i := 0; i+1 < len(f); i++ {
		switch f[i] {
		case "--token":
			token = f[i+1]
		case "--ca-hash":
			caHash = f[i+1]
		}
	}
	return token, caHash
}

// The operator's view of issue 9's takeover: a token created without --cluster-name cannot join as a member that
// exists, the refusal says how to re-join, and `token create --cluster-name west --rejoin` does it.
func TestJoinAsAnExistingClusterNeedsARejoinToken(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(t.TempDir(), "hub-data")
	cfg.AdminConfig = filepath.Join(t.TempDir(), "admin-config")
	cfg.ShutdownGrace = time.Second
	h, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	join := func(token, caHash string) (string, int) {
		_, stderr, code := hubctl(t, "", "join", "--hub", h.AdvertiseAddress(), "--token", token, "--ca-hash", caHash,
			"--cluster-name", "west", "--out", filepath.Join(t.TempDir(), "west"))
		return stderr, code
	}

	if stderr, code := join(tokenJoin(t, cfg.AdminConfig)); code != 0 {
		t.Fatalf("first join of west: exit %d: %s", code, stderr)
	}
	tok, hash := tokenJoin(t, cfg.AdminConfig, "--usages", "2")
	stderr, code := join(tok, hash)
	if code != 1 || !strings.Contains(stderr, `cluster "west" is already joined`) || !strings.Contains(stderr, "--cluster-name west --rejoin") {
		t.Fatalf("an unbound token joining as west: exit %d, stderr %q; want a refusal saying how to re-join", code, stderr)
	}
	if _, stderr, code := hubctl(t, "", "--config", cfg.AdminConfig, "token", "create", "--rejoin"); code != 1 || !strings.Contains(stderr, "--rejoin: needs --cluster-name") {
		t.Fatalf("token create --rejoin without a name: exit %d, stderr %q", code, stderr)
	}
	rejoinTok, hash := tokenJoin(t, cfg.AdminConfig, "--cluster-name", "west", "--rejoin")
	stdout, _, _ := hubctl(t, "", "--config", cfg.AdminConfig, "token", "list")
	if !strings.Contains(stdout, "west (rejoin)") {
		t.Errorf("token list does not mark the re-join token:\n%s", stdout)
	}
	if stderr, code := join(rejoinTok, hash); code != 0 {
		t.Fatalf("re-join of west: exit %d: %s", code, stderr)
	}
}
