package resources

import (
	"bytes"
	"testing"

	"github.com/fedgate/fedgate/apis/fedgatepb"
)

// FuzzDecode feeds arbitrary bytes to the two decoders that face the network (hubctl apply input, spoke reports):
// they may refuse, never panic, and whatever DecodeYAML accepts must decode to its typed form or be refused with an
// error by Typed.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {rules: [{}]}\n"))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: s}\n"))
	f.Add([]byte("---\n---\nnull\n"))
	f.Add([]byte(`{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"e"},"addressType":"IPv4"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		objs, err := DecodeYAML(bytes.NewReader(b), "fuzz", "default")
		if err != nil {
			return
		}
		for _, o := range objs {
			if o.Kind == "" || o.Name == "" || !Known(o.ApiVersion, o.Kind) {
				t.Fatalf("DecodeYAML accepted an object without a known kind and a name: %+v", o)
			}
			_, _ = Typed(o)
		}
		// A wire object with arbitrary JSON (a spoke's report) must not panic Typed either.
		_, _ = Typed(&fedgatepb.Object{ApiVersion: "gateway.networking.k8s.io/v1", Kind: KindHTTPRoute, Name: "x", Json: b})
	})
}
