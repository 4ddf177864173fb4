package compiler

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// The test input format is described in testdata/README.md.
const (
	clusterAnnotation = "test.fedgate.io/cluster"
	headerKind        = "TestInputs"
)

type testHeader struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Revision   int64  `json:"revision"`
	// WithSecrets renders projections with fixed test keys (AddSecrets), to show session keys and gossip peers.
	WithSecrets bool `json:"withSecrets"`
	Clusters    []struct {
		Name            string   `json:"name"`
		EastWestAddress string   `json:"eastWestAddress"`
		GossipAddress   string   `json:"gossipAddress"`
		RevokedSerials  []string `json:"revokedSerials"`
	} `json:"clusters"`
}

// testSecrets are the fixed keys of golden cases with withSecrets: recognisable patterns, not secrets.
var testSecrets = &Secrets{
	SessionKeys: []spokeconfig.SessionKey{
		{ID: 2, Secret: bytes.Repeat([]byte{0x22}, 32)},
		{ID: 1, Secret: bytes.Repeat([]byte{0x11}, 32)},
	},
	GossipKey: bytes.Repeat([]byte{0x99}, 32),
}

// loadInputs reads a multi-document YAML test input into compiler Inputs.
func loadInputs(data []byte) (*Inputs, error) {
	in, _, err := loadInputsSecrets(data)
	return in, err
}

// loadInputsSecrets is loadInputs that also says whether the case asks for secrets in its projections.
func loadInputsSecrets(data []byte) (*Inputs, bool, error) {
	in := &Inputs{Clusters: map[string]*ClusterInputs{}}
	withSecrets := false
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for doc := 1; ; doc++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return in, withSecrets, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("document %d: %w", doc, err)
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return nil, false, fmt.Errorf("document %d: %w", doc, err)
		}
		var head struct {
			Kind string `json:"kind"`
		}
		if err := json.Unmarshal(js, &head); err != nil {
			// null documents and scalars: let DecodeYAML judge them below.
			head.Kind = ""
		}
		if head.Kind == headerKind {
			var h testHeader
			if err := yaml.UnmarshalStrict(raw, &h); err != nil {
				return nil, false, fmt.Errorf("document %d: %w", doc, err)
			}
			in.Revision = h.Revision
			withSecrets = h.WithSecrets
			for _, c := range h.Clusters {
				in.Clusters[c.Name] = &ClusterInputs{EastWestAddress: c.EastWestAddress, GossipAddress: c.GossipAddress, RevokedSerials: c.RevokedSerials}
			}
			continue
		}
		objs, err := resources.DecodeYAML(bytes.NewReader(raw), fmt.Sprintf("document %d", doc), "default")
		if err != nil {
			return nil, false, err
		}
		for _, o := range objs {
			var meta struct {
				Metadata struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(o.Json, &meta); err != nil {
				return nil, false, fmt.Errorf("document %d: %w", doc, err)
			}
			target := &in.Hub
			if cl := meta.Metadata.Annotations[clusterAnnotation]; cl != "" {
				if in.Clusters[cl] == nil {
					in.Clusters[cl] = &ClusterInputs{}
				}
				target = &in.Clusters[cl].Resources
			}
			if err := target.AddObject(o); err != nil {
				return nil, false, fmt.Errorf("document %d: %w", doc, err)
			}
		}
	}
}

// goldenOutput is what a golden file holds: the compile output and every cluster's projection.
type goldenOutput struct {
	Graph       *Graph                     `json:"graph"`
	Statuses    []ObjectStatus             `json:"statuses"`
	Projections []*spokeconfig.SpokeConfig `json:"projections"`
}

// render compiles in and encodes everything a golden file compares; it also reports projections that fail Validate.
func render(in *Inputs) ([]byte, error) { return renderSecrets(in, nil) }

// renderSecrets is render with secrets added to every projection (nil: none).
func renderSecrets(in *Inputs, secrets *Secrets) ([]byte, error) {
	out := Compile(in)
	g := goldenOutput{Graph: out.Graph, Statuses: out.Statuses}
	var names []string
	for name := range in.Clusters {
		if name == "" {
			continue // not a cluster name; Compile ignores it too
		}
		names = append(names, name)
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		p := Project(out.Graph, name)
		AddSecrets(p, out.Graph, secrets)
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("projection for %q: %w", name, err))
		}
		g.Projections = append(g.Projections, p)
	}
	b, err := yaml.Marshal(g)
	if err != nil {
		return nil, err
	}
	return b, errors.Join(errs...)
}
