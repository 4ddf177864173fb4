package e2e

import (
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"github.com/fedgate/fedgate/spoke/credentials"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fedgate/fedgate/apis/clientconfig"
)

// TestJoinEastWestAndRemoval: clusters joined with tokens serve each other's traffic over mTLS east-west; the
// east-west listener refuses a caller without a hub-issued identity; a removed cluster is cut off, cannot come back
// (its spoke stops reconnecting and says why), and its backend leaves the other spoke's table. No token secret or private key appears in any log or in what the
// join printed.
func TestJoinEastWestAndRemoval(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: runs hub and spoke processes")
	}
	w := startWorld(t)
	c := newClient()
	url := w.east.gatewayURL("/")
	// Every request at east's gateway goes to color2, which only west serves: each one crosses east → west.
	mustHubctl(t, w.hub.addr, canaryRoute(0, 100), "apply", "-f", "-")
	took, ok := eventually(30*time.Second, func() bool {
		s := split(c, url, "", 50, 4)
		return s["west"] == 50
	})
	if !ok {
		t.Fatalf("east never routed to west's backend: %v", split(c, url, "", 50, 4))
	}
	s := split(c, url, "", 500, 8)
	if errorsIn(s) != 0 || s["west"] != 500 {
		t.Fatalf("cross-cluster traffic: %v", s)
	}
	t.Logf("joined clusters serve each other over mTLS after %v: %v", took, s)

	// The east-west listener speaks only TLS with a client certificate of a cluster of this hub.
	conn, err := tls.Dial("tcp", w.west.eastWest, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // probing
	if err == nil {
		// TLS 1.3 reports the server's refusal of the (absent) client certificate on the first read.
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Fatal("west's east-west listener accepted a client without a certificate")
	}
	plain := &http.Client{Timeout: 3 * time.Second}
	if resp, err := plain.Get("http://" + w.west.eastWest + "/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("plaintext east-west request answered %d", resp.StatusCode)
		}
	}

	out := mustHubctl(t, w.hub.addr, "", "get", "clusters")
	for _, cl := range []string{"east", "west"} {
		if !regexp.MustCompile(`(?m)^` + cl + `\s+e2e=true\s+\d{4}-\d\d-\d\dT`).MatchString(out) {
			t.Errorf("get clusters lacks %s with its join labels and time:\n%s", cl, out)
		}
	}

	// Remove west: its streams are cut, reconnects refused, and color2 leaves east's table.
	out = mustHubctl(t, w.hub.addr, "", "cluster", "remove", "west")
	if !strings.Contains(out, "cluster west removed") {
		t.Fatalf("cluster remove: %s", out)
	}
	took, ok = eventually(30*time.Second, func() bool {
		s := split(c, url, "", 20, 4)
		// color2 no longer exists anywhere: the route's only weighted backend is invalid (500, as Gateway API asks).
		return s["west"] == 0 && errorsIn(s) == 20
	})
	if !ok {
		t.Fatalf("west's backend still in east's table after removal: %v", split(c, url, "", 20, 4))
	}
	t.Logf("removed cluster's backend left east's table after %v", took)
	// West's spoke exits at the cut, saying why, instead of reconnecting forever or serving on as a removed cluster.
	select {
	case <-w.west.p.done:
	case <-time.After(30 * time.Second):
		b, _ := os.ReadFile(w.west.p.log)
		t.Fatalf("west's spoke still runs 30s after its cluster was removed:\n%s", lastLines(string(b), 30))
	}
	if b, _ := os.ReadFile(w.west.p.log); w.west.p.cmd.ProcessState.ExitCode() != 1 ||
		!strings.Contains(string(b), `spoke: cluster "west" was removed at the hub`) {
		t.Fatalf("west's spoke exited with %d, without saying its cluster was removed:\n%s", w.west.p.cmd.ProcessState.ExitCode(), lastLines(string(b), 30))
	}
	out = mustHubctl(t, w.hub.addr, "", "get", "clusters")
	if containsLineWith(out, "west") {
		t.Fatalf("get clusters still lists west after removal:\n%s", out)
	}
	hubLog, _ := os.ReadFile(w.hub.p.log)
	// West's certificate is still unexpired, but east's east-west listener no longer serves it: the hub's member list
	// in east's config dropped west.
	westCreds, err := credentials.Load(w.west.credsDir)
	if err != nil {
		t.Fatal(err)
	}
	ewClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: westCreds.EastWestClientTLS("east"), ForceAttemptHTTP2: true,
	}}
	var ewCode int
	if _, ok := eventually(10*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, "https://"+w.east.eastWest+"/", nil)
		req.Header.Set("X-Fedgate-Backend", "default/color:80")
		resp, err := ewClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		ewCode = resp.StatusCode
		return ewCode == http.StatusForbidden
	}); !ok {
		t.Fatalf("east's east-west listener still serves the removed cluster west (status %d)", ewCode)
	}

	// The hub saw west's streams once each: every reconnect after the removal was refused before the handlers ran.
	for _, line := range []string{`msg="cluster connected" app=hub component=sync cluster=west`, `msg=subscribed app=hub component=sync cluster=west`} {
		if n := strings.Count(string(hubLog), line); n != 1 {
			t.Fatalf("%q %d times in the hub log, want 1 (west reconnected after removal?):\n%s", line, n, lastLines(string(hubLog), 50))
		}
	}
	if strings.Contains(string(hubLog), "did not end in time") {
		t.Fatal("the removed cluster's streams outlived the cut")
	}

	// Secrets: the token secrets (printed by token create, to the admin only) and every private key must not be in
	// any process log or in what hubctl join printed.
	var secrets []string
	for _, s := range []*spoke{w.east, w.west} {
		tok := regexp.MustCompile(`--token [a-z0-9]{6}\.([a-z0-9]{16})`).FindStringSubmatch(s.joinLine)
		if tok == nil {
			t.Fatalf("no token in %q", s.joinLine)
		}
		secrets = append(secrets, tok[1])
		secrets = append(secrets, pemBody(t, filepath.Join(s.credsDir, "tls.key")))
	}
	secrets = append(secrets, pemBody(t, filepath.Join(w.hub.dataDir, "pki", "ca.key")))
	adminCfg, err := clientconfig.Load(w.hub.adminConfig)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(adminCfg.Key, "\n"); len(lines) > 1 && len(lines[1]) >= 40 {
		secrets = append(secrets, lines[1][:40])
	} else {
		t.Fatal("no admin key in the admin config")
	}
	texts := map[string]string{"hubctl join east": w.east.joinOut, "hubctl join west": w.west.joinOut}
	for _, p := range []*proc{w.hub.p, w.east.p, w.west.p} {
		b, err := os.ReadFile(p.log)
		if err != nil {
			t.Fatal(err)
		}
		texts[p.name+" log"] = string(b)
	}
	for name, text := range texts {
		for _, sec := range secrets {
			if strings.Contains(text, sec) {
				t.Errorf("%s contains a secret (%.6s…)", name, sec)
			}
		}
	}
	t.Logf("looked for %d secrets in %d outputs", len(secrets), len(texts))
}

