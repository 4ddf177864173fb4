package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/fedgate/fedgate/deploy"
	"github.com/fedgate/fedgate/test/envtest"
)

// bases are the kustomize bases the README applies with kubectl apply -k.
var bases = []string{"crds", "hub", "hub-crds", "hub-etcd", "spoke"}

func ids(objs []*unstructured.Unstructured) []string {
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.GetKind()+" "+o.GetNamespace()+"/"+o.GetName())
	}
	slices.Sort(out)
	return out
}

// Every base renders with kubectl kustomize — which refuses, for one, a file outside the base's directory — into the
// same objects as deploy.Render, the renderer hubctl join --install and these tests use.
func TestEveryBaseRendersWithKubectl(t *testing.T) {
	kubectl, err := envtest.Kubectl()
	if err != nil {
		t.Fatalf("kubectl: %v", err)
	}
	root := filepath.Join(envtest.RepoRoot(), "deploy")
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(root, e.Name(), "kustomization.yaml")); err == nil && !slices.Contains(bases, e.Name()) {
			t.Errorf("deploy/%s is a kustomize base this test does not know: add it to bases", e.Name())
		}
	}
	for _, base := range bases {
		cmd := exec.Command(kubectl, "kustomize", filepath.Join(root, base))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("kubectl kustomize deploy/%s: %v\n%s", base, err, stderr.String())
			continue
		}
		var got []*unstructured.Unstructured
		d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := d.Decode(&u.Object); err != nil {
				break
			}
			if len(u.Object) > 0 {
				got = append(got, u)
			}
		}
		want, err := deploy.Render(os.DirFS(root), base)
		if err != nil {
			t.Errorf("deploy.Render(deploy/%s): %v", base, err)
			continue
		}
		if g, w := ids(got), ids(want); !slices.Equal(g, w) {
			t.Errorf("deploy/%s: kubectl kustomize renders\n  %s\ndeploy.Render renders\n  %s", base, strings.Join(g, "\n  "), strings.Join(w, "\n  "))
		}
	}
}

// deploy.Render refuses what kubectl apply -k refuses: a file of another directory named as a resource (the hub base
// once named ../hub-crds/<file>, which passed here and failed for every user).
func TestRenderRefusesAFileOutsideTheBase(t *testing.T) {
	fsys := fstest.MapFS{
		"a/kustomization.yaml": {Data: []byte("resources:\n- ../b/crd.yaml\n")},
		"b/crd.yaml":           {Data: []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")},
		"b/kustomization.yaml": {Data: []byte("resources:\n- crd.yaml\n")},
		"c/kustomization.yaml": {Data: []byte("namespace: ns\nresources:\n- ../b\n")},
	}
	if _, err := deploy.Render(fsys, "a"); err == nil || !strings.Contains(err.Error(), "not in or below a") {
		t.Errorf("Render of a base naming ../b/crd.yaml: %v, want a refusal", err)
	}
	objs, err := deploy.Render(fsys, "c")
	if err != nil {
		t.Fatalf("Render of a base naming the base ../b: %v", err)
	}
	if got := ids(objs); !slices.Equal(got, []string{"ConfigMap ns/x"}) {
		t.Errorf("Render of c: %v, want the ConfigMap of base b in c's namespace", got)
	}
}
