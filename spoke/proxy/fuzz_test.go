package proxy

import (
	"encoding/json"
	"testing"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// FuzzBuild: whatever arrives from the hub (or the disk cache) may be refused — the spoke then NACKs and keeps its
// table — but building a table from it must never panic.
func FuzzBuild(f *testing.F) {
	seed, _ := json.Marshal(matcherConfig())
	f.Add(seed)
	f.Add([]byte(`{"cluster":"c","ports":[{"port":80,"virtualHosts":[{"hostname":"*","routes":[{"match":{"pathType":"RegularExpression","path":"("}}]}]}]}`))
	f.Add([]byte(`{"cluster":"c","sessionKeys":[{"id":1,"secret":"AA=="}],"backends":[{"id":"b","endpoints":[{"cluster":"c","address":"1.2.3.4:80"}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := spokeconfig.Decode(b)
		if err != nil {
			return
		}
		_, _ = Build(cfg, Options{Cluster: cfg.Cluster})
	})
}