// pemBody returns a 40-character piece of the base64 body of the first PEM block in path: enough to recognise the
// key anywhere it leaks, whatever the line wrapping.
func pemBody(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 2 || len(lines[1]) < 40 {
		t.Fatalf("%s: unexpected PEM layout", path)
	}
	return lines[1][:40]
}

func lastLines(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// TestCertificateRenewalUnderTraffic: with 9 s certificates the spokes renew at about 6 s, twice during the test,
// over their hub connections; cross-cluster traffic sees no failed request and neither spoke reopens a stream.
func TestCertificateRenewalUnderTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: runs hub and spoke processes")
	}
	w := startWorldWith(t, "--cert-ttl", "9s")
	c := newClient()
	url := w.east.gatewayURL("/")
	mustHubctl(t, w.hub.addr, canaryRoute(50, 50), "apply", "-f", "-")
	if _, ok := eventually(30*time.Second, func() bool {
		s := split(c, url, "", 100, 4)
		return errorsIn(s) == 0 && s["east"] > 0 && s["west"] > 0
	}); !ok {
		t.Fatalf("traffic never split: %v", split(c, url, "", 100, 4))
	}
	renewals := func(s *spoke) int {
		b, _ := os.ReadFile(s.p.log)
		return strings.Count(string(b), `msg="certificate renewed"`)
	}
	start := time.Now()
	total := map[string]int{}
	for renewals(w.east) < 2 || renewals(w.west) < 2 {
		if time.Since(start) > 40*time.Second {
			t.Fatalf("renewals after 40s: east %d, west %d", renewals(w.east), renewals(w.west))
		}
		for k, v := range split(c, url, "", 200, 4) {
			total[k] += v
		}
	}
	if errorsIn(total) != 0 || total["east"] == 0 || total["west"] == 0 {
		t.Fatalf("traffic across renewals: %v", total)
	}
	for _, s := range []*spoke{w.east, w.west} {
		b, _ := os.ReadFile(s.p.log)
		for _, stream := range []string{"report", "subscribe"} {
			if n := strings.Count(string(b), fmt.Sprintf(`msg="hub stream opened" cluster=%s stream=%s`, s.cluster, stream)); n != 1 {
				t.Errorf("%s opened its %s stream %d times, want 1 (a renewal must not restart it)", s.cluster, stream, n)
			}
		}
		if !strings.Contains(string(b), fmt.Sprintf(`msg="hub stream opened" cluster=%s stream=subscribe starts=1`, s.cluster)) {
			t.Errorf("%s: no first subscribe stream logged", s.cluster)
		}
	}
	t.Logf("%d requests over %v across 2 renewals per spoke: %v", total["east"]+total["west"], time.Since(start).Round(time.Second), total)
}
