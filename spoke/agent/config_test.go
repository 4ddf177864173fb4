package agent

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var defaultDoc = regexp.MustCompile(`(?m)^Default: (.+)\.$`)

// TestDocumentedDefaultsMatchCode reads the "Default: X." lines of Config's field comments and checks each against
// Config{}.Defaults(), and that every field Defaults fills in is documented.
func TestDocumentedDefaultsMatchCode(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "config.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != "Config" {
			return true
		}
		for _, field := range ts.Type.(*ast.StructType).Fields.List {
			if m := defaultDoc.FindStringSubmatch(field.Doc.Text()); m != nil {
				for _, name := range field.Names {
					documented[name.Name] = m[1]
				}
			}
		}
		return false
	})
	if len(documented) == 0 {
		t.Fatal("no documented defaults found in config.go")
	}

	zero, got := reflect.ValueOf(Config{}), reflect.ValueOf(Config{}.Defaults())
	for i := range got.NumField() {
		name := got.Type().Field(i).Name
		if name == "Log" || !got.Type().Field(i).IsExported() { // Log is documented in prose; unexported fields are test seams
			continue
		}
		doc, ok := documented[name]
		changed := !reflect.DeepEqual(zero.Field(i).Interface(), got.Field(i).Interface())
		if changed && !ok {
			t.Errorf("%s: Defaults sets %v but the field comment has no \"Default:\" line", name, got.Field(i).Interface())
			continue
		}
		if !ok {
			continue
		}
		var want string
		switch {
		case doc == "Version":
			want = Version
		case strings.HasPrefix(doc, `"`):
			if want, err = strconv.Unquote(doc); err != nil {
				t.Fatalf("%s: documented default %s: %v", name, doc, err)
			}
		default:
			want = doc
		}
		if g := fmt.Sprint(got.Field(i).Interface()); g != want {
			t.Errorf("%s: documented default %s, code default %s", name, want, g)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	valid := Config{Cluster: "east", HubAddress: "127.0.0.1:9443", plaintextHub: true}.Defaults()
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"no cluster", func(c *Config) { c.Cluster = "" }, "cluster: required"},
		{"cluster with slash", func(c *Config) { c.Cluster = "a/b" }, `cluster "a/b"`},
		{"hub without port", func(c *Config) { c.HubAddress = "hub" }, `hubAddress "hub"`},
		{"hub replica without port", func(c *Config) { c.HubAddress = "127.0.0.1:9443,hub" }, `hubAddress "hub"`},
		{"empty hub replica", func(c *Config) { c.HubAddress = "127.0.0.1:9443,,127.0.0.1:9444" }, `hubAddress ""`},
		{"east-west without port", func(c *Config) { c.EastWestListen = "127.0.0.1" }, `eastWestListen "127.0.0.1"`},
		{"bad advertised address", func(c *Config) { c.EastWestAddress = "x" }, `eastWestAddress "x"`},
		{"listen host not an IP", func(c *Config) { c.ListenHost = "localhost" }, `listenHost "localhost"`},
		{"negative port offset", func(c *Config) { c.PortOffset = -1 }, "portOffset -1"},
		{"backoff inverted", func(c *Config) { c.MaxBackoff = time.Millisecond }, "backoff"},
		{"keepalive too short", func(c *Config) { c.KeepaliveTime = time.Second }, "keepaliveTime 1s"},
		{"empty label key", func(c *Config) { c.Labels = map[string]string{"": "x"} }, "labels: empty key"},
		{"hub without credentials", func(c *Config) { c.plaintextHub = false }, "credentials: required with a hub address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
