// Package deploy tests the manifests under deploy/: they render, their RBAC grants every permission the code asks
// for (and, for the spoke, nothing else), the spoke's replicas tell themselves apart, and the flags their containers
// pass exist in the binaries.
package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	hubctl "github.com/fedgate/fedgate/cmd/hubctl/app"
	"github.com/fedgate/fedgate/deploy"
	hubkube "github.com/fedgate/fedgate/hub/kube"
	"github.com/fedgate/fedgate/spoke/credentials"
	"github.com/fedgate/fedgate/spoke/kstatus"
	"github.com/fedgate/fedgate/spoke/leader"
	spokekube "github.com/fedgate/fedgate/spoke/source/kube"
	"github.com/fedgate/fedgate/spoke/uninstall"
)

// render renders a base of deploy/ as embedded in the binaries (deploy.FS), which is what hubctl join --install applies.
func render(t *testing.T, base string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := deploy.Render(deploy.FS, base)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 {
		t.Fatalf("deploy/%s renders no objects", base)
	}
	return objs
}

// granted reports whether the ClusterRoles in objs grant verb on group/resource.
func granted(objs []*unstructured.Unstructured, group, resource, verb string) bool {
	for _, o := range objs {
		if o.GetKind() != "ClusterRole" {
			continue
		}
		var cr rbacv1.ClusterRole
		if decode(o, &cr) != nil {
			continue
		}
		for _, r := range cr.Rules {
			if has(r.APIGroups, group) && has(r.Resources, resource) && has(r.Verbs, verb) {
				return true
			}
		}
	}
	return false
}

func decode(o *unstructured.Unstructured, into any) error {
	b, err := yaml.Marshal(o.Object)
	if err != nil {
		return err
	}
	return yaml.Unmarshal(b, into)
}

func has(list []string, v string) bool {
	for _, x := range list {
		if x == v || x == "*" {
			return true
		}
	}
	return false
}

// perm is one permission as RBAC decides it: verb on group/resource, in a namespace ("" for every namespace and
// cluster-scoped objects) and for one named object ("" for any name).
type perm struct{ namespace, group, resource, verb, name string }

func (p perm) String() string {
	s := fmt.Sprintf("%s %s", p.verb, p.resource)
	if p.group != "" {
		s += "." + p.group
	}
	if p.name != "" {
		s += "/" + p.name
	}
	if p.namespace != "" {
		s += " in namespace " + p.namespace
	}
	return s
}

// covers reports whether grant g allows what p asks; "*" counts, as for the API server.
func (g perm) covers(p perm) bool {
	match := func(a, b string) bool { return a == b || a == "*" }
	return (g.namespace == "" || g.namespace == p.namespace) && match(g.group, p.group) && match(g.resource, p.resource) &&
		match(g.verb, p.verb) && (g.name == "" || g.name == p.name)
}

func perms(namespace string, rules []rbacv1.PolicyRule) []perm {
	var out []perm
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					for _, n := range names {
						out = append(out, perm{namespace, g, res, v, n})
					}
				}
			}
		}
	}
	return out
}

// grantsTo returns every permission objs give the ServiceAccount namespace/name: ClusterRoles bound by
// ClusterRoleBindings everywhere, Roles and ClusterRoles bound by RoleBindings in their binding's namespace.
func grantsTo(t *testing.T, objs []*unstructured.Unstructured, namespace, name string) []perm {
	t.Helper()
	rules := map[string][]rbacv1.PolicyRule{} // by kind/namespace/name
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterRole", "Role":
			var r rbacv1.Role // a ClusterRole's rules decode the same way
			if err := decode(o, &r); err != nil {
				t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
			}
			rules[o.GetKind()+"/"+o.GetNamespace()+"/"+o.GetName()] = r.Rules
		}
	}
	bound := func(subjects []rbacv1.Subject, bindingNS string) bool {
		for _, s := range subjects {
			ns := s.Namespace
			if ns == "" {
				ns = bindingNS
			}
			if s.Kind == rbacv1.ServiceAccountKind && s.Name == name && ns == namespace {
				return true
			}
		}
		return false
	}
	var out []perm
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterRoleBinding", "RoleBinding":
			var b rbacv1.RoleBinding // a ClusterRoleBinding decodes the same way
			if err := decode(o, &b); err != nil {
				t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
			}
			if !bound(b.Subjects, o.GetNamespace()) {
				continue
			}
			roleNS := ""
			if b.RoleRef.Kind == "Role" {
				roleNS = o.GetNamespace()
			}
			r, ok := rules[b.RoleRef.Kind+"/"+roleNS+"/"+b.RoleRef.Name]
			if !ok {
				t.Errorf("%s %s binds %s %s, which deploy/ does not define", o.GetKind(), o.GetName(), b.RoleRef.Kind, b.RoleRef.Name)
			}
			out = append(out, perms(o.GetNamespace(), r)...) // "" for a ClusterRoleBinding
		}
	}
	return out
}

