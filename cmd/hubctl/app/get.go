package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
	"github.com/fedgate/fedgate/hub/compiler"
)

type getOptions struct {
	namespace      string
	output         string
	includeReports bool
}

func newGetCommand(g *globalOptions) *cobra.Command {
	var o getOptions
	cmd := &cobra.Command{
		Use:   "get TYPE [NAME...]",
		Short: "List objects or clusters with their status at the hub",
		Long: `List objects applied at the hub, with the status the hub compiled for them in every cluster, or the clusters
themselves. TYPE is one of gateways (gw), routes (HTTPRoutes and GRPCRoutes), httproutes, grpcroutes,
referencegrants, gatewayclasses, clusters, or all (every kind, then the clusters; -o json|yaml lists the objects only).
Without -n, every namespace is listed: the hub is one view of all of them.`,
		Example: `  hubctl get routes
  hubctl get httproute color -n default -o yaml
  hubctl get clusters`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch o.output {
			case "", "table", "json", "yaml":
			default:
				return fmt.Errorf("unknown output format %q: use table, json or yaml", o.output)
			}
			return runGet(cmd, g, &o, strings.ToLower(args[0]), args[1:])
		},
	}
	cmd.Flags().StringVarP(&o.namespace, "namespace", "n", "", "only this namespace (default: all namespaces)")
	cmd.Flags().StringVarP(&o.output, "output", "o", "table", "output format: table, json or yaml")
	cmd.Flags().BoolVar(&o.includeReports, "include-reports", false, "also list objects reported by clusters (adds a CLUSTER column)")
	return cmd
}

func runGet(cmd *cobra.Command, g *globalOptions, o *getOptions, what string, names []string) error {
	isClusters := what == "cluster" || what == "clusters"
	var kinds []string // nil with "all": one List of every kind
	if !isClusters && what != "all" {
		ks, ok := resources.KindFor(what)
		if !ok {
			return fmt.Errorf(`the server doesn't have a resource type %q (try gateways, routes, httproutes, grpcroutes, referencegrants, clusters, all)`, what)
		}
		kinds = ks
	}
	if what == "all" && len(names) > 0 {
		return errors.New(`"get all" takes no names`)
	}

	client, closeConn, err := connect(g)
	if err != nil {
		return err
	}
	defer closeConn()

	if isClusters {
		resp, err := call(cmd.Context(), g, client.ListClusters, &fedgatepb.ListClustersRequest{})
		if err != nil {
			return err
		}
		clusters := filterClusters(resp.GetClusters(), names)
		if len(names) > 0 && len(clusters) < len(names) {
			return notFound("cluster", names, clusterNames(clusters))
		}
		return printClusters(g, o.output, clusters)
	}

	var listed []*fedgatepb.ListedObject
	reqKinds := kinds
	if reqKinds == nil {
		reqKinds = []string{""}
	}
	for _, k := range reqKinds {
		resp, err := call(cmd.Context(), g, client.List, &fedgatepb.ListRequest{Kind: k, Namespace: o.namespace, IncludeReports: o.includeReports})
		if err != nil {
			return err
		}
		listed = append(listed, resp.GetObjects()...)
	}
	listed = filterNames(listed, names)
	sortListed(listed)
	if len(names) > 0 && len(listed) < len(names) {
		var found []string
		for _, l := range listed {
			found = append(found, l.GetObject().GetName())
		}
		return notFound(resourceName(apiVersionFor(kinds[0]), kinds[0]), names, found)
	}

	var clusters []*fedgatepb.ClusterInfo
	if what == "all" && (o.output == "table" || o.output == "") {
		resp, err := call(cmd.Context(), g, client.ListClusters, &fedgatepb.ListClustersRequest{})
		if err != nil {
			return err
		}
		clusters = filterClusters(resp.GetClusters(), nil)
	}

	switch o.output {
	case "json", "yaml":
		return printObjects(g.stdout, o.output, listed, len(names) == 1)
	}
	if len(listed) == 0 && len(clusters) == 0 {
		if o.namespace != "" {
			fmt.Fprintf(g.stderr, "No resources found in %s namespace.\n", o.namespace)
		} else {
			fmt.Fprintln(g.stderr, "No resources found")
		}
		return nil
	}
	// Names carry their kind (kubectl's "httproute.gateway.networking.k8s.io/color") whenever one table is not all.
	prefix := what == "all" || len(kinds) > 1
	return printTables(g.stdout, listed, clusters, prefix, o.includeReports)
}

