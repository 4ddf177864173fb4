package server

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A handler that panics fails its call with Internal, logged under err, and the interceptor returns normally.
func TestRecoverInterceptors(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	_, err := recoverUnary(log)(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/fedgate.Admin/Apply"},
		func(context.Context, any) (any, error) { var m map[string]any; m["x"] = 1; return nil, nil })
	if status.Code(err) != codes.Internal || !strings.Contains(buf.String(), "method=/fedgate.Admin/Apply") || !strings.Contains(buf.String(), "err=") {
		t.Fatalf("unary: err %v, log %q", err, buf.String())
	}
	buf.Reset()
	err = recoverStream(log)(nil, nil, &grpc.StreamServerInfo{FullMethod: "/fedgate.Sync/Report"},
		func(any, grpc.ServerStream) error { panic("boom") })
	if status.Code(err) != codes.Internal || !strings.Contains(buf.String(), "boom") {
		t.Fatalf("stream: err %v, log %q", err, buf.String())
	}
	if _, err := recoverUnary(log)(context.Background(), nil, &grpc.UnaryServerInfo{}, func(context.Context, any) (any, error) { return 1, nil }); err != nil {
		t.Fatalf("a handler that returns: %v", err)
	}
}