// deployment returns the one Deployment in objs.
func deployment(t *testing.T, objs []*unstructured.Unstructured) *appsv1.Deployment {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			var d appsv1.Deployment
			if err := decode(o, &d); err != nil {
				t.Fatal(err)
			}
			return &d
		}
	}
	t.Fatal("no Deployment")
	return nil
}

// flag returns the value of --name in args, and whether it is there.
func flag(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name {
			return "true", true
		}
	}
	return "", false
}

// fieldFrom reports whether value is $(VAR) with VAR set from the pod's fieldPath in container c.
func fieldFrom(c corev1.Container, value, fieldPath string) bool {
	v, ok := strings.CutPrefix(value, "$(")
	if !ok || !strings.HasSuffix(v, ")") {
		return false
	}
	v = strings.TrimSuffix(v, ")")
	for _, e := range c.Env {
		if e.Name == v && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == fieldPath {
			return true
		}
	}
	return false
}

// spokeNeeds is every permission the spoke's code declares, where deploy/spoke runs it: the source's and the status
// writer's cluster-wide, and leader election's on its Lease in the Deployment's own namespace (the Deployment passes
// the pod's namespace, and the Lease name unless it keeps the default).
func spokeNeeds(t *testing.T, dep *appsv1.Deployment) []perm {
	t.Helper()
	c := dep.Spec.Template.Spec.Containers[0]
	if v, ok := flag(c.Args, "leader-elect"); ok && v != "true" {
		t.Fatalf("deploy/spoke turns leader election off (--leader-elect=%s), yet runs %v replicas", v, dep.Spec.Replicas)
	}
	if v, ok := flag(c.Args, "leader-elect-namespace"); ok && !fieldFrom(c, v, "metadata.namespace") {
		t.Errorf("deploy/spoke: --leader-elect-namespace=%s, want the pod's namespace from the downward API", v)
	}
	lease := leader.DefaultLeaseName
	if v, ok := flag(c.Args, "leader-elect-lease"); ok {
		lease = v
	}
	need := perms("", append(spokekube.RBACRules(), kstatus.RBACRules()...))
	need = append(need, perms(dep.Namespace, leader.RBACRules(lease))...)
	if v, ok := flag(c.Args, "credentials-secret"); ok {
		ns, name, _ := strings.Cut(v, "/")
		if !fieldFrom(c, ns, "metadata.namespace") {
			t.Errorf("deploy/spoke: --credentials-secret=%s, want the Secret in the pod's namespace from the downward API", v)
		}
		need = append(need, perms(dep.Namespace, credentials.SecretRBACRules(name))...)
	}
	if v, ok := flag(c.Args, "install-owner"); ok {
		need = append(need, perms("", uninstall.RBACRules(v))...)
	}
	return need
}