func notFound(resource string, want, found []string) error {
	have := map[string]bool{}
	for _, f := range found {
		have[f] = true
	}
	var errs []error
	for _, n := range want {
		if !have[n] {
			errs = append(errs, fmt.Errorf("%s %q not found", resource, n))
		}
	}
	return errors.Join(errs...)
}

func filterNames(in []*fedgatepb.ListedObject, names []string) []*fedgatepb.ListedObject {
	if len(names) == 0 {
		return in
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []*fedgatepb.ListedObject
	for _, l := range in {
		if want[l.GetObject().GetName()] {
			out = append(out, l)
		}
	}
	return out
}

func filterClusters(in []*fedgatepb.ClusterInfo, names []string) []*fedgatepb.ClusterInfo {
	out := append([]*fedgatepb.ClusterInfo(nil), in...)
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	if len(names) == 0 {
		return out
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var kept []*fedgatepb.ClusterInfo
	for _, c := range out {
		if want[c.GetName()] {
			kept = append(kept, c)
		}
	}
	return kept
}

func clusterNames(cs []*fedgatepb.ClusterInfo) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.GetName())
	}
	return out
}

// sortListed orders by kind (resources.Kinds order), hub objects before reported ones, then namespace and name, so
// output does not depend on the hub's iteration order.
func sortListed(ls []*fedgatepb.ListedObject) {
	rank := map[string]int{}
	for i, gk := range resources.Kinds {
		rank[gk.Kind] = i
	}
	sort.SliceStable(ls, func(i, j int) bool {
		a, b := ls[i], ls[j]
		if ra, rb := rank[a.GetObject().GetKind()], rank[b.GetObject().GetKind()]; ra != rb {
			return ra < rb
		}
		if a.GetCluster() != b.GetCluster() {
			return a.GetCluster() < b.GetCluster()
		}
		if a.GetObject().GetNamespace() != b.GetObject().GetNamespace() {
			return a.GetObject().GetNamespace() < b.GetObject().GetNamespace()
		}
		return a.GetObject().GetName() < b.GetObject().GetName()
	})
}

// ---------------------------------------------------------------- -o json|yaml

// printObjects dumps objects as kubectl does: one object when one was asked for by name, else a v1 List. Each object
// carries the hub's compiled status (hub/compiler.ObjectStatus) as its status section.
func printObjects(w io.Writer, format string, listed []*fedgatepb.ListedObject, single bool) error {
	items := make([]map[string]any, 0, len(listed))
	for _, l := range listed {
		var obj map[string]any
		if err := json.Unmarshal(l.GetObject().GetJson(), &obj); err != nil {
			return fmt.Errorf("%s: hub sent a malformed body: %w", describe(l), err)
		}
		if len(l.GetStatusJson()) > 0 {
			var st any
			if err := json.Unmarshal(l.GetStatusJson(), &st); err != nil {
				return fmt.Errorf("%s: hub sent a malformed status: %w", describe(l), err)
			}
			obj["status"] = st
		}
		items = append(items, obj)
	}
	var doc any = map[string]any{"apiVersion": "v1", "kind": "List", "metadata": map[string]any{"resourceVersion": ""}, "items": items}
	if single && len(items) == 1 {
		doc = items[0]
	}
	return writeDoc(w, format, doc)
}

func writeDoc(w io.Writer, format string, doc any) error {
	js, err := json.MarshalIndent(doc, "", "    ")
	if err != nil {
		return err
	}
	if format == "yaml" {
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", js)
	return err
}

func describe(l *fedgatepb.ListedObject) string {
	o := l.GetObject()
	d := resources.Describe(o.GetKind(), o.GetNamespace(), o.GetName())
	if l.GetCluster() != "" {
		d += " (cluster " + l.GetCluster() + ")"
	}
	return d
}

// ---------------------------------------------------------------- tables

// newTable uses kubectl's tabwriter settings (k8s.io/cli-runtime printers) so columns line up the same way.
func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 6, 4, 3, ' ', 0) }

