package compiler

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// The MCS API (KEP-1645) in fedgate: a cluster's ServiceExport of namespace/name offers that cluster's Service to the
// clusterset. The hub merges the exports of one namespace/name across clusters into a ServiceImport, which every
// cluster holds (namespace sameness: the name means the same service everywhere). Reachability follows the exports:
//
//   - backendRef kind Service from a route in cluster C: C's own Service, plus every other cluster that exports it;
//   - backendRef kind ServiceImport: every exporting cluster, C included only when C exports it;
//   - an un-exported Service is reachable only by routes in its own cluster.
//
// ServiceExports applied at the hub are ignored: the hub runs no workloads, so there is no Service to export.

// exportMember is one valid ServiceExport: a cluster that offers its Service to the clusterset.
type exportMember struct {
	cluster string
	export  *mcsv1a1.ServiceExport
	service *corev1.Service
}

// processExports validates every cluster's ServiceExports, records which clusters export each namespace/name, and
// merges the exports into ServiceImports with the MCS conflict rules. It runs before routes resolve their backends.
func (c *compiler) processExports() {
	members := map[string][]exportMember{}
	for _, cl := range c.clusters {
		v := c.reports[cl]
		for _, se := range v.res.ServiceExports {
			key := se.Namespace + "/" + se.Name
			ref := ObjectRef{Cluster: cl, Kind: resources.KindServiceExport, Namespace: se.Namespace, Name: se.Name}
			st := c.status.get(ref, se.Generation)
			svc := v.services[key]
			switch {
			case svc == nil:
				st.Conditions = append(st.Conditions, condition(string(mcsv1a1.ServiceExportConditionValid), false,
					string(mcsv1a1.ServiceExportReasonNoService),
					fmt.Sprintf("Service %s does not exist in cluster %q", key, cl), se.Generation))
			case svc.Spec.Type == corev1.ServiceTypeExternalName:
				st.Conditions = append(st.Conditions, condition(string(mcsv1a1.ServiceExportConditionValid), false,
					string(mcsv1a1.ServiceExportReasonInvalidServiceType),
					fmt.Sprintf("Service %s in cluster %q is of type ExternalName, which cannot be exported", key, cl), se.Generation))
			default:
				st.Conditions = append(st.Conditions, condition(string(mcsv1a1.ServiceExportConditionValid), true,
					string(mcsv1a1.ServiceExportReasonValid), fmt.Sprintf("Service %s is exported to the clusterset", key), se.Generation))
				members[key] = append(members[key], exportMember{cluster: cl, export: se, service: svc})
				if c.exported[key] == nil {
					c.exported[key] = map[string]bool{}
				}
				c.exported[key][cl] = true
			}
		}
	}
	keys := make([]string, 0, len(members))
	for k := range members {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c.serviceImports = append(c.serviceImports, c.mergeExports(members[k]))
	}
}

