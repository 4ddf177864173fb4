package proxy

import (
	"crypto/tls"
	"fmt"
	"testing"

	"github.com/fedgate/fedgate/apis/spokeconfig"
)

// vhostOf is a virtual host of listener forwarding everything to backend.
func vhostOf(listener, hostname, backend string) spokeconfig.VirtualHost {
	return spokeconfig.VirtualHost{Hostname: hostname, Listener: listener,
		Routes: []spokeconfig.Route{forwardRoute("r-"+listener+"-"+hostname, "/", spokeconfig.WeightedBackend{BackendID: backend, Weight: 1})}}
}

// The reviewer's bypass: "*.example.com" validates client certificates and has the routes, "open.example.com" on the
// same port validates nothing and has no routes. A client without a certificate choosing open.example.com (SNI and
// Host) must not be served by the routes of "*.example.com": only the routes of the listener its connection selected
// may serve it, and that listener has none → 404.
func TestHTTPSVirtualHostsOfTheSelectedListenerOnly(t *testing.T) {
	gw, ca := newGatewayCA(t), newGatewayCA(t)
	secure := identityBackend(t, "secure")
	open := identityBackend(t, "open")
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	s := httpsServer(t, Options{})
	cert := gw.inline(t, "wild", "*.example.com")
	port := spokeconfig.Port{Port: p, Protocol: spokeconfig.ProtocolHTTPS, BindAddress: "127.0.0.1",
		TLS: &spokeconfig.PortTLS{Listeners: []spokeconfig.TLSListener{
			validating(listener("*.example.com", cert), spokeconfig.AllowValidOnly, ca.pemCA()),
			listener("open.example.com", cert),
		}},
		VirtualHosts: []spokeconfig.VirtualHost{
			vhostOf("*.example.com", "*.example.com", "secure"),
			// A route of "*.example.com" naming open.example.com itself is that listener's too.
			vhostOf("*.example.com", "open.example.com", "secure"),
		}}
	backends := map[string]string{"secure": addrOf(secure), "open": addrOf(open)}
	if err := s.Apply(tlsConfigFor(1, port, backends)); err != nil {
		t.Fatal(err)
	}
	good := ca.clientCert(t, "good", nil)
	check := func(rev int, sni string, cert *tls.Certificate, h2 bool, wantStatus int, wantBody string) {
		t.Helper()
		c := mtlsClient(addr, sni, gw.pool, h2, cert, 0)
		defer c.CloseIdleConnections()
		status, body, _, err := tryHost(c, sni, "/")
		if err != nil || status != wantStatus || (wantBody != "" && body != wantBody) {
			t.Errorf("rev %d h2=%v SNI+Host %s (client cert %v): %d %q %v, want %d %q", rev, h2, sni, cert != nil, status, body, err, wantStatus, wantBody)
		}
	}
	for _, h2 := range []bool{false, true} {
		check(1, "open.example.com", nil, h2, 404, "")
		check(1, "a.example.com", &good, h2, 200, "secure")
	}

	// Routes attached to "open.example.com" serve it; "*.example.com" keeps its own.
	port.VirtualHosts = append(port.VirtualHosts, vhostOf("open.example.com", "open.example.com", "open"))
	if err := s.Apply(tlsConfigFor(2, port, backends)); err != nil {
		t.Fatal(err)
	}
	for _, h2 := range []bool{false, true} {
		check(2, "open.example.com", nil, h2, 200, "open")
		check(2, "a.example.com", &good, h2, 200, "secure")
	}
}

// Two listeners may each have a virtual host for one hostname; a listener's duplicate is still refused.
func TestHTTPSVirtualHostsPerListenerBuild(t *testing.T) {
	gw := newGatewayCA(t)
	cert := gw.inline(t, "wild", "*.example.com")
	port := spokeconfig.Port{Port: 8443, Protocol: spokeconfig.ProtocolHTTPS,
		TLS: &spokeconfig.PortTLS{Listeners: []spokeconfig.TLSListener{listener("*", cert), listener("shop.example.com", cert)}},
		VirtualHosts: []spokeconfig.VirtualHost{
			vhostOf("*", "shop.example.com", "a"),
			vhostOf("shop.example.com", "shop.example.com", "b"),
			vhostOf("", "legacy.example.com", "a"),
		}}
	cfg := tlsConfigFor(1, port, map[string]string{"a": "127.0.0.1:1", "b": "127.0.0.1:2"})
	tbl, err := Build(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pt := tbl.ports[8443]
	for host, want := range map[string]string{
		"shop.example.com":   "shop.example.com", // the listener "shop.example.com" selects
		"legacy.example.com": "",                 // no listener named: shared by every listener
		"other.example.com":  "-",                // "*" has no vhost for it
	} {
		vh := pt.lookupVhost(host)
		switch {
		case want == "-" && vh != nil:
			t.Errorf("%s: vhost %s of listener %q, want none", host, vh.hostname, vh.listener)
		case want != "-" && (vh == nil || vh.listener != want):
			t.Errorf("%s: vhost %+v, want one of listener %q", host, vh, want)
		}
	}
	port.VirtualHosts = append(port.VirtualHosts, vhostOf("shop.example.com", "shop.example.com", "a"))
	if _, err := Build(tlsConfigFor(1, port, map[string]string{"a": "127.0.0.1:1", "b": "127.0.0.1:2"}), Options{}); err == nil {
		t.Error("two vhosts of one listener for one hostname: built, want an error")
	}
}
