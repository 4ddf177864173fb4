package source

import (
	"bytes"

	"context"
	"encoding/json"
	"github.com/fedgate/fedgate/apis/resources"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

const caGateway = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: shop
spec:
  gatewayClassName: fedgate
  listeners:
  - name: http
    port: 80
    protocol: HTTP
  tls:
    frontend:
      default:
        validation:
          caCertificateRefs:
          - kind: ConfigMap
            group: ""
            name: client-ca
      perPort:
      - port: 8443
        tls:
          validation:
            caCertificateRefs:
            - kind: ConfigMap
              group: ""
              name: port-ca
              namespace: pki
`

func caConfigMapYAML(name, ns, bundle string) string {
	return `apiVersion: v1
kind: ConfigMap
metadata:
  name: ` + name + `
` + ns + `  labels:
    note: not-reported
data:
  ca.crt: ` + bundle + `
  other: not-reported
`
}

// A directory's ConfigMaps: only those a Gateway's frontend validation references (default and per port) are reported,
// with their ca.crt alone; the others are neither reported nor an error; edits are followed; dropping the reference
// drops the ConfigMap.
func TestDirCAConfigMaps(t *testing.T) {
	dir := t.TempDir()
	writeAtomic(t, filepath.Join(dir, "gw.yaml"), caGateway)
	writeAtomic(t, filepath.Join(dir, "cas.yaml"), caConfigMapYAML("client-ca", "", "BUNDLE-1")+"---\n"+
		caConfigMapYAML("unreferenced", "", "BUNDLE-X")+"---\n"+service("cart", "8080"))
	writeAtomic(t, filepath.Join(dir, "pki.yaml"), caConfigMapYAML("port-ca", "  namespace: pki\n", "BUNDLE-P"))

	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan Snapshot, 16)
	done := make(chan error, 1)
	d := &Dir{Path: dir, DefaultNamespace: "shop", Debounce: 20 * time.Millisecond, PollInterval: time.Hour}
	go func() { done <- d.Run(ctx, func(s Snapshot) { ch <- s }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	s := next(t, ch)
	// Sorted here: where ConfigMaps sort in a snapshot depends on whether resources.Kinds lists them yet.
	if got, want := sortedIDs(s), "ConfigMap/pki/port-ca,ConfigMap/shop/client-ca,Gateway/shop/edge,Service/shop/cart,ServiceExport/shop/cart"; got != want {
		t.Fatalf("snapshot %s, want %s", got, want)
	}
	js := find(t, s, "ConfigMap/shop/client-ca")
	var cm corev1.ConfigMap
	if err := json.Unmarshal([]byte(js), &cm); err != nil {
		t.Fatal(err)
	}
	if len(cm.Data) != 1 || cm.Data["ca.crt"] != "BUNDLE-1" || strings.Contains(js, "not-reported") || cm.Kind != "ConfigMap" || cm.APIVersion != "v1" {
		t.Errorf("reported ConfigMap %s", js)
	}

	// An edit of the bundle is followed.
	writeAtomic(t, filepath.Join(dir, "cas.yaml"), caConfigMapYAML("client-ca", "", "BUNDLE-2")+"---\n"+
		caConfigMapYAML("unreferenced", "", "BUNDLE-X")+"---\n"+service("cart", "8080"))
	s = next(t, ch)
	if js := find(t, s, "ConfigMap/shop/client-ca"); !strings.Contains(js, "BUNDLE-2") {
		t.Errorf("reported ConfigMap after the edit: %s", js)
	}

	// No reference any more: not reported.
	writeAtomic(t, filepath.Join(dir, "gw.yaml"), gateway)
	s = next(t, ch)
	if strings.Contains(ids(s), "ConfigMap/") {
		t.Errorf("snapshot %s still reports a ConfigMap", ids(s))
	}
}

func TestSplitConfigMapDocs(t *testing.T) {
	in := "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n" + caConfigMapYAML("ca", "", "B") + "---\nkind: Service\nmetadata: [unclosed\n"
	rest, cms, err := splitConfigMapDocs([]byte(in), "shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(cms) != 1 || cms[0].Namespace != "shop" || cms[0].Name != "ca" || cms[0].Data["ca.crt"] != "B" {
		t.Errorf("ConfigMaps %+v", cms)
	}
	if strings.Contains(string(rest), "ConfigMap\n") || !strings.Contains(string(rest), "name: a") || !strings.Contains(string(rest), "[unclosed") {
		t.Errorf("rest %q", rest)
	}
	// The broken third document keeps its number in DecodeYAML's error.
	if _, err := decodeForTest(rest); err == nil || !strings.Contains(err.Error(), "document 3") {
		t.Errorf("DecodeYAML of the rest: %v", err)
	}
	if _, _, err := splitConfigMapDocs([]byte("apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n"), ""); err == nil {
		t.Error("a ConfigMap without a name is accepted")
	}
}

func decodeForTest(b []byte) (int, error) {
	objs, err := resources.DecodeYAML(bytes.NewReader(b), "f.yaml", "shop")
	return len(objs), err
}

func sortedIDs(s Snapshot) string {
	l := strings.Split(ids(s), ",")
	sort.Strings(l)
	return strings.Join(l, ",")
}
