// Package deploy tests the manifests under deploy/: they render, their RBAC grants every permission the code asks
// for, and the flags their containers pass exist in the binaries.
package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/fedgate/fedgate/deploy"
	hubkube "github.com/fedgate/fedgate/hub/kube"
	"github.com/fedgate/fedgate/spoke/kstatus"
	spokekube "github.com/fedgate/fedgate/spoke/source/kube"
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
		b, _ := yaml.Marshal(o.Object)
		if yaml.Unmarshal(b, &cr) != nil {
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

func has(list []string, v string) bool {
	for _, x := range list {
		if x == v || x == "*" {
			return true
		}
	}
	return false
}

func TestRBACCoversWhatTheCodeDoes(t *testing.T) {
	for _, tc := range []struct {
		base  string
		rules []rbacv1.PolicyRule
	}{
		{"hub", hubkube.RBACRules()},
		{"spoke", append(spokekube.RBACRules(), kstatus.RBACRules()...)},
	} {
		objs := render(t, tc.base)
		checked := 0
		for _, r := range tc.rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						checked++
						if !granted(objs, g, res, v) {
							t.Errorf("deploy/%s: no ClusterRole grants %q on %s (group %q), which the code needs", tc.base, v, res, g)
						}
					}
				}
			}
		}
		if checked == 0 {
			t.Fatalf("deploy/%s: the code declared no permissions", tc.base)
		}
		for _, o := range objs {
			if o.GetKind() == "ClusterRole" && granted([]*unstructured.Unstructured{o}, "", "secrets", "list") {
				t.Errorf("deploy/%s: ClusterRole %s can list Secrets cluster-wide", tc.base, o.GetName())
			}
		}
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
