// Package deploy carries fedgate's Kubernetes manifests (the kustomize bases in this folder) inside the binaries, so
// `hubctl join --install` can install the spoke without a checkout, and renders them the way `kubectl apply -k`
// would for these bases (resources and namespace; no patches or generators are used here).
package deploy

import (
	"bufio"
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// FS holds the hub and spoke bases and fedgate's own CRDs.
//
//go:embed hub spoke hub-crds hub-etcd
var FS embed.FS

// clusterScoped kinds keep no namespace when a kustomization sets one.
var clusterScoped = map[string]bool{
	"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true, "CustomResourceDefinition": true,
}

// Render reads the kustomization in dir of fsys (resources and namespace only) into objects, in file order.
func Render(fsys fs.FS, dir string) ([]*unstructured.Unstructured, error) {
	var k struct {
		Namespace string   `json:"namespace"`
		Resources []string `json:"resources"`
	}
	b, err := fs.ReadFile(fsys, path.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("%s/kustomization.yaml: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range k.Resources {
		p := path.Clean(path.Join(dir, r))
		if st, err := fs.Stat(fsys, p); err == nil && st.IsDir() {
			sub, err := Render(fsys, p)
			if err != nil {
				return nil, err
			}
			// A kustomization's namespace applies to what its bases render too.
			for _, u := range sub {
				if k.Namespace != "" && !clusterScoped[u.GetKind()] {
					u.SetNamespace(k.Namespace)
				}
			}
			out = append(out, sub...)
			continue
		}
		// kustomize's load restrictor: a file resource must lie in or below the kustomization's directory (another
		// directory is loaded as a base of its own). kubectl apply -k refuses anything else, so this does too.
		if !strings.HasPrefix(p, dir+"/") {
			return nil, fmt.Errorf("%s: resource %s: file is not in or below %s (make its directory a base with a kustomization.yaml)", dir, r, dir)
		}
		f, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, fmt.Errorf("%s: resource %s: %w", dir, r, err)
		}
		rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(f)))
		for {
			doc, err := rd.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &u.Object); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			if k.Namespace != "" && !clusterScoped[u.GetKind()] {
				u.SetNamespace(k.Namespace)
			}
			out = append(out, u)
		}
	}
	return out, nil
}
