package compiler

import (
	"os"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func loadClientCACase(t *testing.T, name string) *Inputs {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name + ".in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	in, err := loadInputs(data)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func findConfigMap(t *testing.T, list []*corev1.ConfigMap, ns, name string) *corev1.ConfigMap {
	t.Helper()
	for _, cm := range list {
		if cm.Namespace == ns && cm.Name == name {
			return cm
		}
	}
	t.Fatalf("no ConfigMap %s/%s", ns, name)
	return nil
}

// TestConfigMapRelevance: a ConfigMap no Gateway's caCertificateRefs name changes no projection, whether it changes or
// appears; a referenced one changes the projections of the clusters serving a listener that validates with it, and
// only those.
func TestConfigMapRelevance(t *testing.T) {
	other := func(cm *corev1.ConfigMap) string {
		if cm.Name == "ca-a" {
			return "ca-b"
		}
		return "ca-a"
	}
	t.Run("hub", func(t *testing.T) {
		in := loadClientCACase(t, "clientca-hub")
		before := projectAll(t, in)
		unused := findConfigMap(t, in.Hub.ConfigMaps, "infra", "unused")
		unused.Data = map[string]string{"ca.crt": findConfigMap(t, in.Hub.ConfigMaps, "infra", other(unused)).Data["ca.crt"]}
		in.Hub.ConfigMaps = append(in.Hub.ConfigMaps, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "new", Namespace: "infra"}, Data: map[string]string{"ca.crt": "x"},
		})
		// west's own ConfigMap of a name the hub Gateway references does not count for it.
		west := findConfigMap(t, in.Clusters["west"].ConfigMaps, "infra", "nope")
		west.Data = map[string]string{"ca.crt": "changed"}
		if got, _ := changed(before, projectAll(t, in)); len(got) != 0 {
			t.Fatalf("unreferenced ConfigMaps changed the projections of %v", got)
		}
		caA := findConfigMap(t, in.Hub.ConfigMaps, "infra", "ca-a")
		caA.Data = map[string]string{"ca.crt": findConfigMap(t, in.Hub.ConfigMaps, "infra", "ca-b").Data["ca.crt"]}
		got, _ := changed(before, projectAll(t, in))
		slices.Sort(got)
		if !slices.Equal(got, []string{"east", "west"}) {
			t.Fatalf("changing infra/ca-a changed %v, want [east west]", got)
		}
	})
	t.Run("cluster", func(t *testing.T) {
		in := loadClientCACase(t, "clientca-cluster")
		before := projectAll(t, in)
		// west's and the hub's ConfigMaps are named by east's Gateway, but are not in its scope.
		findConfigMap(t, in.Clusters["west"].ConfigMaps, "apps", "west-ca").Data = map[string]string{"ca.crt": "changed"}
		findConfigMap(t, in.Hub.ConfigMaps, "apps", "hub-ca").Data = map[string]string{"ca.crt": "changed"}
		if got, _ := changed(before, projectAll(t, in)); len(got) != 0 {
			t.Fatalf("out-of-scope ConfigMaps changed the projections of %v", got)
		}
		cm := findConfigMap(t, in.Clusters["east"].ConfigMaps, "cas", "shared-ca")
		cm.Data = map[string]string{"ca.crt": findConfigMap(t, in.Clusters["east"].ConfigMaps, "apps", "client-ca").Data["ca.crt"]}
		if got, _ := changed(before, projectAll(t, in)); !slices.Equal(got, []string{"east"}) {
			t.Fatalf("changing east's cas/shared-ca changed %v, want [east]", got)
		}
	})
}

// TestProjectedClientValidationSharesNoMemory: a projection's CA bundle is a copy.
func TestProjectedClientValidationSharesNoMemory(t *testing.T) {
	g := Compile(loadClientCACase(t, "clientca-cluster")).Graph
	a, b := Project(g, "east"), Project(g, "east")
	va := a.Ports[0].TLS.Listeners[0].ClientValidation
	vb := b.Ports[0].TLS.Listeners[0].ClientValidation
	if va == nil || vb == nil || len(va.CACertificatesPEM) == 0 {
		t.Fatalf("east's first port has no client validation: %+v", a.Ports[0].TLS)
	}
	va.CACertificatesPEM[0] ^= 0xff
	if vb.CACertificatesPEM[0] == va.CACertificatesPEM[0] {
		t.Fatal("two projections share CA bundle memory")
	}
}
