package kube

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/fedgate/fedgate/apis/hubv1alpha1"
	fgenvtest "github.com/fedgate/fedgate/test/envtest"
)

// TestManagedClusterCRDValidation holds fedgate's own CRD to its schema and CEL rules on a real API server.
func TestManagedClusterCRDValidation(t *testing.T) {
	ctx := context.Background()
	c := fgenvtest.Start(t, "hub")[0]
	if _, err := crenvtest.InstallCRDs(c.Config, crenvtest.CRDInstallOptions{
		Paths: []string{filepath.Join(fgenvtest.RepoRoot(), "deploy", "hub-crds")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatal(err)
	}
	s := runtime.NewScheme()
	if err := hubv1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(c.Config, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	valid := func(name string) *hubv1alpha1.ManagedCluster {
		return &hubv1alpha1.ManagedCluster{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       hubv1alpha1.ManagedClusterSpec{EastWestAddress: "east.example.com:15443", Labels: map[string]string{"region": "eu"}},
		}
	}
	for _, tc := range []struct {
		name       string
		mutate     func(*hubv1alpha1.ManagedCluster)
		wantErrors []string
	}{
		{name: "valid", mutate: func(*hubv1alpha1.ManagedCluster) {}},
		{name: "ipv6 east-west", mutate: func(m *hubv1alpha1.ManagedCluster) { m.Spec.EastWestAddress = "[fd00::1]:15443" }},
		{name: "name not a DNS label", mutate: func(m *hubv1alpha1.ManagedCluster) { m.Name = "east.eu" },
			wantErrors: []string{"metadata.name must be a DNS label"}},
		{name: "east-west without port", mutate: func(m *hubv1alpha1.ManagedCluster) { m.Spec.EastWestAddress = "east.example.com" },
			wantErrors: []string{"spec.eastWestAddress", "must be host:port"}},
		{name: "label value too long", mutate: func(m *hubv1alpha1.ManagedCluster) { m.Spec.Labels["region"] = strings.Repeat("x", 64) },
			wantErrors: []string{"spec.labels.region", "may not be more than 63"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := valid("c-" + strings.ReplaceAll(strings.ToLower(tc.name), " ", "-"))
			tc.mutate(m)
			err := cl.Create(ctx, m)
			if len(tc.wantErrors) == 0 {
				if err != nil {
					t.Fatalf("valid ManagedCluster refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want errors %q", tc.wantErrors)
			}
			for _, want := range tc.wantErrors {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}

	// Status is validated too: the hub never writes a condition status outside True/False/Unknown.
	m := valid("status-check")
	if err := cl.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.Status.Conditions = []metav1.Condition{{Type: "Available", Status: "Maybe", Reason: "X", LastTransitionTime: metav1.Now()}}
	err = cl.Status().Update(ctx, m)
	if err == nil || !strings.Contains(err.Error(), "status.conditions[0].status") {
		t.Fatalf("status with condition status Maybe: %v", err)
	}
	m.Status.Conditions[0].Status = metav1.ConditionTrue
	m.Status.AckedRevision = -1
	err = cl.Status().Update(ctx, m)
	if err == nil || !strings.Contains(err.Error(), "status.ackedRevision") {
		t.Fatalf("negative ackedRevision: %v", err)
	}
}