// RBAC in deploy/ against what the code declares (each package's RBACRules, proven against a real API server by that
// package's tests), in both directions for the spoke: every permission the code needs is granted to the spoke's
// ServiceAccount, and every permission granted is one the code needs — nothing broader, nothing left over. The hub
// is checked in the first direction only.
func TestRBACMatchesWhatTheCodeDoes(t *testing.T) {
	for _, tc := range []struct {
		base    string
		install bool // as hubctl join --install applies it
		sa      string
		exact   bool
		needs   func(*testing.T, []*unstructured.Unstructured) []perm
	}{
		{base: "hub", sa: "fedgate-hub", needs: func(*testing.T, []*unstructured.Unstructured) []perm { return perms("", hubkube.RBACRules()) }},
		{base: "spoke", sa: "fedgate-spoke", exact: true, needs: func(t *testing.T, objs []*unstructured.Unstructured) []perm {
			return spokeNeeds(t, deployment(t, objs))
		}},
		// What `hubctl join --install` applies: deploy/spoke, plus the right to delete the ClusterRole that owns it.
		{base: "spoke", install: true, sa: "fedgate-spoke", exact: true, needs: func(t *testing.T, objs []*unstructured.Unstructured) []perm {
			return spokeNeeds(t, deployment(t, objs))
		}},
	} {
		objs := render(t, tc.base)
		if tc.install {
			var err error
			if objs, err = hubctl.SpokeInstall("fedgate-system", "fedgate/spoke:test"); err != nil {
				t.Fatal(err)
			}
		}
		need := tc.needs(t, objs)
		if len(need) == 0 {
			t.Fatalf("deploy/%s: the code declared no permissions", tc.base)
		}
		grants := grantsTo(t, objs, "fedgate-system", tc.sa)
		for _, p := range need {
			if !slices.ContainsFunc(grants, func(g perm) bool { return g.covers(p) }) {
				t.Errorf("deploy/%s: ServiceAccount %s may not %s, which the code needs", tc.base, tc.sa, p)
			}
		}
		if tc.exact {
			for _, g := range grants {
				if !slices.Contains(need, g) {
					t.Errorf("deploy/%s: ServiceAccount %s may %s, which the code never does", tc.base, tc.sa, g)
				}
			}
		}
		// Secrets and ConfigMaps cluster-wide: the hub never; the spoke only list and watch, for its watches of the
		// TLS Secrets and CA ConfigMaps its Gateways reference, each by name (spoke/source/kube) — never get (which
		// would read any of them by name) nor a write.
		for _, o := range objs {
			if o.GetKind() != "ClusterRole" {
				continue
			}
			for _, res := range []string{"secrets", "configmaps"} {
				for _, verb := range []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"} {
					if !granted([]*unstructured.Unstructured{o}, "", res, verb) {
						continue
					}
					if tc.base != "spoke" || (verb != "list" && verb != "watch") {
						t.Errorf("deploy/%s: ClusterRole %s can %s %s cluster-wide", tc.base, o.GetName(), verb, res)
					}
				}
			}
		}
		t.Logf("deploy/%s: %d permissions needed, %d granted", tc.base, len(need), len(grants))
	}
}

// The spoke Deployment runs several replicas that tell themselves apart: each gossips as its own member at its own
// address, and leader election is on (so one reports and writes status).
func TestSpokeReplicasAreDistinct(t *testing.T) {
	dep := deployment(t, render(t, "spoke"))
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Fatalf("deploy/spoke runs %v replicas, want at least 2", dep.Spec.Replicas)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	for _, f := range []struct{ flag, fieldPath string }{
		{"replica-name", "metadata.name"},
		{"gossip-address", "status.podIP"},
	} {
		if v, ok := flag(c.Args, f.flag); !ok || !fieldFrom(c, v, f.fieldPath) {
			t.Errorf("deploy/spoke: --%s=%q, want $(VAR) with VAR from the pod's %s", f.flag, v, f.fieldPath)
		}
	}
	if _, ok := flag(c.Args, "gossip-listen"); !ok {
		t.Error("deploy/spoke: no --gossip-listen")
	}
}

// TestContainerFlagsExist: every --flag in the Deployments' args is one the binary defines.
func TestContainerFlagsExist(t *testing.T) {
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+"/", "github.com/fedgate/fedgate/cmd/hub", "github.com/fedgate/fedgate/cmd/spoke")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ base, binary string }{{"hub", "hub"}, {"spoke", "spoke"}} {
		var help bytes.Buffer
		h := exec.Command(filepath.Join(bin, tc.binary), "-h")
		h.Stdout, h.Stderr = &help, &help
		_ = h.Run()
		for _, o := range render(t, tc.base) {
			if o.GetKind() != "Deployment" {
				continue
			}
			containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			for _, c := range containers {
				args, _, _ := unstructured.NestedStringSlice(c.(map[string]any), "args")
				for _, a := range args {
					name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
					if !strings.Contains(help.String(), "-"+name+" ") && !strings.Contains(help.String(), "-"+name+"\n") {
						t.Errorf("deploy/%s: %s passes %s, which %s does not define", tc.base, o.GetName(), a, tc.binary)
					}
				}
			}
		}
	}
}
