package proxy

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestLimitsDocumentedDefaults: every Limits field documents its default ("Default: X.") and the documentation
// equals DefaultLimits, and zero fields take those defaults.
func TestLimitsDocumentedDefaults(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "limits.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^Default: (.+)\.$`)
	documented := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != "Limits" {
			return true
		}
		for _, field := range ts.Type.(*ast.StructType).Fields.List {
			if m := re.FindStringSubmatch(field.Doc.Text()); m != nil {
				documented[field.Names[0].Name] = m[1]
			}
		}
		return false
	})
	d := reflect.ValueOf(DefaultLimits())
	filled := reflect.ValueOf(Limits{}.withDefaults())
	for i := range d.NumField() {
		name := d.Type().Field(i).Name
		doc, ok := documented[name]
		if !ok {
			t.Errorf("%s: no \"Default:\" line", name)
			continue
		}
		if got := fmt.Sprint(d.Field(i).Interface()); got != doc {
			t.Errorf("%s: documented %s, DefaultLimits %s", name, doc, got)
		}
		if !reflect.DeepEqual(d.Field(i).Interface(), filled.Field(i).Interface()) {
			t.Errorf("%s: a zero field is filled with %v, not the default", name, filled.Field(i).Interface())
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := DefaultLimits()
	bad.MaxRequestHeaders = -1
	bad.KeepaliveIdleTimeout = -time.Second
	bad.MaxRequestLineBytes = bad.MaxRequestHeaderBytes + 1
	err := bad.Validate()
	for _, want := range []string{"MaxRequestHeaders", "KeepaliveIdleTimeout", "MaxRequestLineBytes"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
}
