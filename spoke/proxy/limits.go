package proxy

import (
	"errors"
	"fmt"
	"time"
)

// Limits bound everything a client or a backend controls on the gateway data path. The defaults follow Envoy's
// (60 KiB / 100 request headers) and nginx's (timeouts) references; every one has a spoke flag of the same meaning.
type Limits struct {
	// MaxRequestLineBytes bounds the request line; longer → 414.
	// Default: 8192.
	MaxRequestLineBytes int
	// MaxRequestHeaderBytes bounds the request head (request line and header fields); larger → 431.
	// Default: 61440.
	MaxRequestHeaderBytes int
	// MaxRequestHeaders bounds the number of request header fields; more → 431.
	// Default: 100.
	MaxRequestHeaders int
	// MaxResponseHeaderBytes bounds a backend's response head (each 1xx and the final one); larger → 502.
	// Default: 61440.
	MaxResponseHeaderBytes int
	// MaxResponseHeaders bounds the number of response header fields; more → 502.
	// Default: 100.
	MaxResponseHeaders int
	// MaxInformationalResponses bounds the 1xx responses a backend may send before its final one; more → 502.
	// Default: 10.
	MaxInformationalResponses int
	// RequestHeaderTimeout bounds reading a request head from its first byte (slowloris), and an HTTP/2 connection's
	// (h2c, or h2 over TLS after its handshake) preface and first request headers.
	// Default: 15s.
	RequestHeaderTimeout time.Duration
	// RequestBodyIdleTimeout bounds each wait for request body bytes (between two reads, like nginx's
	// client_body_timeout); a client that stalls longer gets 408 and its connection closed.
	// Default: 1m0s.
	RequestBodyIdleTimeout time.Duration
	// KeepaliveIdleTimeout closes a client connection (HTTP/1.1 or HTTP/2, cleartext or TLS) idle that long between
	// requests.
	// Default: 1m15s.
	KeepaliveIdleTimeout time.Duration
	// ResponseSendIdleTimeout bounds each wait to write response bytes to a client (between two successful writes, like
	// nginx's send_timeout): a client that stops reading is cut off.
	// Default: 1m0s.
	ResponseSendIdleTimeout time.Duration
	// UpstreamResponseHeaderTimeout bounds the wait for a backend's response head after the request was sent; a
	// route's timeouts (HTTPRoute rules[].timeouts) override it. Expiry → 504.
	// Default: 1m0s.
	UpstreamResponseHeaderTimeout time.Duration
	// UpstreamResponseBodyIdleTimeout bounds each wait for response body bytes from a backend (between two reads,
	// like Envoy's stream idle timeout): a backend that stalls longer has the response cut off (the client sees it
	// truncated, never completed). Long-lived streams (SSE, gRPC) need data or keepalives more often than this.
	// Default: 5m0s.
	UpstreamResponseBodyIdleTimeout time.Duration
	// MaxClientConnections bounds the open client connections of one gateway port (every protocol, TLS handshakes in
	// progress included); a connection
	// accepted beyond it is closed at once, as Envoy's listener connection limit does.
	// Default: 16384.
	MaxClientConnections int
	// H2CMaxConcurrentStreams bounds the concurrent streams of one HTTP/2 client connection (h2c, and h2 over TLS on
	// an HTTPS port).
	// Default: 100.
	H2CMaxConcurrentStreams int
	// TLSHandshakeTimeout bounds an HTTPS port's TLS handshake from the moment the connection is accepted; a client
	// that has not finished it by then is closed. The first request head then gets RequestHeaderTimeout.
	// Default: 10s.
	TLSHandshakeTimeout time.Duration
}

