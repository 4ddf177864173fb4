package compiler

import (
	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// Graph is the global routing graph. (Stub: replaced by the full implementation.)
type Graph struct {
	Revision int64 `json:"revision"`
}

// Output is what Compile produces.
type Output struct {
	Graph    *Graph         `json:"graph"`
	Statuses []ObjectStatus `json:"statuses,omitempty"`
}

// Compile builds the global routing graph and every object's status from one snapshot of inputs.
func Compile(in *Inputs) *Output { return &Output{Graph: &Graph{Revision: in.Revision}} }

// Project returns the SpokeConfig for one cluster.
func Project(g *Graph, cluster string) *spokeconfig.SpokeConfig {
	return &spokeconfig.SpokeConfig{Cluster: cluster, Revision: g.Revision}
}

// AddObject decodes a wire object into its typed form and appends it to r. Unknown kinds are an error.
func (r *Resources) AddObject(o *fedgatepb.Object) error { return nil }
