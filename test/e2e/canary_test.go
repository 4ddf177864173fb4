package e2e

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// twoClusters starts a hub and the spokes east (backend color) and west (backend color2), each with Gateway
// default/gw, and returns them once both spokes are connected.
type world struct {
	hub        *hub
	east, west *spoke
	color      *echoBackend
	color2     *echoBackend
	churn      *echoBackend // a third backend in east, for routes other than the canary
}

func startWorld(t testing.TB) *world { return startWorldWith(t) }

// startWorldWith starts the world with extra hub flags. Each spoke joins with its own token before it starts.
func startWorldWith(t testing.TB, hubArgs ...string) *world {
	t.Helper()
	w := &world{}
	w.color = startEcho(t, "east", "color")
	w.color2 = startEcho(t, "west", "color2")
	w.churn = startEcho(t, "east", "churn")
	w.hub = startHub(t, filepath.Join(t.TempDir(), "hub-data"), "", hubArgs...)
	mk := func(cluster, host string, b ...*echoBackend) *spoke {
		s := &spoke{
			cluster:   cluster,
			host:      host,
			gwPort:    freePort(t, host),
			eastWest:  net.JoinHostPort(host, strconv.Itoa(freePort(t, host))),
			gossip:    net.JoinHostPort(host, strconv.Itoa(freePort(t, host))),
			sourceDir: filepath.Join(t.TempDir(), cluster+"-source"),
			cacheDir:  filepath.Join(t.TempDir(), cluster+"-cache"),
			hubAddr:   w.hub.addr,
		}
		writeFile(t, filepath.Join(s.sourceDir, "cluster.yaml"), clusterYAML(s.gwPort, b...))
		s.start(t)
		return s
	}
	w.east = mk("east", "127.0.0.2", w.color, w.churn)
	w.west = mk("west", "127.0.0.3", w.color2)
	return w
}

// share returns the percentage of answers from cluster.
func share(counts map[string]int, cluster string, n int) float64 {
	return 100 * float64(counts[cluster]) / float64(n)
}

func TestCanaryAcrossClusters(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: runs hub and spoke processes")
	}
	w := startWorld(t)
	c := newClient()
	url := w.east.gatewayURL("/")

	mustHubctl(t, w.hub.addr, canaryRoute(90, 10), "apply", "-f", "-")
	// The route is served once both clusters' backends are in east's table.
	if _, ok := eventually(20*time.Second, func() bool {
		s := split(c, url, "", 50, 4)
		return s["east"] > 0 && s["west"] > 0 && errorsIn(s) == 0
	}); !ok {
		t.Fatalf("east's gateway never served the canary from both clusters: %v", split(c, url, "", 20, 1))
	}

	const n = 2000
	s := split(c, url, "", n, 8)
	if errorsIn(s) != 0 {
		t.Fatalf("errors in 90/10 split: %v", s)
	}
	if e := share(s, "east", n); e < 87 || e > 93 {
		t.Fatalf("90/10 split: east got %.1f%% (want 90±3): %v", e, s)
	}
	t.Logf("90/10: %v", s)

	// Weights changed at the hub: the split follows within 2 s.
	mustHubctl(t, w.hub.addr, canaryRoute(50, 50), "apply", "-f", "-")
	took, ok := eventually(2*time.Second, func() bool {
		s := split(c, url, "", 100, 4)
		return errorsIn(s) == 0 && share(s, "west", 100) >= 40
	})
	if !ok {
		t.Fatalf("split did not follow 50/50 within 2 s: %v", split(c, url, "", 100, 4))
	}
	t.Logf("50/50 followed after %v", took)
	s = split(c, url, "", n, 8)
	if e := share(s, "east", n); errorsIn(s) != 0 || e < 47 || e > 53 {
		t.Fatalf("50/50 split: east got %.1f%% (want 50±3): %v", e, s)
	}

	// The hub dies: traffic keeps flowing on the last graph.
	w.hub.p.stop(syscall.SIGKILL)
	s = split(c, url, "", n, 8)
	if e := share(s, "east", n); errorsIn(s) != 0 || e < 47 || e > 53 {
		t.Fatalf("with the hub down: east got %.1f%%: %v", e, s)
	}

	// A spoke restarted while the hub is down serves from its disk copy.
	w.east.p.stop(syscall.SIGTERM)
	w.east.start(t)
	waitTCP(t, fmt.Sprintf("%s:%d", w.east.host, w.east.gwPort), 10*time.Second)
	s = split(c, url, "", 1000, 8)
	if e := share(s, "east", 1000); errorsIn(s) != 0 || e < 47 || e > 53 {
		t.Fatalf("east restarted with the hub down: east got %.1f%%: %v", e, s)
	}

	// The hub comes back on the same data dir and address; the spokes reconnect and follow new weights.
	w.hub = startHub(t, w.hub.dataDir, w.hub.addr)
	mustHubctl(t, w.hub.addr, canaryRoute(90, 10), "apply", "-f", "-")
	if _, ok := eventually(20*time.Second, func() bool {
		s := split(c, url, "", 200, 4)
		return errorsIn(s) == 0 && share(s, "east", 200) >= 85
	}); !ok {
		t.Fatalf("after the hub restarted, east never followed 90/10: %v", split(c, url, "", 200, 4))
	}
	out := mustHubctl(t, w.hub.addr, "", "get", "clusters")
	for _, cl := range []string{"east", "west"} {
		if !containsLineWith(out, cl) {
			t.Errorf("hubctl get clusters does not list %s:\n%s", cl, out)
		}
	}
}