// DefaultLimits returns the documented defaults.
func DefaultLimits() Limits {
	return Limits{
		MaxRequestLineBytes:             8 << 10,
		MaxRequestHeaderBytes:           60 << 10,
		MaxRequestHeaders:               100,
		MaxResponseHeaderBytes:          60 << 10,
		MaxResponseHeaders:              100,
		MaxInformationalResponses:       10,
		RequestHeaderTimeout:            15 * time.Second,
		RequestBodyIdleTimeout:          60 * time.Second,
		KeepaliveIdleTimeout:            75 * time.Second,
		ResponseSendIdleTimeout:         60 * time.Second,
		UpstreamResponseHeaderTimeout:   60 * time.Second,
		UpstreamResponseBodyIdleTimeout: 5 * time.Minute,
		MaxClientConnections:            16384,
		H2CMaxConcurrentStreams:         100,
		TLSHandshakeTimeout:             10 * time.Second,
	}
}

// withDefaults fills zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	set := func(v *int, dv int) {
		if *v == 0 {
			*v = dv
		}
	}
	setD := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	set(&l.MaxRequestLineBytes, d.MaxRequestLineBytes)
	set(&l.MaxRequestHeaderBytes, d.MaxRequestHeaderBytes)
	set(&l.MaxRequestHeaders, d.MaxRequestHeaders)
	set(&l.MaxResponseHeaderBytes, d.MaxResponseHeaderBytes)
	set(&l.MaxResponseHeaders, d.MaxResponseHeaders)
	set(&l.MaxInformationalResponses, d.MaxInformationalResponses)
	setD(&l.RequestHeaderTimeout, d.RequestHeaderTimeout)
	setD(&l.RequestBodyIdleTimeout, d.RequestBodyIdleTimeout)
	setD(&l.KeepaliveIdleTimeout, d.KeepaliveIdleTimeout)
	setD(&l.ResponseSendIdleTimeout, d.ResponseSendIdleTimeout)
	setD(&l.UpstreamResponseHeaderTimeout, d.UpstreamResponseHeaderTimeout)
	setD(&l.UpstreamResponseBodyIdleTimeout, d.UpstreamResponseBodyIdleTimeout)
	set(&l.MaxClientConnections, d.MaxClientConnections)
	set(&l.H2CMaxConcurrentStreams, d.H2CMaxConcurrentStreams)
	setD(&l.TLSHandshakeTimeout, d.TLSHandshakeTimeout)
	return l
}

// Validate reports limits that cannot work: negative values, or a request line limit above the head limit.
func (l Limits) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxRequestLineBytes", int64(l.MaxRequestLineBytes)}, {"MaxRequestHeaderBytes", int64(l.MaxRequestHeaderBytes)},
		{"MaxRequestHeaders", int64(l.MaxRequestHeaders)}, {"MaxResponseHeaderBytes", int64(l.MaxResponseHeaderBytes)},
		{"MaxResponseHeaders", int64(l.MaxResponseHeaders)},
		{"MaxInformationalResponses", int64(l.MaxInformationalResponses)},
		{"H2CMaxConcurrentStreams", int64(l.H2CMaxConcurrentStreams)},
		{"MaxClientConnections", int64(l.MaxClientConnections)},
		{"RequestHeaderTimeout", int64(l.RequestHeaderTimeout)}, {"RequestBodyIdleTimeout", int64(l.RequestBodyIdleTimeout)},
		{"KeepaliveIdleTimeout", int64(l.KeepaliveIdleTimeout)},
		{"ResponseSendIdleTimeout", int64(l.ResponseSendIdleTimeout)},
		{"UpstreamResponseHeaderTimeout", int64(l.UpstreamResponseHeaderTimeout)},
		{"UpstreamResponseBodyIdleTimeout", int64(l.UpstreamResponseBodyIdleTimeout)},
		{"TLSHandshakeTimeout", int64(l.TLSHandshakeTimeout)},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative", f.name))
		}
	}
	if l.MaxRequestLineBytes > 0 && l.MaxRequestHeaderBytes > 0 && l.MaxRequestLineBytes > l.MaxRequestHeaderBytes {
		errs = append(errs, fmt.Errorf("MaxRequestLineBytes %d: must not exceed MaxRequestHeaderBytes %d",
			l.MaxRequestLineBytes, l.MaxRequestHeaderBytes))
	}
	return errors.Join(errs...)
}
