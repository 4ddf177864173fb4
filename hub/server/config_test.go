package server

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

// TestDocumentedDefaults holds every "Default: `x`" in Config's field comments equal to DefaultConfig.
func TestDocumentedDefaults(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "app.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("Default: `([^`]*)`")
	def := reflect.ValueOf(DefaultConfig())
	checked := 0
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != "Config" {
			return true
		}
		for _, field := range ts.Type.(*ast.StructType).Fields.List {
			m := re.FindStringSubmatch(field.Doc.Text())
			if m == nil {
				continue
			}
			for _, name := range field.Names {
				if got := format(def.FieldByName(name.Name).Interface()); got != m[1] {
					t.Errorf("Config.%s: documented default %q, DefaultConfig has %q", name.Name, m[1], got)
				}
				checked++
			}
		}
		return false
	})
	if checked < 8 {
		t.Fatalf("only %d documented defaults found", checked)
	}
}

func format(v any) string {
	switch x := v.(type) {
	case []string:
		return strings.Join(x, ",")
	case time.Duration:
		return x.String()
	}
	return fmt.Sprint(v)
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.Listen = "nohost" }, "listen"},
		{func(c *Config) { c.DataDir = "" }, "data-dir"},
		{func(c *Config) { c.EtcdClientPort = 70000 }, "etcd-client-port"},
		{func(c *Config) { c.EtcdClientPort, c.EtcdPeerPort = 2379, 2379 }, "both 2379"},
		{func(c *Config) { c.CompileHoldOff = 0 }, "compile-holdoff"},
		{func(c *Config) { c.CompileMaxDelay = time.Millisecond }, "compile-max-delay"},
		{func(c *Config) { c.CACert = "ca.crt" }, "ca-cert and ca-key"},
		{func(c *Config) { c.CertTTL = time.Second }, "cert-ttl"},
		{func(c *Config) { c.AdvertiseAddress = "nohost" }, "advertise-address"},
		{func(c *Config) { c.AdminSecret, c.InCluster = "fedgate-hub-admin", true }, "admin-secret \"fedgate-hub-admin\": want NAMESPACE/NAME"},
		{func(c *Config) { c.AdminSecret = "fedgate-system/fedgate-hub-admin" }, "admin-secret: needs a hub cluster"},
		{func(c *Config) { c.DataDir, c.EtcdEndpoints = "", []string{"http://127.0.0.1:2379"} }, "pki-dir"},
		{func(c *Config) { c.EtcdEndpoints = []string{"http://127.0.0.1:2379"} }, "key-encryption-key-file: required with etcd-endpoints"},
		{func(c *Config) { c.EtcdEndpoints = []string{"https://127.0.0.1:2379"} }, "https needs etcd-ca"},
		{func(c *Config) { c.EtcdEndpoints = []string{"127.0.0.1:2379"} }, "want http://HOST:PORT or https://HOST:PORT"},
		{func(c *Config) { c.EtcdCA, c.EtcdCert = "ca.crt", "tls.crt" }, "etcd-cert and etcd-key"},
		{func(c *Config) { c.EtcdCA = "ca.crt" }, "only with etcd-endpoints"},
		{func(c *Config) { c.EtcdEndpoints = []string{"https://127.0.0.1:2379", "http://127.0.0.1:2380"} }, "etcd-endpoints http://127.0.0.1:2380: plaintext"},
	} {
		c := DefaultConfig()
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %q, got %v", tc.want, err)
		}
	}
	c := DefaultConfig()
	c.DataDir, c.EtcdEndpoints, c.PKIDir = "", []string{"http://127.0.0.1:2379"}, "/etc/fedgate/pki"
	c.KeyEncryptionKeyFile = "/etc/fedgate/kek/key-encryption-key"
	c.EtcdAllowPlaintext = true
	if err := c.Validate(); err != nil {
		t.Errorf("external etcd without a data dir: %v", err)
	}
}
