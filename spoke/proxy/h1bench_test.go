package proxy

import (
	"bufio"
	"io"
	"net"
	"testing"
)

// BenchmarkGatewayH1 is one keep-alive client sending GETs through a gateway port to a minimal HTTP/1.1 backend:
// the per-request cost of the hand-written HTTP/1.1 path (run with -benchmem for allocations per request).
func BenchmarkGatewayH1(b *testing.B) {
	be, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	go func() {
		for {
			c, err := be.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := readHead(br); err != nil {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 19\r\nContent-Type: text/plain\r\n\r\nhello from backend\n")
				}
			}()
		}
	}()
	_, addr := hardenedProxy(&testing.T{}, be.Addr().String(), Limits{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET /bench HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		head, err := readHead(br)
		if err != nil {
			b.Fatal(err)
		}
		_ = head
		if _, err := io.CopyN(io.Discard, br, 19); err != nil {
			b.Fatal(err)
		}
	}
}