func printTables(w io.Writer, listed []*fedgatepb.ListedObject, clusters []*fedgatepb.ClusterInfo, prefixKind, withCluster bool) error {
	var sections [][]*fedgatepb.ListedObject
	for i, l := range listed {
		if i == 0 || l.GetObject().GetKind() != listed[i-1].GetObject().GetKind() {
			sections = append(sections, nil)
		}
		sections[len(sections)-1] = append(sections[len(sections)-1], l)
	}
	first := true
	for _, sec := range sections {
		if !first {
			fmt.Fprintln(w)
		}
		first = false
		if err := printKindTable(w, sec, prefixKind, withCluster); err != nil {
			return err
		}
	}
	if len(clusters) > 0 {
		if !first {
			fmt.Fprintln(w)
		}
		return printClusterTable(w, clusters, prefixKind)
	}
	return nil
}

func printKindTable(w io.Writer, sec []*fedgatepb.ListedObject, prefixKind, withCluster bool) error {
	kind := sec[0].GetObject().GetKind()
	cols := columnsFor(kind)
	tw := newTable(w)
	header := []string{"NAME"}
	if resources.Namespaced(kind) {
		header = append(header, "NAMESPACE")
	}
	if withCluster {
		header = append(header, "CLUSTER")
	}
	for _, c := range cols {
		header = append(header, c.name)
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, l := range sec {
		o := l.GetObject()
		typed, err := resources.Typed(o)
		if err != nil {
			return fmt.Errorf("%s: hub sent an object hubctl cannot read: %w", describe(l), err)
		}
		st, err := decodeStatus(l)
		if err != nil {
			return err
		}
		name := o.GetName()
		if prefixKind {
			name = resourceName(o.GetApiVersion(), o.GetKind()) + "/" + name
		}
		row := []string{name}
		if resources.Namespaced(kind) {
			row = append(row, o.GetNamespace())
		}
		if withCluster {
			row = append(row, orNone(l.GetCluster(), "(hub)"))
		}
		for _, c := range cols {
			row = append(row, orNone(c.value(typed, st), "<none>"))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

func decodeStatus(l *fedgatepb.ListedObject) (*compiler.ObjectStatus, error) {
	st := &compiler.ObjectStatus{}
	if len(l.GetStatusJson()) == 0 {
		return st, nil
	}
	if err := json.Unmarshal(l.GetStatusJson(), st); err != nil {
		return nil, fmt.Errorf("%s: hub sent a malformed status: %w", describe(l), err)
	}
	return st, nil
}

type column struct {
	name  string
	value func(obj any, st *compiler.ObjectStatus) string
}

func columnsFor(kind string) []column {
	switch kind {
	case resources.KindHTTPRoute, resources.KindGRPCRoute:
		return []column{
			{"HOSTNAMES", func(obj any, _ *compiler.ObjectStatus) string { return routeHostnames(obj) }},
			{"PARENTS", func(obj any, _ *compiler.ObjectStatus) string { return routeParents(obj) }},
			{"ACCEPTED", func(_ any, st *compiler.ObjectStatus) string { return routeCondition(st, "Accepted") }},
			{"RESOLVED", func(_ any, st *compiler.ObjectStatus) string { return routeCondition(st, "ResolvedRefs") }},
		}
	case resources.KindGateway:
		return []column{
			{"CLASS", func(obj any, _ *compiler.ObjectStatus) string {
				return string(obj.(*gatewayv1.Gateway).Spec.GatewayClassName)
			}},
			{"LISTENERS", func(obj any, _ *compiler.ObjectStatus) string { return gatewayListeners(obj.(*gatewayv1.Gateway)) }},
			{"ACCEPTED", func(_ any, st *compiler.ObjectStatus) string { return gatewayCondition(st, "Accepted") }},
			{"PROGRAMMED", func(_ any, st *compiler.ObjectStatus) string { return gatewayCondition(st, "Programmed") }},
		}
	case resources.KindGatewayClass:
		return []column{
			{"CONTROLLER", func(obj any, _ *compiler.ObjectStatus) string {
				return string(obj.(*gatewayv1.GatewayClass).Spec.ControllerName)
			}},
			{"ACCEPTED", func(_ any, st *compiler.ObjectStatus) string { return conditionText(st.Conditions, "Accepted") }},
		}
	case resources.KindSecret:
		// The hub never lists a Secret's data; a reported one says whether its cluster found it usable.
		return []column{
			{"TYPE", func(obj any, _ *compiler.ObjectStatus) string { return string(obj.(*corev1.Secret).Type) }},
			{"TLS-CHECK", func(obj any, _ *compiler.ObjectStatus) string {
				return obj.(*corev1.Secret).Annotations[resources.TLSCheckAnnotation]
			}},
		}
	case resources.KindReferenceGrant:
		return []column{
			{"FROM", func(obj any, _ *compiler.ObjectStatus) string { return grantFrom(obj.(*gatewayv1beta1.ReferenceGrant)) }},
			{"TO", func(obj any, _ *compiler.ObjectStatus) string { return grantTo(obj.(*gatewayv1beta1.ReferenceGrant)) }},
		}
	}
	return nil
}

func routeHostnames(obj any) string {
	var hs []gatewayv1.Hostname
	switch r := obj.(type) {
	case *gatewayv1.HTTPRoute:
		hs = r.Spec.Hostnames
	case *gatewayv1.GRPCRoute:
		hs = r.Spec.Hostnames
	}
	if len(hs) == 0 {
		return "*" // a route without hostnames matches every listener hostname
	}
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = string(h)
	}
	return strings.Join(out, ",")
}

func routeParents(obj any) string {
	var spec gatewayv1.CommonRouteSpec
	var ns string
	switch r := obj.(type) {
	case *gatewayv1.HTTPRoute:
		spec, ns = r.Spec.CommonRouteSpec, r.Namespace
	case *gatewayv1.GRPCRoute:
		spec, ns = r.Spec.CommonRouteSpec, r.Namespace
	}
	out := make([]string, 0, len(spec.ParentRefs))
	for _, p := range spec.ParentRefs {
		out = append(out, parentRefString(p, ns))
	}
	return strings.Join(out, ",")
}

// parentRefString is "gw", "infra/gw", "gw:https" (sectionName) or "gw:443" (port); a Service parent is "svc/NAME".
func parentRefString(p gatewayv1.ParentReference, routeNS string) string {
	var b strings.Builder
	if p.Kind != nil && *p.Kind != "Gateway" {
		b.WriteString(strings.ToLower(string(*p.Kind)) + "/")
	}
	if p.Namespace != nil && string(*p.Namespace) != routeNS {
		b.WriteString(string(*p.Namespace) + "/")
	}
	b.WriteString(string(p.Name))
	if p.SectionName != nil {
		b.WriteString(":" + string(*p.SectionName))
	}
	if p.Port != nil {
		b.WriteString(":" + strconv.Itoa(int(*p.Port)))
	}
	return b.String()
}

// routeCondition sums a route's per-(parentRef, cluster) conditions of condType up per cluster: "east=True" when it is
// True for its one parent there, "west=False(NotAllowedByListeners)" with the reason when it is not, "east=1/2" when
// several parents disagree.
func routeCondition(st *compiler.ObjectStatus, condType string) string {
	type tally struct {
		total, seen, ok int
		reason          string
	}
	byCluster := map[string]*tally{}
	var order []string
	for _, p := range st.Parents {
		t, ok := byCluster[p.Cluster]
		if !ok {
			t = &tally{}
			byCluster[p.Cluster] = t
			order = append(order, p.Cluster)
		}
		t.total++
		c := meta.FindStatusCondition(p.Conditions, condType)
		if c != nil {
			t.seen++
		}
		switch {
		case c != nil && c.Status == metav1.ConditionTrue:
			t.ok++
		case c != nil && t.reason == "":
			t.reason = c.Reason
		}
	}
	sort.Strings(order)
	out := make([]string, 0, len(order))
	for _, cl := range order {
		t := byCluster[cl]
		var v string
		switch {
		case t.seen == 0:
			v = "Unknown"
		case t.total == 1 && t.ok == 1:
			v = "True"
		case t.ok == 0 && t.reason != "":
			v = "False(" + t.reason + ")"
		case t.ok == 0:
			v = "False"
		default:
			v = fmt.Sprintf("%d/%d", t.ok, t.total)
		}
		out = append(out, perCluster(cl, v))
	}
	return strings.Join(out, ",")
}

// perCluster renders "cluster=value"; the compiler reports cluster "" when a parent is not instantiated in any
// cluster yet, and then the value stands alone.
func perCluster(cluster, value string) string {
	if cluster == "" {
		return value
	}
	return cluster + "=" + value
}

// gatewayCondition shows a Gateway condition per cluster when the hub reports per-cluster instances, else the
// summed-up condition.
func gatewayCondition(st *compiler.ObjectStatus, condType string) string {
	if len(st.Clusters) == 0 {
		return conditionText(st.Conditions, condType)
	}
	cs := append([]compiler.ClusterConditions(nil), st.Clusters...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].Cluster < cs[j].Cluster })
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, perCluster(c.Cluster, orNone(conditionText(c.Conditions, condType), "Unknown")))
	}
	return strings.Join(out, ",")
}

