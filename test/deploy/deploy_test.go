// Package deploy tests the manifests under deploy/: they render, their RBAC grants every permission the code asks
// for, and the flags their containers pass exist in the binaries.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	hubkube "github.com/fedgate/fedgate/hub/kube"
	"github.com/fedgate/fedgate/spoke/kstatus"
	spokekube "github.com/fedgate/fedgate/spoke/source/kube"
)

// render reads a kustomization (resources and namespace only: all our bases use) into objects.
func render(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	var k struct {
		Namespace string   `json:"namespace"`
		Resources []string `json:"resources"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	var out []*unstructured.Unstructured
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			out = append(out, render(t, p)...)
			continue
		}
		f, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%s: resource %s: %v", dir, r, err)
		}
		rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(f)))
		for {
			doc, err := rd.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &u.Object); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			if k.Namespace != "" && u.GetKind() != "Namespace" && u.GetKind() != "ClusterRole" && u.GetKind() != "ClusterRoleBinding" && u.GetKind() != "CustomResourceDefinition" {
				u.SetNamespace(k.Namespace)
			}
			out = append(out, u)
		}
	}
	return out
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
		objs := render(t, filepath.Join("..", "..", "deploy", tc.base))
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
		for _, o := range render(t, filepath.Join("..", "..", "deploy", tc.base)) {
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
