package compiler

import (
	"sort"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// buildGraph is the final pass: it turns each cluster's gateway instances and attachments into ports and virtual
// hosts with routes in precedence order, and collects the backends those routes name. Every list is sorted here, so
// the graph is deterministic whatever order the earlier passes worked in.
func (c *compiler) buildGraph() *Graph {
	g := &Graph{Revision: c.in.Revision}
	for _, cl := range c.clusters {
		cn := ClusterNode{Name: cl}
		if ci := c.in.Clusters[cl]; ci != nil {
			cn.EastWestAddress = ci.EastWestAddress
			cn.GossipAddress = ci.GossipAddress
			cn.RevokedSerials = dedupStrings(ci.RevokedSerials)
		}
		gws := append([]*gatewayInstance(nil), c.gateways[cl]...)
		sort.Slice(gws, func(i, j int) bool {
			a, b := gws[i].source, gws[j].source
			if a.Namespace != b.Namespace {
				return a.Namespace < b.Namespace
			}
			return a.Name < b.Name
		})
		ports := map[int32]*PortNode{}
		https := map[int32][]*listener{}
		for _, gi := range gws {
			gn := GatewayNode{Source: gi.source, Class: string(gi.gw.Spec.GatewayClassName)}
			for _, l := range gi.listeners {
				gn.Listeners = append(gn.Listeners, ListenerNode{
					Source: l.source(), Port: l.port, Protocol: string(l.protocol), Hostname: l.hostname,
					Programmed: l.programmed(), AttachedRoutes: int32(len(l.attached)),
				})
				if !l.programmed() {
					continue
				}
				pn := ports[l.port]
				if pn == nil {
					pn = &PortNode{Port: l.port, Protocol: protocolOf(l.protocol)}
					ports[l.port] = pn
				}
				pn.Listeners = append(pn.Listeners, l.source())
				if pn.Protocol == spokeconfig.ProtocolHTTPS {
					https[l.port] = append(https[l.port], l)
				}
			}
			cn.Gateways = append(cn.Gateways, gn)
		}
		c.fillVirtualHosts(ports, c.attachments[cl])
		for port, ls := range https {
			ports[port].TLS = portTLS(ls)
		}
		for _, pn := range ports {
			sort.Slice(pn.Listeners, func(i, j int) bool { return sourceLess(pn.Listeners[i], pn.Listeners[j]) })
			cn.Ports = append(cn.Ports, *pn)
		}
		sort.Slice(cn.Ports, func(i, j int) bool { return cn.Ports[i].Port < cn.Ports[j].Port })
		g.Clusters = append(g.Clusters, cn)
	}
	for _, bn := range c.backends {
		g.Backends = append(g.Backends, *bn)
	}
	sort.Slice(g.Backends, func(i, j int) bool { return g.Backends[i].ID < g.Backends[j].ID })
	g.ServiceImports = c.serviceImports
	return g
}

// fillVirtualHosts groups a cluster's attachments by port and hostname, drops duplicates (a route attached through
// two listeners that yield the same hostname on one port) and sorts each virtual host by precedence. On an HTTPS port
// the group is also by listener: a request is served by the routes of the listener its connection selected alone (the
// most specific one for its SNI and Host), so the routes of two listeners never share a virtual host there.
func (c *compiler) fillVirtualHosts(ports map[int32]*PortNode, as []*attachment) {
	type vhostKey struct {
		port     int32
		host     string
		listener string // HTTPS ports only: the listener's hostname, "*" for none
	}
	type nodeKey struct {
		src         Source
		rule, match int
	}
	groups := map[vhostKey][]*attachment{}
	seen := map[vhostKey]map[nodeKey]bool{}
	for _, a := range as {
		k := vhostKey{port: a.listener.port, host: a.hostname}
		if pn := ports[k.port]; pn != nil && pn.Protocol == spokeconfig.ProtocolHTTPS {
			k.listener = orStar(a.listener.hostname)
		}
		nk := nodeKey{a.node.Source, a.node.RuleIndex, a.node.MatchIndex}
		if seen[k] == nil {
			seen[k] = map[nodeKey]bool{}
		}
		if seen[k][nk] {
			continue
		}
		seen[k][nk] = true
		groups[k] = append(groups[k], a)
	}
	for k, group := range groups {
		pn := ports[k.port]
		if pn == nil {
			continue // cannot happen: attachments are made to programmed listeners only
		}
		sortByPrecedence(group)
		vh := VirtualHostNode{Hostname: k.host, Listener: k.listener}
		for _, a := range group {
			vh.Routes = append(vh.Routes, a.node)
			c.useBackends(a.node.Action)
		}
		pn.VirtualHosts = append(pn.VirtualHosts, vh)
	}
	for _, pn := range ports {
		sort.Slice(pn.VirtualHosts, func(i, j int) bool {
			a, b := &pn.VirtualHosts[i], &pn.VirtualHosts[j]
			if a.Hostname != b.Hostname {
				return a.Hostname < b.Hostname
			}
			return a.Listener < b.Listener
		})
	}
}

func sourceLess(a, b Source) bool {
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	if a.Cluster != b.Cluster {
		return a.Cluster < b.Cluster
	}
	return a.Section < b.Section
}