// conditionText is "True", or "False(Reason)" / "Unknown(Reason)", or "" when the condition is absent.
func conditionText(conds []metav1.Condition, condType string) string {
	c := meta.FindStatusCondition(conds, condType)
	if c == nil {
		return ""
	}
	if c.Status == metav1.ConditionTrue || c.Reason == "" {
		return string(c.Status)
	}
	return string(c.Status) + "(" + c.Reason + ")"
}

func gatewayListeners(gw *gatewayv1.Gateway) string {
	out := make([]string, 0, len(gw.Spec.Listeners))
	for _, l := range gw.Spec.Listeners {
		out = append(out, fmt.Sprintf("%s:%d/%s", l.Name, l.Port, l.Protocol))
	}
	return strings.Join(out, ",")
}

func grantFrom(rg *gatewayv1beta1.ReferenceGrant) string {
	out := make([]string, 0, len(rg.Spec.From))
	for _, f := range rg.Spec.From {
		out = append(out, string(f.Kind)+"/"+string(f.Namespace))
	}
	return strings.Join(out, ",")
}

func grantTo(rg *gatewayv1beta1.ReferenceGrant) string {
	out := make([]string, 0, len(rg.Spec.To))
	for _, t := range rg.Spec.To {
		s := string(t.Kind)
		if t.Name != nil {
			s += "/" + string(*t.Name)
		}
		out = append(out, s)
	}
	return strings.Join(out, ",")
}

