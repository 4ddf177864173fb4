package store

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/resources"
)

func configMapObject(name, body string) *fedgatepb.Object {
	return &fedgatepb.Object{ApiVersion: "v1", Kind: resources.KindConfigMap, Namespace: "apps", Name: name,
		Json: []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"` + name + `","namespace":"apps"}` + body + `}`)}
}

// TestReportedConfigMaps: a cluster reports a CA ConfigMap with data[ca.crt] alone; one with other data (or
// binaryData) refuses the whole report, naming the object and the field, and stores nothing of it. Hub-applied and
// reported ConfigMaps both reach the compiler's inputs, read at one revision.
func TestReportedConfigMaps(t *testing.T) {
	s, stop := startStore(t, t.TempDir(), Options{})
	defer stop()
	ctx := context.Background()
	clean := configMapObject("client-ca", `,"data":{"ca.crt":"PEM"}`)
	for _, bad := range []*fedgatepb.Object{
		configMapObject("extra", `,"data":{"ca.crt":"PEM","password":"hunter2"}`),
		configMapObject("binary", `,"binaryData":{"ca.crt":"UEVN"}`),
	} {
		_, err := s.ReplaceReport(ctx, "east", []*fedgatepb.Object{clean, bad})
		if !errors.Is(err, ErrInvalidObject) || !strings.Contains(err.Error(), "Forbidden") ||
			!strings.Contains(err.Error(), `ConfigMap "apps/`+bad.Name+`"`) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("snapshot with %s: %v", bad.Name, err)
		}
		if _, err := s.ApplyReportDelta(ctx, "east", []*fedgatepb.Object{bad}, nil); !errors.Is(err, ErrInvalidObject) {
			t.Errorf("delta with %s: %v", bad.Name, err)
		}
	}
	if objs, err := s.Report(ctx, "east"); err != nil || len(objs) != 0 {
		t.Fatalf("a refused report stored %d objects (%v)", len(objs), err)
	}
	if _, err := s.ReplaceReport(ctx, "east", []*fedgatepb.Object{clean}); err != nil {
		t.Fatalf("ConfigMap with ca.crt alone: %v", err)
	}
	if _, _, err := s.ApplyHub(ctx, []*fedgatepb.Object{configMapObject("hub-ca", `,"data":{"ca.crt":"HUB","other":"kept"}`)}); err != nil {
		t.Fatal(err)
	}
	in, err := s.ReadInputs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Hub.ConfigMaps) != 1 || in.Hub.ConfigMaps[0].Data["ca.crt"] != "HUB" {
		t.Errorf("hub ConfigMaps in inputs: %+v", in.Hub.ConfigMaps)
	}
	if ci := in.Clusters["east"]; ci == nil || len(ci.ConfigMaps) != 1 || ci.ConfigMaps[0].Data["ca.crt"] != "PEM" {
		t.Errorf("east's ConfigMaps in inputs: %+v", ci)
	}
}