// mergeExports builds the ServiceImport of one namespace/name and sets every constituent export's Conflict condition.
//
// Ports are the union of the exported Services' ports, a port being (name, port, protocol). Two exports conflict when
// they define the same port name differently or the same port number and protocol under different names; by the
// KEP's rule the oldest export (creation time, then cluster name) wins and its definition is the one imported. The
// type is ClusterSetIP unless every exported Service is headless; a mix is a TypeConflict. The Conflict condition is
// raised on every constituent export, as the KEP recommends, so each cluster's user sees it.
func (c *compiler) mergeExports(ms []exportMember) spokeconfig.ServiceImport {
	sort.SliceStable(ms, func(i, j int) bool {
		ti, tj := ms[i].export.CreationTimestamp, ms[j].export.CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return ms[i].cluster < ms[j].cluster
	})
	ns, name := ms[0].export.Namespace, ms[0].export.Name
	si := spokeconfig.ServiceImport{Namespace: ns, Name: name, Type: string(mcsv1a1.ClusterSetIP)}
	type numKey struct {
		port     int32
		protocol string
	}
	byName := map[string]spokeconfig.ServiceImportPort{}
	byNum := map[numKey]string{}
	var portProblems, typeProblems []string
	headless := 0
	for _, m := range ms {
		si.Clusters = append(si.Clusters, m.cluster)
		if m.service.Spec.ClusterIP == corev1.ClusterIPNone {
			headless++
		}
		for _, p := range m.service.Spec.Ports {
			sp := spokeconfig.ServiceImportPort{Name: p.Name, Protocol: string(p.Protocol), Port: p.Port}
			if sp.Protocol == "" {
				sp.Protocol = string(corev1.ProtocolTCP) // the API server's default
			}
			if p.AppProtocol != nil {
				sp.AppProtocol = *p.AppProtocol
			}
			nk := numKey{sp.Port, sp.Protocol}
			if prev, ok := byName[sp.Name]; ok {
				if prev.Port != sp.Port || prev.Protocol != sp.Protocol {
					portProblems = append(portProblems, fmt.Sprintf("cluster %s port %q is %d/%s, the import has %d/%s",
						m.cluster, sp.Name, sp.Port, sp.Protocol, prev.Port, prev.Protocol))
				}
				continue
			}
			if prevName, ok := byNum[nk]; ok {
				portProblems = append(portProblems, fmt.Sprintf("cluster %s names port %d/%s %q, the import names it %q",
					m.cluster, sp.Port, sp.Protocol, sp.Name, prevName))
				continue
			}
			byName[sp.Name], byNum[nk] = sp, sp.Name
			si.Ports = append(si.Ports, sp)
		}
	}
	sort.Strings(si.Clusters)
	sort.Slice(si.Ports, func(i, j int) bool {
		a, b := si.Ports[i], si.Ports[j]
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		if a.Protocol != b.Protocol {
			return a.Protocol < b.Protocol
		}
		return a.Name < b.Name
	})
	switch headless {
	case len(ms):
		si.Type = string(mcsv1a1.Headless)
	case 0:
	default:
		typeProblems = append(typeProblems, fmt.Sprintf("%d of %d exported Services are headless, the import is ClusterSetIP", headless, len(ms)))
	}
	var reasons []string
	if len(portProblems) > 0 {
		reasons = append(reasons, string(mcsv1a1.ServiceExportReasonPortConflict))
	}
	if len(typeProblems) > 0 {
		reasons = append(reasons, string(mcsv1a1.ServiceExportReasonTypeConflict))
	}
	var cond func(gen int64) metav1.Condition
	if len(reasons) == 0 {
		cond = func(gen int64) metav1.Condition {
			return condition(string(mcsv1a1.ServiceExportConditionConflict), false, string(mcsv1a1.ServiceExportReasonNoConflicts),
				fmt.Sprintf("exports of %s/%s in clusters %s agree", ns, name, strings.Join(si.Clusters, ", ")), gen)
		}
	} else {
		problems := typeProblems
		if len(portProblems) > 0 {
			problems = append(append(portProblems, fmt.Sprintf("the oldest export's ports (cluster %s) are in force", ms[0].cluster)), typeProblems...)
		}
		si.Conflict = fmt.Sprintf("exports of %s/%s conflict: %s", ns, name, strings.Join(problems, "; "))
		msg := si.Conflict
		cond = func(gen int64) metav1.Condition {
			// The KEP joins several conflict reasons with commas.
			return condition(string(mcsv1a1.ServiceExportConditionConflict), true, strings.Join(reasons, ","), msg, gen)
		}
	}
	for _, m := range ms {
		st := c.status.get(ObjectRef{Cluster: m.cluster, Kind: resources.KindServiceExport, Namespace: ns, Name: name}, m.export.Generation)
		st.Conditions = append(st.Conditions, cond(m.export.Generation))
	}
	return si
}

// exports reports whether cluster has a valid ServiceExport of namespace/name.
func (c *compiler) exports(cluster, ns, name string) bool { return c.exported[ns+"/"+name][cluster] }