func orNone(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

// ---------------------------------------------------------------- clusters

func printClusters(g *globalOptions, format string, clusters []*fedgatepb.ClusterInfo) error {
	switch format {
	case "json", "yaml":
		// The wire form, so scripts see exactly what the hub reports (protojson: camelCase, int64 as strings).
		js, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(&fedgatepb.ListClustersResponse{Clusters: clusters})
		if err != nil {
			return err
		}
		var doc any
		if err := json.Unmarshal(js, &doc); err != nil {
			return err
		}
		return writeDoc(g.stdout, format, doc)
	}
	if len(clusters) == 0 {
		fmt.Fprintln(g.stderr, "No clusters found")
		return nil
	}
	return printClusterTable(g.stdout, clusters, false)
}

func printClusterTable(w io.Writer, clusters []*fedgatepb.ClusterInfo, prefix bool) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tLABELS\tJOINED\tCONNECTED\tEAST-WEST\tAGENT\tSENT\tACKED\tLAST NACK\tPROJECTION ERROR")
	for _, c := range clusters {
		name := c.GetName()
		if prefix {
			name = "cluster/" + name
		}
		nack := "<none>"
		if c.GetNackedRevision() != 0 {
			nack = fmt.Sprintf("%d: %s", c.GetNackedRevision(), oneLine(c.GetLastNackError()))
		}
		projection := "<none>"
		if c.GetProjectionError() != "" {
			projection = fmt.Sprintf("%d: %s", c.GetProjectionErrorRevision(), oneLine(c.GetProjectionError()))
		}
		joined := "<unknown>"
		if c.GetJoinedAtUnix() > 0 {
			joined = time.Unix(c.GetJoinedAtUnix(), 0).UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\t%s\t%s\t%s\t%s\t%s\n", name, formatLabels(c.GetLabels()), joined, c.GetConnected(), orNone(c.GetEastWestAddress(), "<none>"),
			orNone(c.GetAgentVersion(), "<unknown>"), revision(c.GetSentRevision()), revision(c.GetAckedRevision()), nack, projection)
	}
	return tw.Flush()
}

func formatLabels(l map[string]string) string {
	if len(l) == 0 {
		return "<none>"
	}
	kv := make([]string, 0, len(l))
	for k, v := range l {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

func revision(r int64) string {
	if r == 0 {
		return "-"
	}
	return strconv.FormatInt(r, 10)
}

// oneLine keeps an error (a NACK, a projection error) from breaking the table: newlines and tabs become spaces, long errors are cut.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	const maxLen = 80
	if len(s) > maxLen {
		s = s[:maxLen-3] + "..."
	}
	return s
}
