package spokeconfig

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
)

// validConfig is a small but complete projection: one local and one remote endpoint, a listener with one route.
func validConfig() *SpokeConfig {
	return &SpokeConfig{
		Cluster:  "east",
		Revision: 42,
		Ports: []Port{{
			Port:     8080,
			Protocol: ProtocolHTTP,
			VirtualHosts: []VirtualHost{{
				Hostname: "*",
				Routes: []Route{{
					Source: ObjectRef{Kind: "HTTPRoute", Namespace: "default", Name: "color"},
					Match:  Match{PathType: PathPrefix, Path: "/"},
					Action: Action{Backends: []WeightedBackend{
						{BackendID: "default/echo:80", Weight: 1},
						{Weight: 1, Invalid: true, Reason: "missing Service"},
					}},
				}},
			}},
		}},
		Backends: []Backend{{
			ID: "default/echo:80", Namespace: "default", Name: "echo", Port: 80,
			Endpoints: []Endpoint{
				{Cluster: "east", Address: "10.0.0.1:8080", Ready: true},
				{Cluster: "west", Address: "10.1.0.1:8080", Ready: true},
			},
		}},
		Clusters:    []Cluster{{Name: "west", EastWestAddress: "127.0.0.1:15443"}},
		SessionKeys: []SessionKey{{ID: 1, Secret: []byte("0123456789abcdef0123456789abcdef")}},
		Gossip:      &Gossip{Key: bytes.Repeat([]byte{7}, 32), Peers: []string{"127.0.0.1:7946"}},
	}
}

func TestValidConfigValidates(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestEncodeDeterministicAndHashed(t *testing.T) {
	b1, h1, err := Encode(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	b2, h2, err := Encode(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, b2) || h1 != h2 {
		t.Fatalf("equal configs encoded differently:\n%s\n%s", b1, b2)
	}
	sum := sha256.Sum256(b1)
	if want := hex.EncodeToString(sum[:]); h1 != want || Hash(b1) != want {
		t.Errorf("hash = %s, Hash = %s, want %s", h1, Hash(b1), want)
	}
	c := validConfig()
	c.Revision++
	_, h3, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	if h3 == h1 {
		t.Error("a different config hashed the same")
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	want := validConfig()
	b, _, err := Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip changed the config:\n got %+v\nwant %+v", got, want)
	}
	// Re-encoding the decoded config gives the same bytes: what the spoke caches hashes like what the hub sent.
	b2, _, err := Encode(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Errorf("re-encoding differs:\n%s\n%s", b, b2)
	}
}

func TestDecodeRejects(t *testing.T) {
	if _, err := Decode([]byte(`{"cluster": 5}`)); err == nil || !strings.Contains(err.Error(), "decode spoke config") {
		t.Errorf("malformed JSON: err = %v", err)
	}
	if _, err := Decode([]byte(`{"revision": 1}`)); err == nil || !strings.Contains(err.Error(), "cluster: must not be empty") {
		t.Errorf("invalid config: err = %v", err)
	}
}

func TestValidateErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*SpokeConfig)
		want   string
	}{
		{"empty cluster", func(c *SpokeConfig) { c.Cluster = "" }, "cluster: must not be empty"},
		{"unknown backend", func(c *SpokeConfig) {
			c.Ports[0].VirtualHosts[0].Routes[0].Action.Backends[0].BackendID = "default/nope:80"
		}, `ports[0].virtualHosts[0].routes[0].action.backends[0]: unknown backend "default/nope:80"`},
		{"duplicate backend", func(c *SpokeConfig) { c.Backends = append(c.Backends, c.Backends[0]) },
			`backends[1]: duplicate id "default/echo:80"`},
		{"duplicate port", func(c *SpokeConfig) { c.Ports = append(c.Ports, Port{Port: 8080, Protocol: ProtocolHTTP}) },
			"ports[1]: duplicate port 8080"},
		{"port zero", func(c *SpokeConfig) { c.Ports[0].Port = 0 }, "ports[0]: port 0 out of range"},
		{"port too large", func(c *SpokeConfig) { c.Ports[0].Port = 70000 }, "ports[0]: port 70000 out of range"},
		{"endpoint of an unlisted cluster", func(c *SpokeConfig) { c.Backends[0].Endpoints[1].Cluster = "north" },
			`backends[0] "default/echo:80" endpoints[1]: cluster "north" has no east-west address`},
		{"bad endpoint address", func(c *SpokeConfig) { c.Backends[0].Endpoints[0].Address = "10.0.0.1" },
			`backends[0] "default/echo:80" endpoints[0]: address "10.0.0.1"`},
		{"bad east-west address", func(c *SpokeConfig) { c.Clusters[0].EastWestAddress = "west-gw" },
			`clusters[0] "west": eastWestAddress "west-gw"`},
		{"negative weight", func(c *SpokeConfig) { c.Ports[0].VirtualHosts[0].Routes[0].Action.Backends[0].Weight = -1 },
			"ports[0].virtualHosts[0].routes[0].action.backends[0]: negative weight"},
		{"negative weight on an invalid backend", func(c *SpokeConfig) {
			c.Ports[0].VirtualHosts[0].Routes[0].Action.Backends[1].Weight = -3
		}, "ports[0].virtualHosts[0].routes[0].action.backends[1]: negative weight"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate accepted an invalid config")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// Every problem is reported, not only the first, so one NACK tells the operator everything.
func TestValidateJoinsAllErrors(t *testing.T) {
	c := validConfig()
	c.Cluster = ""
	c.Ports[0].Port = -1
	c.Backends[0].Endpoints[0].Address = "nope"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted an invalid config")
	}
	for _, w := range []string{"cluster: must not be empty", "port -1 out of range", `address "nope"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestValidateDuplicateClustersAndKeys(t *testing.T) {
	c := &SpokeConfig{
		Cluster: "east",
		Clusters: []Cluster{
			{Name: "west", EastWestAddress: "127.0.0.1:1"}, {Name: "west", EastWestAddress: "127.0.0.1:2"},
			{Name: "east", EastWestAddress: "127.0.0.1:3"},
		},
		SessionKeys: []SessionKey{{ID: 1, Secret: make([]byte, 32)}, {ID: 1, Secret: make([]byte, 32)}},
	}
	err := c.Validate()
	for _, want := range []string{`clusters[1]: duplicate or own cluster "west"`, `clusters[2]: duplicate or own cluster "east"`, "sessionKeys[1]: duplicate id 1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to contain %q", err, want)
		}
	}
}
