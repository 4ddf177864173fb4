// Package fakehub is a minimal stand-in for the hub's Sync service, for the spoke's tests: it records what spokes send,
// lets a test push config updates and drop streams, and listens on 127.0.0.1. It implements no hub logic; spoke/ must
// never import hub/, so this is how spoke tests talk to "a hub".
package fakehub

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/identity"
)

// Report is one message received on a Report stream.
type Report struct {
	Stream int // 1 for the first Report stream the hub accepted, 2 for the next, ...
	Msg    *fedgatepb.ReportMessage
}

// Subscribed is one message received on a Subscribe stream.
type Subscribed struct {
	Stream int
	Msg    *fedgatepb.SubscribeMessage
}

// Hub is a fake Sync server.
type Hub struct {
	fedgatepb.UnimplementedSyncServer

	// Addr is the hub's listen address (127.0.0.1:port).
	Addr string
	// Reports and Subscribes receive every message spokes send, in order (buffered; a test that stops reading stalls
	// the spoke, never the test).
	Reports    chan Report
	Subscribes chan Subscribed

	srv     *grpc.Server
	updates chan *fedgatepb.SpokeConfigUpdate

	mu      sync.Mutex
	streams int
	drop    chan struct{} // closed to end every open stream
	refuse  error         // set by Remove: every stream ends, and every new one is refused, with it
}

// Start serves a fake hub on 127.0.0.1:0 (or addr, to come back on a previous address) until the test ends.
func Start(t testing.TB, addr string) *Hub {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var l net.Listener
	var err error
	// Rebinding a just-closed port can briefly fail; retry for a moment.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if l, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("fake hub: %v", err)
	}
	h := &Hub{
		Addr:       l.Addr().String(),
		Reports:    make(chan Report, 1024),
		Subscribes: make(chan Subscribed, 1024),
		srv:        grpc.NewServer(),
		updates:    make(chan *fedgatepb.SpokeConfigUpdate),
		drop:       make(chan struct{}),
	}
	fedgatepb.RegisterSyncServer(h.srv, h)
	go func() { _ = h.srv.Serve(l) }()
	t.Cleanup(h.Stop)
	return h
}

// Stop closes the listener and every stream at once.
func (h *Hub) Stop() { h.srv.Stop() }

// Dial returns a client connection to the hub, closed when the test ends.
func (h *Hub) Dial(t testing.TB) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(h.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// DropStreams ends every open stream with Unavailable, as a hub restart would; the server keeps listening.
func (h *Hub) DropStreams() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.drop)
	h.drop = make(chan struct{})
}

// Remove answers as the hub does once the cluster was removed: every open stream ends, and every new one is
// refused, with Unauthenticated and an ErrorInfo of reason identity.ReasonClusterRemoved.
func (h *Hub) Remove(cluster string) {
	st := status.New(codes.Unauthenticated, fmt.Sprintf("cluster %q was removed", cluster))
	st, _ = st.WithDetails(&errdetails.ErrorInfo{Reason: identity.ReasonClusterRemoved, Domain: identity.ErrorDomain,
		Metadata: map[string]string{"cluster": cluster}})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.refuse = st.Err()
	close(h.drop)
	h.drop = make(chan struct{})
}

// dropped is the error a dropped stream ends with.
func (h *Hub) dropped() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refuse != nil {
		return h.refuse
	}
	return status.Error(codes.Unavailable, "fake hub dropped the stream")
}

// Push sends an update on the (one) open Subscribe stream, blocking until a stream takes it.
func (h *Hub) Push(t testing.TB, u *fedgatepb.SpokeConfigUpdate) {
	t.Helper()
	select {
	case h.updates <- u:
	case <-time.After(10 * time.Second):
		t.Fatal("fake hub: no subscribe stream took the update within 10s")
	}
}

func (h *Hub) open() (int, chan struct{}, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refuse != nil {
		return 0, nil, h.refuse
	}
	h.streams++
	return h.streams, h.drop, nil
}

// pump receives a stream's messages on its own goroutine, so the handler can select on them beside drops and the
// stream's end. The error channel gets the Recv error that ended the stream.
func pump[T any](ctx context.Context, recv func() (T, error)) (<-chan T, <-chan error) {
	msgs := make(chan T)
	errs := make(chan error, 1)
	go func() {
		for {
			m, err := recv()
			if err != nil {
				errs <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return msgs, errs
}

// Report implements fedgatepb.SyncServer.
func (h *Hub) Report(stream grpc.ClientStreamingServer[fedgatepb.ReportMessage, fedgatepb.ReportAck]) error {
	id, drop, err := h.open()
	if err != nil {
		return err
	}
	msgs, errs := pump(stream.Context(), stream.Recv)
	var seq int64
	for {
		select {
		case m := <-msgs:
			seq = m.Seq
			h.Reports <- Report{Stream: id, Msg: m}
		case <-errs:
			return stream.SendAndClose(&fedgatepb.ReportAck{Seq: seq})
		case <-drop:
			return h.dropped()
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// Subscribe implements fedgatepb.SyncServer.
func (h *Hub) Subscribe(stream grpc.BidiStreamingServer[fedgatepb.SubscribeMessage, fedgatepb.SpokeConfigUpdate]) error {
	id, drop, err := h.open()
	if err != nil {
		return err
	}
	msgs, errs := pump(stream.Context(), stream.Recv)
	for {
		select {
		case m := <-msgs:
			h.Subscribes <- Subscribed{Stream: id, Msg: m}
		case u := <-h.updates:
			if err := stream.Send(u); err != nil {
				return err
			}
		case err := <-errs:
			return err
		case <-drop:
			return h.dropped()
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}
