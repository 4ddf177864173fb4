package compiler

import (
	"net"
	"slices"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// Project returns the SpokeConfig for one cluster: its ports with their routes; every backend those routes name, with
// the endpoints they reach (the cluster's own for kind Service, and every exporting cluster's); every backend the
// cluster exports that a route anywhere names (the spoke serves those to other clusters over east-west; local
// endpoints only); the remote clusters owning the listed endpoints; every member cluster and the serials of their
// revoked certificates; every ServiceImport of the clusterset; and the statuses of the objects the cluster reported.
//
// Endpoints of a remote cluster without a usable east-west address are left out: the spoke could not reach them, and
// Validate would refuse a config naming them. A cluster unknown to the graph gets an empty (but valid) config.
func Project(g *Graph, cluster string) *spokeconfig.SpokeConfig {
	sc := &spokeconfig.SpokeConfig{Cluster: cluster}
	if g == nil {
		return sc
	}
	sc.Revision = g.Revision
	var revoked []string
	for _, cn := range g.Clusters {
		sc.Members = append(sc.Members, cn.Name) // g.Clusters is sorted by name
		revoked = append(revoked, cn.RevokedSerials...)
	}
	sc.RevokedSerials = dedupStrings(revoked)
	reachable := map[string]string{} // remote cluster → east-west address
	gossip := map[string]string{}    // remote cluster → gossip address
	for _, cn := range g.Clusters {
		if cn.Name != cluster {
			gossip[cn.Name] = cn.GossipAddress
		}
		if cn.Name == cluster || cn.EastWestAddress == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(cn.EastWestAddress); err == nil {
			reachable[cn.Name] = cn.EastWestAddress
		}
	}
	wanted := map[string]bool{}
	for _, cn := range g.Clusters {
		if cn.Name != cluster {
			continue
		}
		for _, pn := range cn.Ports {
			sp := spokeconfig.Port{Port: pn.Port, Protocol: pn.Protocol, TLS: copyPortTLS(pn.TLS)}
			for _, l := range pn.Listeners {
				sp.Listeners = append(sp.Listeners, spokeconfig.ListenerRef{Namespace: l.Namespace, Gateway: l.Name, Section: l.Section, Hostname: listenerHostname(cn, l)})
			}
			for _, vh := range pn.VirtualHosts {
				svh := spokeconfig.VirtualHost{Hostname: vh.Hostname, Listener: vh.Listener}
				for _, rn := range vh.Routes {
					svh.Routes = append(svh.Routes, spokeconfig.Route{
						Source: rn.Source.objectRef(), RuleIndex: rn.RuleIndex, MatchIndex: rn.MatchIndex,
						Match: rn.Match, Action: rn.Action,
					})
					for _, wb := range rn.Action.Backends {
						if !wb.Invalid {
							wanted[wb.BackendID] = true
						}
					}
				}
				sp.VirtualHosts = append(sp.VirtualHosts, svh)
			}
			sc.Ports = append(sc.Ports, sp)
		}
	}
	used := map[string]bool{}
	for _, bn := range g.Backends {
		exporters := map[string]bool{}
		for _, cl := range bn.Exporters {
			exporters[cl] = true
		}
		// The cluster's own endpoints: served to other clusters over east-west when it exports the Service, and used
		// by its own routes when it exports it or they name it as a Service (not an import).
		ownEndpoints := exporters[cluster] || (wanted[bn.ID] && !bn.ServiceImport)
		local := false
		for _, e := range bn.Endpoints {
			local = local || (e.Cluster == cluster && ownEndpoints)
		}
		if !wanted[bn.ID] && !local {
			continue
		}
		b := bn.Backend
		for _, cp := range bn.ClusterPolicies {
			if cp.Cluster == cluster {
				b.SessionPersistence, b.RetryBudget = cp.SessionPersistence, cp.RetryBudget
			}
		}
		for _, ch := range bn.HealthChecks {
			if ch.Cluster == cluster {
				hc := *ch.HealthCheck
				hc.Problems = slices.Clone(hc.Problems) // projections share no memory with the graph
				b.HealthCheck = &hc
			}
		}
		if bn.Backend.TLS != nil { // projections share no memory with the graph
			t := *bn.Backend.TLS
			t.CACertificatesPEM = slices.Clone(t.CACertificatesPEM)
			t.SubjectAltNames = slices.Clone(t.SubjectAltNames)
			b.TLS = &t
		}
		b.Endpoints = nil
		for _, e := range bn.Endpoints {
			if e.Cluster == cluster {
				if ownEndpoints {
					b.Endpoints = append(b.Endpoints, e)
				}
			} else if _, ok := reachable[e.Cluster]; ok && wanted[bn.ID] && exporters[e.Cluster] {
				// Remote endpoints only of exporting clusters (an un-exported Service stays inside its cluster), and
				// only for backends this cluster's own routes use: a backend it merely serves to others needs its
				// local endpoints alone, and leaving the rest out keeps other clusters' endpoint churn from changing
				// this spoke's config.
				b.Endpoints = append(b.Endpoints, e)
				used[e.Cluster] = true
			}
		}
		sc.Backends = append(sc.Backends, b)
	}
	// A route naming a backend the graph does not carry would fail Validate; the compiler never produces one, but a
	// hand-built graph might: answer 500 for that share rather than hand the spoke a config it must NACK.
	known := map[string]bool{}
	for _, b := range sc.Backends {
		known[b.ID] = true
	}
	for pi := range sc.Ports {
		for vi := range sc.Ports[pi].VirtualHosts {
			for ri := range sc.Ports[pi].VirtualHosts[vi].Routes {
				a := &sc.Ports[pi].VirtualHosts[vi].Routes[ri].Action
				for bi, wb := range a.Backends {
					if !wb.Invalid && !known[wb.BackendID] {
						a.Backends = append([]spokeconfig.WeightedBackend(nil), a.Backends...)
						a.Backends[bi] = spokeconfig.WeightedBackend{Weight: max(wb.Weight, 0), Invalid: true, Reason: "backend " + wb.BackendID + " is not in the graph"}
					}
				}
			}
		}
	}
	for name := range used {
		sc.Clusters = append(sc.Clusters, spokeconfig.Cluster{Name: name, EastWestAddress: reachable[name], GossipAddress: gossip[name]})
	}
	sort.Slice(sc.Clusters, func(i, j int) bool { return sc.Clusters[i].Name < sc.Clusters[j].Name })
	for _, si := range g.ServiceImports {
		si.Ports = append([]spokeconfig.ServiceImportPort(nil), si.Ports...)
		si.Clusters = append([]string(nil), si.Clusters...)
		sc.ServiceImports = append(sc.ServiceImports, si)
	}
	sc.Statuses = projectStatuses(g.Statuses, cluster)
	return sc
}

// projectStatuses converts the statuses of the objects cluster reported into the spoke's write-back form, in the
// order Compile sorted them (kind, namespace, name). Objects applied at the hub are left out even when they concern
// the cluster (a hub route attached to its Gateways): the hub writes those to its own cluster, where they live. Only
// kinds with a status fedgate owns are carried; slices are copied so projections share no memory with the graph.
func projectStatuses(all []ObjectStatus, cluster string) []spokeconfig.ObjectStatus {
	var out []spokeconfig.ObjectStatus
	for _, st := range all {
		if st.Ref.Cluster != cluster || cluster == "" {
			continue
		}
		switch st.Ref.Kind {
		case resources.KindGatewayClass, resources.KindGateway, resources.KindHTTPRoute, resources.KindGRPCRoute, resources.KindServiceExport:
		default:
			continue // policies report through status.ancestors, which the write-back does not carry yet
		}
		ps := spokeconfig.ObjectStatus{
			Kind: st.Ref.Kind, Namespace: st.Ref.Namespace, Name: st.Ref.Name, Generation: st.Generation,
			Conditions: append([]metav1.Condition(nil), st.Conditions...),
		}
		for _, p := range st.Parents {
			if p.Cluster != cluster {
				continue
			}
			ps.Parents = append(ps.Parents, spokeconfig.ParentStatus{
				ParentRef: *p.ParentRef.DeepCopy(), ControllerName: string(p.ControllerName),
				Conditions: append([]metav1.Condition(nil), p.Conditions...),
			})
		}
		for _, l := range st.Listeners {
			if l.Cluster != cluster {
				continue
			}
			ps.Listeners = append(ps.Listeners, spokeconfig.ListenerStatus{
				Name: l.Name, AttachedRoutes: l.AttachedRoutes,
				SupportedKinds: append([]gatewayv1.RouteGroupKind(nil), l.SupportedKinds...),
				Conditions:     append([]metav1.Condition(nil), l.Conditions...),
			})
		}
		out = append(out, ps)
	}
	return out
}

func listenerHostname(cn ClusterNode, l Source) string {
	for _, gn := range cn.Gateways {
		if gn.Source.Namespace != l.Namespace || gn.Source.Name != l.Name {
			continue
		}
		for _, ln := range gn.Listeners {
			if ln.Source.Section == l.Section {
				return ln.Hostname
			}
		}
	}
	return ""
}

// Secrets are the hub-generated keys every projection carries. They are not part of the graph: the graph is derived
// from user objects alone, and keys must never reach statuses, logs or `hubctl get`.
type Secrets struct {
	// SessionKeys: the newest (signing) key first, then the previous one, which still verifies.
	SessionKeys []spokeconfig.SessionKey
	// GossipKey encrypts memberlist traffic among spokes (32 bytes). Empty: gossip stays off.
	GossipKey []byte
}

// AddSecrets puts the session keys and the gossip configuration into a projection: the keys as given, and as gossip
// peers the gossip addresses of every other cluster in the graph (sorted), whether or not this cluster's routes reach
// them — cluster health is a property of the whole federation. Slices are copied, so projections share no memory
// with s or with each other.
func AddSecrets(sc *spokeconfig.SpokeConfig, g *Graph, s *Secrets) {
	if sc == nil || s == nil {
		return
	}
	sc.SessionKeys = nil
	for _, k := range s.SessionKeys {
		sc.SessionKeys = append(sc.SessionKeys, spokeconfig.SessionKey{ID: k.ID, Secret: append([]byte(nil), k.Secret...)})
	}
	sc.Gossip = nil
	if len(s.GossipKey) > 0 {
		sc.Gossip = &spokeconfig.Gossip{Key: append([]byte(nil), s.GossipKey...), Peers: GossipPeers(g, sc.Cluster)}
	}
}

// GossipPeers lists the gossip addresses (host:port) of every cluster but the given one, sorted and de-duplicated.
func GossipPeers(g *Graph, cluster string) []string {
	if g == nil {
		return nil
	}
	var peers []string
	for _, cn := range g.Clusters {
		if cn.Name == cluster || cn.GossipAddress == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(cn.GossipAddress); err != nil {
			continue // a malformed address from a Hello: memberlist could not join through it
		}
		peers = append(peers, cn.GossipAddress)
	}
	return dedupStrings(peers)
}
